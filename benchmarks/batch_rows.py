"""Throughput of `p2p edit --batch-rows`: N one-target recipes one by one against the same recipes in batches.

    python benchmarks/batch_rows.py [--model shapes|arch:sd15] [--recipes 16] [--batch-rows 64] [--steps 50] [--repeats 3]

Both ways run in this process on the same loaded model, interleaved (each repeat runs one by one, then batched,
in alternating order), after one warm-up of each; it prints pictures per second of each (median over repeats) and
their ratio, and checks that the batched pictures equal the one-by-one ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the center"]


def recipes(n: int, steps: int):
    from p2p_cli.recipe import parse_recipe

    out = []
    for i in range(n):
        colour, other = COLOURS[i % 4], COLOURS[(i + 1) % 4]
        shape, place = SHAPES[i % 3], PLACES[i % 5]
        source = f"a big {colour} {shape} {place} on a white background"
        out.append(parse_recipe({"name": f"r{i}", "source": source, "seed": i, "steps": steps,
                                 "edits": [{"target": source.replace(colour, other)}]}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes", help="a model, or arch:NAME for lab.bench's random architectures"
                        " (arch:sd15 on a GPU)")
    parser.add_argument("--recipes", type=int, default=16)
    parser.add_argument("--batch-rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from p2p_cli.api import edit, edit_many, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model.startswith("arch:"):
        from lab.bench import BenchConfig, build_model

        model = build_model(BenchConfig(arch=args.model.removeprefix("arch:")))
    else:
        model = load_model(args.model)
    rs = recipes(args.recipes, args.steps)
    per_recipe = 2 * (1 + 1)  # source + one target, guided
    size = max(1, args.batch_rows // per_recipe)
    groups = [rs[i : i + size] for i in range(0, len(rs), size)]

    def one_by_one():
        return [edit(model, r, maps=False).run.images for r in rs]

    def batched():
        return [res.run.images for g in groups for res in edit_many(model, g)]

    a, b = one_by_one(), batched()  # warm-up, and the check
    worst = max(float((x - y).abs().max()) for x, y in zip(a, b))
    times = {"one by one": [], "batched": []}
    for r in range(args.repeats):
        order = [("one by one", one_by_one), ("batched", batched)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            tic = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - tic)
    pictures = 2 * len(rs)
    rate = {k: pictures / statistics.median(v) for k, v in times.items()}
    print(f"model {args.model}, {len(rs)} one-target recipes, {args.steps} steps, --batch-rows {args.batch_rows}"
          f" ({len(groups)} batch(es) of up to {size} recipes), {torch.get_num_threads()} thread(s),"
          f" {args.repeats} interleaved repeats")
    for k, v in times.items():
        print(f"  {k}: {statistics.median(v):.2f} s median [{min(v):.2f}-{max(v):.2f}], {rate[k]:.2f} pictures/s")
    print(f"  batched / one by one throughput: {rate['batched'] / rate['one by one']:.2f}x;"
          f" largest pixel difference {worst:.2e}")


if __name__ == "__main__":
    main()
