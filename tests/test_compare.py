"""experiments/compare_async.py and paac.compare: runs, curves, the table and the plot."""

import csv
import json
import os

import numpy as np
import pytest

from paac.compare import RunSummary, _on_grid, comparison_table, mode_label
from paac.config import Config


def _summary(mode, seed, final, sps=1000.0, steps=100):
    return RunSummary(mode, seed, "d", steps, final, sps, np.array([10.0]), np.array([final]))


def test_table_mean_sd_and_per_seed():
    runs = [_summary("sync", 0, 10.0), _summary("sync", 1, 20.0, 3000.0), _summary("a3c", 0, 5.0)]
    table = comparison_table(runs, {"sync": "sync", "a3c": "a3c (W=4, round_robin)"})
    lines = table.strip().splitlines()
    assert len(lines) == 4
    # mean 15, population sd 5 (hand-worked), steps/s mean 2000
    assert lines[2] == "| sync | 2 | 15.0 ± 5.0 | s0: 10.0, s1: 20.0 | 100 | 2,000 |"
    assert lines[3] == "| a3c (W=4, round_robin) | 1 | 5.0 | s0: 5.0 | 100 | 1,000 |"


def test_curve_holds_the_last_known_score_and_is_nan_before():
    run = RunSummary("sync", 0, "d", 300, 3.0, 1.0, np.array([100.0, 200.0]), np.array([1.0, 3.0]))
    got = _on_grid(run, np.array([0.0, 99.0, 100.0, 150.0, 250.0, 300.0, 400.0]))
    np.testing.assert_array_equal(got, [np.nan, np.nan, 1.0, 1.0, 3.0, 3.0, np.nan])


def test_mode_labels():
    base = dict(env="CartPole-v1", arch="mlp", n_envs=8)
    assert mode_label(Config(**base)) == "sync"
    assert mode_label(Config(**base, mode="a3c", workers=4)) == "a3c (W=4, round_robin)"
    uniform = Config(**base, mode="a3c", staleness="uniform", max_staleness=3)
    assert mode_label(uniform) == "a3c (W=8, uniform <= 3)"
    assert mode_label(Config(**base, mode="ga3c", policy_lag=5)) == "ga3c (lag 5)"


def test_compare_async_writes_plot_and_table(script, tmp_path):
    args = (
        "compare_async.py", "--env", "CartPole-v1", "--seeds", "0", "1", "--total-steps", "2000",
        "--n-envs", "4", "--log-interval", "200", "--workers", "2", "--compare-dir", str(tmp_path),
    )  # fmt: skip
    out = script(*args)
    assert out.returncode == 0, out.stderr
    png, md = tmp_path / "comparison.png", tmp_path / "comparison.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = md.read_text()
    for label in ("| sync | 2 |", "| a3c (W=2, round_robin) | 2 |", "| ga3c (lag 2) | 2 |"):
        assert label in table, table
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert len(data["runs"]) == 6 and all(r["steps"] == 2000 for r in data["runs"])
    # Each run's summary is its metrics.csv's last row, read here with the csv module.
    for r in data["runs"]:
        with open(os.path.join(r["run_dir"], "metrics.csv"), newline="") as f:
            last = list(csv.DictReader(f))[-1]
        assert r["final_score"] == pytest.approx(float(last["score_last20"]))
        want_sps = int(last["step"]) / float(last["walltime"])
        assert r["steps_per_second"] == pytest.approx(want_sps, rel=1e-6)
    # The runs really differ by mode only: same seeds, same config otherwise.
    cfgs = {}
    for r in data["runs"]:
        with open(os.path.join(r["run_dir"], "config.json")) as f:
            cfgs[(r["mode"], r["seed"])] = json.load(f)
    assert cfgs[("sync", 1)]["seed"] == cfgs[("a3c", 1)]["seed"] == 1
    assert {k for k in cfgs[("sync", 0)] if cfgs[("sync", 0)][k] != cfgs[("ga3c", 0)][k]} == {
        "mode",
        "run_name",
    }
    # Run again: the finished runs are read back, not trained again.
    again = script(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already trained") == 6
    assert md.read_text() == table


@pytest.mark.parametrize(
    "args,message",
    [
        (("--modes", "sync", "hogwild"), "--modes"),
        (("--n-envs", "0"), "--n-envs=0"),
        (("--modes", "sync", "--seeds", "0", "0"), "--seeds=[0, 0] is invalid: [0] given more"),
        (("--modes", "sync", "a3c", "sync"), "['sync'] given more than once"),
    ],
)
def test_compare_async_bad_input(script, tmp_path, args, message):
    out = script("compare_async.py", "--compare-dir", str(tmp_path), *args, timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def _compare_script():
    import importlib.util

    from tests.conftest import ROOT

    path = os.path.join(ROOT, "experiments", "compare_async.py")
    spec = importlib.util.spec_from_file_location("compare_async_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ctrl_c_stops_the_comparison_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the first run: that run checkpoints, the comparison stops (exit 130,
    the next run never starts); the same command again resumes it and finishes them all."""
    import importlib
    import signal

    from paac.checkpoints import locate

    train_module = importlib.import_module("paac.train")
    writer = train_module.MetricsWriter

    class CtrlCAfterFirstRow(writer):
        pressed = False

        def write(self, row):
            super().write(row)
            if not CtrlCAfterFirstRow.pressed:  # once: a second Ctrl-C means "stop now"
                CtrlCAfterFirstRow.pressed = True
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train_module, "MetricsWriter", CtrlCAfterFirstRow)
    monkeypatch.setenv("PAAC_XLA_CPU_YNN", "0")  # main() must not change this process's XLA
    argv = [
        "--env", "CartPole-v1", "--modes", "sync", "ga3c", "--seeds", "0", "--n-envs", "4",
        "--total-steps", "4000", "--log-interval", "400", "--compare-dir", str(tmp_path),
    ]  # fmt: skip
    script = _compare_script()
    assert script.main(argv) == 130
    runs = tmp_path / "runs" / "CartPole-v1"
    assert "comparison stopped in" in capsys.readouterr().err
    assert os.listdir(runs) == ["sync-s0"]  # ga3c never started
    _, stopped_at = locate(str(runs / "sync-s0"))
    assert 0 < stopped_at < 4000

    monkeypatch.setattr(train_module, "MetricsWriter", writer)
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert "sync-s0: resuming" in out and "ga3c-s0: training" in out
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert [(r["mode"], r["steps"]) for r in data["runs"]] == [("sync", 4000), ("ga3c", 4000)]
    assert str(stopped_at) in os.listdir(runs / "sync-s0" / "checkpoints")  # resumed, not redone
