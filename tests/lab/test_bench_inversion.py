"""The inversion benchmark on the tiny model: a timed run per method, UNet calls counted, the report."""

from __future__ import annotations

import pytest

from lab.bench_inversion import InversionBenchConfig, main, markdown, run_inversion_bench


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown method 'fast'.*unknown arch 'sdxl'"):
        InversionBenchConfig(methods=("fast",), arch="sdxl")
    with pytest.raises(ValueError, match="flowedit: every arch here is a UNet"):
        InversionBenchConfig(methods=("flowedit",))
    assert "flowedit" not in InversionBenchConfig().methods and "ddpm" in InversionBenchConfig().methods


@pytest.mark.slow  # long; make test-slow
def test_each_method_is_timed_and_its_unet_calls_counted(tmp_path):
    steps = 3
    cfg = InversionBenchConfig(arch="tiny", device="cpu", steps=steps, repeats=2, warmup=0, threads=1)
    report = run_inversion_bench(cfg, command="test")
    assert {m: len(t) for m, t in report.seconds.items()} == {"direct": 2, "null-text": 2, "negative-prompt": 2,
                                                              "ddim": 2, "ddpm": 2}
    assert all(s > 0 for times in report.seconds.values() for s in times)
    # backwards DDIM only: one call per step
    assert report.unet_calls["ddim"] == report.unet_calls["negative-prompt"] == report.unet_calls["direct"] == steps
    assert report.unet_calls["ddpm"] == steps  # one guided call per step: the noise maps are solved, not optimised
    # null-text: backwards, the prompt's prediction, 1..10 inner steps, at most one more guided step each
    assert 3 * steps <= report.unet_calls["null-text"] <= 2 * steps + 11 * steps
    assert report.seconds["null-text"][0] > report.seconds["ddim"][0]
    text = markdown(report)
    assert "| null-text |" in text and "| ddim |" in text and "128 px" in text and "Command: `test`" in text


def test_command_line_appends_results(tmp_path, capsys):
    out = tmp_path / "R.md"
    args = ["--arch", "tiny", "--device", "cpu", "--steps", "2", "--repeats", "1", "--warmup", "0",
            "--methods", "ddim", "--threads", "1", "--results", str(out), "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    assert main(args) == 0
    assert out.read_text().count("### inversion, tiny") == 2 and (tmp_path / "r.json").exists()
    assert main(["--methods", "fast"]) == 2
    assert "unknown method 'fast'" in capsys.readouterr().err
