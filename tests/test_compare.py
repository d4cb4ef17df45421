"""experiments/compare_async.py and paac.compare: runs, curves, the table and the plot."""

import csv
import json
import os

import numpy as np
import pytest

from paac.core.config import Config, ConfigError
from paac.tools.compare import (
    RunSummary,
    _on_grid,
    _status,
    comparison_table,
    mode_label,
    plot_comparison,
)


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


def _held(steps, scores, grid):
    """Oracle: at each grid step the score of the last row at or before it, NaN before the
    first, with no end (a run that stopped early at its target keeps its last score)."""
    out = []
    for g in grid:
        before = [y for x, y in zip(steps, scores, strict=True) if x <= g]
        out.append(before[-1] if before else np.nan)
    return np.array(out)


def test_curve_holds_the_last_known_score_past_the_run_end_and_is_nan_before():
    run = RunSummary("sync", 0, "d", 300, 3.0, 1.0, np.array([100.0, 200.0]), np.array([1.0, 3.0]))
    grid = np.array([0.0, 99.0, 100.0, 150.0, 250.0, 300.0, 400.0])
    got = _on_grid(run, grid)
    np.testing.assert_array_equal(got, [np.nan, np.nan, 1.0, 1.0, 3.0, 3.0, 3.0])  # by hand
    np.testing.assert_array_equal(got, _held([100.0, 200.0], [1.0, 3.0], grid))


def test_plot_keeps_a_seed_that_reached_the_target_early_in_the_mean_and_band(
    tmp_path, monkeypatch
):
    """Seed 1 stopped at step 120 (its target); seed 0 ran to 400. Past 120 the mean and
    the band still cover both seeds, computed here with a plain loop over the grid."""
    from matplotlib.figure import Figure

    early = RunSummary("sync", 1, "d", 120, 9.0, 1.0, np.array([40.0, 120.0]), np.array([5, 9.0]))
    full = RunSummary(
        "sync", 0, "d", 400, 2.0, 1.0, np.array([100.0, 250.0, 400.0]), np.array([1, 4, 2.0])
    )
    figures = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k))
    )
    plot_comparison([full, early], {"sync": "sync"}, str(tmp_path / "c.png"), "t")
    (ax,) = figures[0].axes
    (line,) = ax.lines
    x, mean = line.get_data()
    ys = np.stack([_held(r.curve_steps, r.curve_scores, x) for r in (full, early)])
    want_mean = [np.mean([y for y in col if not np.isnan(y)]) for col in ys.T]
    np.testing.assert_allclose(mean, want_mean)
    assert x[-1] == 400.0 and mean[-1] == pytest.approx((2.0 + 9.0) / 2)
    (band,) = ax.collections  # from the lowest to the highest seed, to the end
    vertices = band.get_paths()[0].vertices
    for y in (2.0, 9.0):
        assert np.any(np.all(np.isclose(vertices, [400.0, y]), axis=1)), (y, vertices[-5:])


def test_mode_labels():
    base = dict(env="CartPole-v1", arch="mlp", n_envs=8)
    assert mode_label(Config(**base)) == "sync"
    assert mode_label(Config(**base, mode="a3c", workers=4)) == "a3c (W=4, round_robin)"
    uniform = Config(**base, mode="a3c", staleness="uniform", max_staleness=3)
    assert mode_label(uniform) == "a3c (W=8, uniform <= 3)"
    assert mode_label(Config(**base, mode="ga3c", policy_lag=5)) == "ga3c (lag 5)"


@pytest.mark.slow
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


@pytest.mark.slow
def test_compare_async_of_an_lstm(script, tmp_path):
    """--lstm-cells reaches every mode's run: sync, a3c and ga3c with the same LSTM."""
    out = script(
        "compare_async.py", "--env", "CartPoleNoVel-v1", "--seeds", "0", "--total-steps",
        "1024", "--n-envs", "4", "--t-max", "16", "--log-interval", "256", "--workers", "2",
        "--lstm-cells", "8", "--compare-dir", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert sorted(r["mode"] for r in data["runs"]) == ["a3c", "ga3c", "sync"]
    for r in data["runs"]:
        with open(os.path.join(r["run_dir"], "config.json")) as f:
            config = json.load(f)
        assert config["lstm_cells"] == 8 and config["env"] == "CartPoleNoVel-v1"
        assert r["steps"] == 1024


@pytest.mark.parametrize(
    "args,message",
    [
        (("--modes", "sync", "hogwild"), "--modes"),
        (("--n-envs", "0"), "--n-envs=0"),
        (("--modes", "sync", "--seeds", "0", "0"), "--seeds=[0, 0] is invalid: [0] given more"),
        (("--modes", "sync", "a3c", "sync"), "['sync'] given more than once"),
        (("--seeds", "0", "x"), "--seeds=['0', 'x'] is invalid: 'x' is not an integer"),
        (("--compare-dir", "/proc/nope"), "--compare-dir='/proc/nope' is invalid: cannot "),
        (("--seed", "5"), "--seed is invalid here: the comparison sets it for each run"),
        (("--mode=a3c",), "--mode is invalid here: the comparison sets it for each run"),
        (("--run_name", "x"), "--run-name is invalid here: the comparison names its runs"),
        (("--resume", "x"), "--resume is invalid here: the same command again resumes"),
        (("--preset", "atari"), "--preset is invalid here: the comparison trains --env's preset"),
        # Found before any run trains: sync with --algo q is possible, a3c is not.
        (("--seeds", "0", "--algo", "q"), "--mode='a3c' is invalid: the async modes are for"),
    ],
)
@pytest.mark.slow
def test_compare_async_bad_input(script, tmp_path, args, message):
    out = script("compare_async.py", "--compare-dir", str(tmp_path), *args, timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr  # one line, no usage block
    if "sets it for each run" in message:
        assert out.stderr.rstrip().endswith(f"use {args[0].split('=')[0]}s")
    assert not os.path.exists(tmp_path / "runs")  # nothing trained


def _compare_script():
    import importlib.util

    from tests.conftest import ROOT

    path = os.path.join(ROOT, "experiments", "compare_async.py")
    spec = importlib.util.spec_from_file_location("compare_async_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ctrl_c_stops_the_comparison_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the first run: that run checkpoints, the comparison stops (exit 130,
    the next run never starts); the same command again resumes it and finishes them all."""
    import importlib

    from paac.run.checkpoints import locate

    train_module = importlib.import_module("paac.run.setup")
    writer = _press_ctrl_c_after_the_first_row(monkeypatch, times=1)
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


def _fake_run(tmp_path, config: Config, rows, config_text=None) -> str:
    """A run directory as training leaves it, without a checkpoint: ``config.json`` and a
    ``metrics.csv`` of ``rows`` (dicts of some of its columns)."""
    from paac.run.metrics import COLUMNS

    run_dir = tmp_path / "runs" / config.env / f"{config.mode}-s{config.seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(config.to_json() if config_text is None else config_text)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return str(run_dir)


TARGET_RUN = Config(env="CartPole-v1", arch="mlp", n_envs=4, total_steps=4000, target_score=30.0)


@pytest.mark.parametrize(
    "episodes,score,finished",
    [(4, 50.0, False), (19, 30.0, False), (20, 30.0, True), (35, 29.9, False)],
)
def test_a_run_reached_its_target_only_with_20_games_as_training_decides(
    tmp_path, episodes, score, finished
):
    """Training stops at --target-score once 20 games are in the last-20 mean; a run
    stopped (Ctrl-C) with fewer games above the target did not reach it: with no checkpoint
    to resume, the comparison says so instead of reading it back as trained."""
    row = {"step": 1000, "walltime": 1.0, "score_last20": score, "episodes": episodes}
    run_dir = _fake_run(tmp_path, TARGET_RUN, [row])
    if finished:
        assert _status(run_dir, TARGET_RUN) == "finished"
    else:
        with pytest.raises(ConfigError, match="saved no checkpoint: delete it"):
            _status(run_dir, TARGET_RUN)


def test_a_saved_config_with_a_key_this_version_does_not_know_is_read_back(tmp_path):
    saved = json.loads(TARGET_RUN.to_json())
    row = {"step": 4000, "walltime": 1.0, "score_last20": 12.0, "episodes": 100}
    run_dir = _fake_run(tmp_path, TARGET_RUN, [row], json.dumps({**saved, "from_the_future": 1}))
    assert _status(run_dir, TARGET_RUN) == "finished"


@pytest.mark.parametrize(
    "text,why",
    [
        ("[1, 2]", "not a JSON object"),
        ('{"n_envs": "four"}', "--n-envs='four' is invalid"),
        ("{", "not JSON"),
    ],
)
def test_a_bad_saved_config_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, text, why):
    run_dir = _fake_run(tmp_path, TARGET_RUN, [], text)
    with pytest.raises(ConfigError, match=why) as e:
        _status(run_dir, TARGET_RUN)
    assert repr(os.path.join(run_dir, "config.json")) in str(e.value)
    monkeypatch.setenv("PAAC_XLA_CPU_YNN", "0")
    argv = ["--modes", "sync", "--seeds", "0", "--compare-dir", str(tmp_path)]
    assert _compare_script().main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("paac: error: ") and why in err, err


def _press_ctrl_c_after_the_first_row(monkeypatch, times: int):
    """Training's MetricsWriter, patched to send SIGINT ``times`` times after its first row
    (twice: "stop now", with no checkpoint); returns the real MetricsWriter."""
    import importlib
    import signal

    train_module = importlib.import_module("paac.run.setup")
    writer = train_module.MetricsWriter

    class CtrlC(writer):
        pressed = False

        def write(self, row):
            super().write(row)
            if not CtrlC.pressed:
                CtrlC.pressed = True
                for _ in range(times):
                    signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train_module, "MetricsWriter", CtrlC)
    monkeypatch.setenv("PAAC_XLA_CPU_YNN", "0")  # main() must not change this process's XLA
    return writer


@pytest.mark.slow
def test_a_run_stopped_above_the_target_before_20_games_is_resumed(tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first row (a few games, all scoring above a low target): the rerun
    resumes the run, and it ends where training's own rule stops it: 20 games at or above
    the target (read back from metrics.csv with the csv module)."""
    import importlib

    writer = _press_ctrl_c_after_the_first_row(monkeypatch, times=1)
    argv = [
        "--modes", "sync", "--seeds", "0", "--n-envs", "4", "--total-steps", "4000",
        "--log-interval", "100", "--target-score", "5", "--compare-dir", str(tmp_path),
    ]  # fmt: skip
    script = _compare_script()
    assert script.main(argv) == 130
    metrics = tmp_path / "runs" / "CartPole-v1" / "sync-s0" / "metrics.csv"
    with open(metrics, newline="") as f:
        stopped = list(csv.DictReader(f))[-1]
    assert int(stopped["episodes"]) < 20 and float(stopped["score_last20"]) >= 5  # as if reached
    monkeypatch.setattr(importlib.import_module("paac.run.setup"), "MetricsWriter", writer)
    assert script.main(argv) == 0
    assert "sync-s0: resuming" in capsys.readouterr().out
    with open(metrics, newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["episodes"]) >= 20 and float(last["score_last20"]) >= 5
    assert int(stopped["step"]) < int(last["step"]) < 4000  # stopped at the target


@pytest.mark.slow
def test_a_second_ctrl_c_says_which_directory_to_delete(tmp_path, monkeypatch, capsys):
    """Two Ctrl-C: the run stops with no checkpoint; the comparison says (in one line, exit
    130 as for any Ctrl-C) to delete its directory, since a rerun would refuse it; after
    deleting it the same command trains the run."""
    import importlib
    import shutil

    writer = _press_ctrl_c_after_the_first_row(monkeypatch, times=2)
    argv = [
        "--modes", "sync", "--seeds", "0", "--n-envs", "4", "--total-steps", "1000",
        "--log-interval", "200", "--compare-dir", str(tmp_path),
    ]  # fmt: skip
    script = _compare_script()
    run_dir = str(tmp_path / "runs" / "CartPole-v1" / "sync-s0")
    assert script.main(argv) == 130
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        f"paac: comparison stopped in {run_dir} before it saved a checkpoint: "
        f"delete {run_dir} and run the same command again"
    )
    monkeypatch.setattr(importlib.import_module("paac.run.setup"), "MetricsWriter", writer)
    assert script.main(argv) == 2  # as it says: the rerun refuses the run
    assert "saved no checkpoint: delete it" in capsys.readouterr().err
    shutil.rmtree(run_dir)
    assert script.main(argv) == 0
