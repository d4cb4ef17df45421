"""Learning-curve plots: reading run directories, smoothing, the PNG, and the CLI."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from matplotlib.image import imread

from paac.tools.plot import DPI, FIGSIZE, PlotError, load_run, plot_runs, smooth

HEADER = (
    "step,update,walltime,sps,score,score_last20,episodes,episode_length,policy_loss,"
    "value_loss,entropy,grad_norm,lr,explained_variance"
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics_line(step, walltime, score="") -> str:
    """A metrics.csv row; ``score=""`` is a log interval in which no game finished."""
    last20 = "" if score == "" else score
    losses = "0.1,0.2,0.69,1.5,0.01,0.3"
    return f"{step},{step // 80},{walltime},1234.5,{score},{last20},3,21.5,{losses}"


def make_run(root, name, lines, config=None):
    """``root/name`` with metrics.csv (HEADER + ``lines``) and, if given, config.json."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    if config is not None:
        (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def cartpole(seed, n_envs=16):
    return {"env": "CartPole-v1", "arch": "mlp", "seed": seed, "n_envs": n_envs}


@pytest.fixture
def two_runs(tmp_path):
    a = make_run(
        tmp_path,
        "s0",
        [metrics_line(5000 * i, 1.5 * i, "" if i == 1 else 20.0 * i) for i in range(1, 9)],
        cartpole(0),
    )
    b = make_run(
        tmp_path,
        "s1",
        [metrics_line(5000 * i, 1.7 * i, 15.0 * i) for i in range(1, 7)],
        cartpole(1),
    )
    return a, b


def test_load_run_skips_empty_scores_and_parses_numbers(tmp_path):
    run_dir = make_run(
        tmp_path,
        "s3",
        [
            metrics_line(5000, 0.75, ""),
            metrics_line(10000, 1.5, "9.5"),
            metrics_line(15000, 2.25, ""),
            metrics_line(20000, 3.0, "22.25"),
            metrics_line(25000, 3.5, "41"),
        ],
        cartpole(3),
    )
    run = load_run(run_dir)
    assert run.label == "CartPole-v1 mlp s3"
    np.testing.assert_array_equal(run.steps, [10000, 20000, 25000])
    np.testing.assert_array_equal(run.walltime, [1.5, 3.0, 3.5])
    np.testing.assert_array_equal(run.scores, [9.5, 22.25, 41.0])
    for arr in (run.steps, run.walltime, run.scores):
        assert arr.dtype == np.float64
    assert load_run(str(run_dir), label="mine").label == "mine"


def test_load_run_label_is_dir_name_without_config(tmp_path):
    run_dir = make_run(tmp_path, "nips-s0-20240101", [metrics_line(100, 1.0, 3)])
    assert load_run(run_dir).label == "nips-s0-20240101"


def test_load_run_resumed_file(tmp_path):
    """A later process restarts its clock, re-logs steps after its checkpoint, and a killed
    process may leave its last row half written."""
    run_dir = make_run(
        tmp_path,
        "resumed",
        [
            metrics_line(100, 1.0, 1),
            metrics_line(200, 2.0, 2),
            metrics_line(300, 3.0, 3),  # after the checkpoint at 200: logged again below
            metrics_line(300, 0.5, 30),  # new process, clock from 0
            HEADER,
            metrics_line(400, 1.5, ""),
            metrics_line(500, 2.5, 50),
            metrics_line(600, 2.4, 60),  # a resumed clock a little behind: held level
            metrics_line(700, 3.5, 70),
            "800,7,3.1,12",  # cut short
        ],
    )
    run = load_run(run_dir)
    np.testing.assert_array_equal(run.steps, [100, 200, 300, 500, 600, 700])
    np.testing.assert_array_equal(run.scores, [1, 2, 30, 50, 60, 70])
    np.testing.assert_array_equal(run.walltime, [1.0, 2.0, 3.5, 5.5, 5.5, 6.5])


def test_load_run_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(PlotError, match="nope.*does not exist"):
        load_run(missing)
    (tmp_path / "file").write_text("x")
    with pytest.raises(PlotError, match="is not a directory"):
        load_run(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlotError, match="empty.*has no metrics.csv"):
        load_run(tmp_path / "empty")
    never = make_run(tmp_path, "never", [metrics_line(100, 1.0), metrics_line(200, 2.0)])
    with pytest.raises(PlotError, match="no finished episodes in .*never.*2 logged rows"):
        load_run(never)
    fresh = make_run(tmp_path, "fresh", [])
    with pytest.raises(PlotError, match="no finished episodes in .*fresh.*no rows yet"):
        load_run(fresh)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.csv").write_text("step,walltime\n1,2\n")
    with pytest.raises(PlotError, match="no 'score' column"):
        load_run(bad)
    assert issubclass(PlotError, ValueError)


def test_smooth_hand_computed():
    np.testing.assert_allclose(smooth([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smooth([3, 6, 9, 0, 3], 3), [3, 4.5, 6, 5, 4])
    np.testing.assert_allclose(smooth([2, 4], 5), [2, 3])  # shorter than the window
    assert smooth([], 4).shape == (0,)


def test_smooth_window_one_is_identity():
    x = np.array([5.0, -1.0, 2.5, 7.0])
    y = smooth(x, 1)
    np.testing.assert_array_equal(y, x)
    assert y is not x and y.dtype == np.float64


@pytest.mark.parametrize("window", [0, -2, 1.5, True])
def test_smooth_rejects_bad_window(window):
    with pytest.raises(ValueError, match="window"):
        smooth([1.0, 2.0], window)


def test_plot_runs_writes_png(tmp_path, two_runs):
    out = tmp_path / "plots" / "curves.png"
    path = plot_runs(two_runs, out, smooth_window=3)
    assert path == str(out)
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = imread(out)
    height, width = image.shape[:2]
    assert (width, height) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert width > height >= 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plot_runs_draws_the_smoothed_scores_of_each_run(tmp_path, two_runs, monkeypatch):
    """The lines drawn: per run its raw scores (faint) and their trailing mean of 3, against
    environment steps and against wall time (seconds here), checked against a NumPy loop."""
    from matplotlib.figure import Figure

    drawn, real_savefig = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        drawn.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    plot_runs(two_runs, tmp_path / "curves.png", smooth_window=3)
    ax_steps, ax_time = drawn[0].axes[:2]

    def trailing_mean(v, w):
        return np.array([np.mean(v[max(0, i - w + 1) : i + 1]) for i in range(len(v))])

    rows = {0: range(2, 9), 1: range(1, 7)}  # run s0's first row has no score
    for k, (wall, score) in enumerate([(1.5, 20.0), (1.7, 15.0)]):
        i = np.array(rows[k], np.float64)
        steps, seconds, scores = 5000 * i, wall * i, score * i
        for ax, x in ((ax_steps, steps), (ax_time, seconds)):
            raw, mean = ax.lines[2 * k], ax.lines[2 * k + 1]
            np.testing.assert_allclose(raw.get_xdata(), x)
            np.testing.assert_allclose(raw.get_ydata(), scores)
            np.testing.assert_allclose(mean.get_xdata(), x)
            np.testing.assert_allclose(mean.get_ydata(), trailing_mean(scores, 3))
    assert len(ax_steps.lines) == len(ax_time.lines) == 4


def test_shared_default_labels_get_what_tells_the_runs_apart(tmp_path):
    from paac.tools.plot import _disambiguate

    config = {"env": "CartPole-v1", "arch": "mlp", "seed": 0}
    lines = [metrics_line(100, 1.0, 5.0)]
    dirs = [
        make_run(tmp_path / "cmp1", "sync-s0", lines, config),
        make_run(tmp_path / "cmp2", "sync-s0", lines, config),
        make_run(tmp_path / "cmp2", "a3c-s0", lines, config),
        make_run(tmp_path, "other", lines, dict(config, seed=1)),
    ]
    runs = _disambiguate([load_run(d) for d in dirs], [str(d) for d in dirs])
    assert [r.label for r in runs] == [
        "CartPole-v1 mlp s0 (cmp1/sync-s0)",
        "CartPole-v1 mlp s0 (cmp2/sync-s0)",
        "CartPole-v1 mlp s0 (cmp2/a3c-s0)",
        "CartPole-v1 mlp s1",  # its own label: left alone
    ]
    runs = _disambiguate([load_run(d) for d in dirs[1:3]], [str(d) for d in dirs[1:3]])
    labels = [r.label for r in runs]
    assert labels == ["CartPole-v1 mlp s0 (sync-s0)", "CartPole-v1 mlp s0 (a3c-s0)"]


def test_plot_runs_labels_and_output_format(tmp_path, two_runs):
    assert plot_runs(two_runs[:1], tmp_path / "one", labels=["seed 0"]) == str(tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes()[:8] == PNG_SIGNATURE
    # A directory (existing, or named with a trailing slash): the default name inside it.
    (tmp_path / "plots").mkdir()
    for out in (tmp_path / "plots", f"{tmp_path / 'new'}/"):
        want = os.path.join(out, "learning_curves.png")
        assert plot_runs(two_runs[:1], out) == want
        assert open(want, "rb").read()[:8] == PNG_SIGNATURE
    with pytest.raises(PlotError, match="1 labels for 2 run directories"):
        plot_runs(two_runs, tmp_path / "x.png", labels=["a"])
    with pytest.raises(PlotError, match="unknown image format 'xyz'"):
        plot_runs(two_runs, tmp_path / "x.xyz")
    with pytest.raises(PlotError, match="window"):
        plot_runs(two_runs, tmp_path / "x.png", smooth_window=0)
    assert not (tmp_path / "x.png").exists()


def run_cli(script, *arg_lists):
    """``experiments/plot.py`` once per argument list, the processes side by side."""
    with ThreadPoolExecutor(len(arg_lists)) as pool:
        return list(pool.map(lambda args: script("plot.py", *args, timeout=60), arg_lists))


@pytest.mark.slow
def test_cli_writes_png_and_prints_path(script, tmp_path, two_runs):
    out = tmp_path / "cli.png"
    res_out, res_default = run_cli(
        script,
        [*map(str, two_runs), "--out", str(out), "--smooth", "2"],
        [str(two_runs[1]), "--labels", "seed one"],
    )
    assert res_out.returncode == 0, res_out.stderr
    assert res_out.stdout.strip() == str(out)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert res_default.returncode == 0, res_default.stderr
    default = two_runs[1] / "learning_curves.png"  # default: in the first run directory
    assert res_default.stdout.strip() == str(default)
    assert default.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_cli_bad_input_is_one_line_exit_2(script, tmp_path, two_runs):
    never = make_run(tmp_path, "never", [metrics_line(100, 1.0), metrics_line(200, 2.0)])
    cases = [
        ([str(tmp_path / "missing")], "missing' does not exist"),
        ([str(two_runs[0]), str(never)], "no finished episodes in"),
        ([str(two_runs[0]), "--smooth", "0"], "--smooth must be an integer >= 1"),
    ]
    results = run_cli(script, *(args for args, _ in cases))
    for (args, message), res in zip(cases, results, strict=True):
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("paac: error: "), res.stderr
        assert message in lines[0]
        assert res.stdout == ""
    assert not (two_runs[0] / "learning_curves.png").exists()
