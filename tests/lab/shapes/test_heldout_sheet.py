"""README's sheet of held-out cases: every case drawn, in the evaluator's order, each edit titled with the oracle's
verdict that the counts add up."""

from __future__ import annotations

import pytest

from p2p_cli.models import bundle_mmdit_weights

pytestmark = pytest.mark.skipif(not (bundle_mmdit_weights() / "transformer").is_dir(),
                                reason="bundled transformer shapes model absent")


@pytest.mark.slow  # a lab picture's generator; make test-rest
def test_the_sheet_holds_the_first_cases_in_order_with_their_verdicts():
    from lab.shapes.captions import caption
    from lab.shapes.evaluate import free_swap_cases, fresh_seeds
    from lab.shapes.heldout_sheet import sheet_tiles
    from p2p_cli.models import load_model

    model = load_model("shapes-mmdit", device="cpu", dtype="fp32")
    tiles, counts = sheet_tiles(model, n=2, steps=2, guidance=7.5)
    cases = free_swap_cases(2, *fresh_seeds(0, 4))  # the evaluator's reported set
    assert [(t.col, t.row) for t in tiles] == [(c, r) for c in range(2) for r in range(3)]
    assert [t.caption for t in tiles if t.row == 0] == [caption(c.scene) for c in cases]
    assert all(t.caption == caption(cases[t.col].target) for t in tiles if t.row > 0)
    for name, title in (("p2p", "P2P"), ("baseline", "no control")):
        titles = [t.title for t in tiles if t.title.startswith(title + " ·")]
        assert len(titles) == 2
        assert counts[name][1] == sum("colour ok" in t for t in titles)
        assert counts[name][0] == sum("colour ok" in t and "place kept" in t for t in titles)
