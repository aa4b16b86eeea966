"""Run once: the one runner every many-recipe path goes through (`p2p edit`, `p2p attn-viz`, `p2p dataset`,
`p2p.dataset`, `p2p eval pie-bench`).

    runner.py   the loop: works, resume, a model cache keyed by the model's identity, failures, settle
    launch.py   torchrun / accelerate: rank and world, each process's share, gathering at the end
    records.py  exit codes, --resume's check, index.jsonl, failures.jsonl, the tally
    edits.py    the recipes of `p2p edit` / `p2p attn-viz` as works (read, checked, run through the API)
    datasets.py caption pairs as works (`p2p dataset`, `p2p.dataset`)
"""
