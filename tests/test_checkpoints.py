"""Checkpoints: exact resume, signals, bad checkpoints, and evaluation from a checkpoint."""

import csv
import errno
import json
import math
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import types
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest

from paac import Config, ConfigError, train
from paac.run.checkpoints import CheckpointError, locate, read_meta
from paac.run.metrics import COLUMNS, MetricsWriter, TensorBoardWriter
from paac.tools.evaluate import evaluate
from tests.conftest import ROOT, run_script, script_env

# Another process training a run: it takes the run's lock as train does, then waits.
HOLD_LOCK = """import sys, time
from paac.run.rundir import RunLock
RunLock(sys.argv[1]).__enter__()
print("locked", flush=True)
time.sleep(120)
"""

CARTPOLE = dict(
    env="CartPole-v1", arch="mlp", n_envs=8, t_max=5, total_steps=8000, lr=0.01,
    entropy_coef=0.01, checkpoint_interval=4000, log_interval=700,
)  # fmt: skip


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def assert_same_logs(run_dir, other_dir, rtol: float = 0.0) -> None:
    """The same metrics.csv rows, every number equal but the wall-time columns (with
    ``rtol``, equal to that relative tolerance)."""
    ours, theirs = _rows(run_dir), _rows(other_dir)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        for col in set(a) - {"walltime", "sps"}:
            if rtol and a[col] and b[col]:
                assert math.isclose(float(a[col]), float(b[col]), rel_tol=rtol), (a["step"], col)
            else:
                assert a[col] == b[col], (a["step"], col)


def assert_resume_is_exact(tmp_path, cfg: dict) -> None:
    """``cfg`` trained to 8000 steps straight, and resumed from its checkpoint at 4000 (the
    one at 8000 removed), end equal: every array of the learner state, and the logs."""
    straight = train(Config(**cfg, out_dir=str(tmp_path), run_name="a"), progress=False)
    run = tmp_path / "b"
    shutil.copytree(straight.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")
    resumed = train(Config(**cfg, resume=str(run)), progress=False)
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert_same_logs(run, straight.run_dir)


def _listing(path):
    return sorted(
        (os.path.relpath(os.path.join(d, f), path), os.path.getmtime(os.path.join(d, f)))
        for d, _, files in os.walk(path)
        for f in files
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A CartPole run of 8000 steps with checkpoints at 4000 and 8000."""
    out = tmp_path_factory.mktemp("runs")
    result = train(Config(**CARTPOLE, out_dir=str(out), run_name="straight"), progress=False)
    return result


@pytest.mark.slow
def test_resume_gives_the_straight_run(straight, tmp_path):
    """Training N steps straight equals training to N/2, stopping, and resuming to N."""
    run = tmp_path / "resumed"
    shutil.copytree(straight.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")  # as if the run had stopped at 4000
    with open(run / "metrics.csv", "a") as f:  # a row logged after the checkpoint, then killed
        f.write("4560,57,9.9,1,,,1,,0,0,0,0,0,0,,\n")
    killed = TensorBoardWriter(str(run))  # and its TensorBoard point
    killed.write({"step": 4560, "lr": 123.0})
    killed.close()
    resumed = train(Config(**CARTPOLE, out_dir="unused", resume=str(run)), progress=False)
    assert resumed.run_dir == str(run) and resumed.steps == straight.steps == 8000
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert int(resumed.state.update_count) == 200
    # Logs are appended, not restarted: the same rows (wall time aside), none duplicated,
    # although rows (every 720 steps) do not fall on the checkpoint (4000): a row is
    # written at every checkpoint, so nothing logged before it is lost.
    ours, theirs = _rows(run), _rows(straight.run_dir)
    steps = [int(r["step"]) for r in theirs]
    assert 4000 in steps and 4560 not in steps and steps == sorted(steps)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        for col in set(a) - {"walltime", "sps"}:
            assert a[col] == b[col], (a["step"], col)
    assert resumed.episodes == straight.episodes
    # TensorBoard shows the same points: the resumed process's file drops those after 4000.
    ours, theirs = _tensorboard(run), _tensorboard(pathlib.Path(straight.run_dir))
    assert ours.keys() == theirs.keys() and ("paac/lr", 4000) in ours
    for key in ours:
        if key[0] not in ("paac/walltime", "paac/sps"):
            assert ours[key] == theirs[key], key


@pytest.mark.slow
def test_resume_warns_when_the_segments_move(straight, tmp_path, capsys):
    """A resume may change --checkpoint-interval, but with exact resume the environments
    restart at each interval checkpoint: the run is then no longer exact, and is told so."""
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")
    train(Config(**CARTPOLE, resume=str(run)), progress=False)
    assert "warning" not in capsys.readouterr().err
    shutil.rmtree(run / "checkpoints" / "8000")
    train(Config(**{**CARTPOLE, "checkpoint_interval": 2000}, resume=str(run)), progress=False)
    err = capsys.readouterr().err
    assert "--checkpoint-interval=2000" in err and "--checkpoint-interval=4000" in err
    assert "no longer equals" in err


@pytest.mark.slow
def test_keep_bounds_checkpoints(tmp_path):
    cfg = Config(**{**CARTPOLE, "checkpoint_interval": 1000}, keep=2, out_dir=str(tmp_path))
    result = train(cfg, progress=False)
    assert sorted(os.listdir(os.path.join(result.run_dir, "checkpoints"))) == ["7000", "8000"]
    meta, _, step = read_meta(result.run_dir)
    assert step == 8000 and meta["update"] == 200 and meta["config"]["n_envs"] == 8
    assert meta["format_version"] == 2 and meta["episode_stats"]["episodes"] > 0


@pytest.mark.slow
def test_half_written_checkpoint_is_ignored(straight, tmp_path):
    """A save killed midway leaves orbax's temporary directory: never taken for a checkpoint."""
    from orbax.checkpoint._src.path.atomicity import TMP_DIR_SUFFIX

    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    partial = run / "checkpoints" / f"12000{TMP_DIR_SUFFIX}"
    shutil.copytree(run / "checkpoints" / "8000", partial)
    shutil.rmtree(partial / "state")
    assert locate(str(run)) == (str(run / "checkpoints"), 8000)
    assert evaluate(str(run), episodes=1, write_json=False)["step"] == 8000


def _eval_cli(*args):
    return run_script("evaluate.py", *args)


def _one_error_line(out):
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("paac: error: "), out.stderr
    return lines[0]


@pytest.mark.slow
def test_bad_paths_and_corrupt_checkpoints(straight, tmp_path):
    assert "no such file" in _one_error_line(_eval_cli(str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoint" in _one_error_line(_eval_cli(str(tmp_path / "empty")))
    run = tmp_path / "corrupt"
    shutil.copytree(straight.run_dir, run)
    for d, _, files in os.walk(run / "checkpoints" / "8000" / "state"):
        for f in files:
            with open(os.path.join(d, f), "wb") as fh:
                fh.write(b"\x00garbage")
    before = _listing(run)
    line = _one_error_line(_eval_cli(str(run)))
    assert "unreadable" in line and "8000" in line
    with pytest.raises(CheckpointError, match="unreadable"):
        train(Config(**CARTPOLE, resume=str(run)), progress=False)
    assert _listing(run) == before  # nothing written, nothing touched
    # Data files cut short: orbax gives up with reads still in flight, whose callbacks into
    # its closed event loop printed dozens of tracebacks after the error line.
    run = tmp_path / "truncated"
    shutil.copytree(straight.run_dir, run)
    for d, _, files in os.walk(run / "checkpoints" / "8000" / "state" / "d"):
        for f in files:
            os.truncate(os.path.join(d, f), 10)
    line = _one_error_line(_eval_cli(str(run)))
    assert "unreadable" in line and "files missing or damaged" in line


def test_only_closed_loop_callbacks_are_silenced(monkeypatch):
    from paac.run import checkpoints

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    checkpoints._ignore_closed_loop_callbacks()
    checkpoints._ignore_closed_loop_callbacks()  # installed once
    import asyncio

    def raised(err, where):  # an exception with a traceback through ``where``
        try:
            where(err)
        except BaseException as e:
            return types.SimpleNamespace(exc_value=e, exc_traceback=e.__traceback__)

    def raise_it(err):
        raise err

    loop = asyncio.new_event_loop()
    loop.close()
    native = raised(None, lambda _: loop.call_soon_threadsafe(print))  # no caller frame
    while "asyncio" not in native.exc_traceback.tb_frame.f_code.co_filename:
        native.exc_traceback = native.exc_traceback.tb_next  # as called from native code
    assert str(native.exc_value) == "Event loop is closed"
    for u in (
        native,
        raised(RuntimeError("Event loop is closed"), raise_it),  # Python code's own
        raised(RuntimeError("something else"), raise_it),
        raised(ValueError("Event loop is closed"), raise_it),
    ):
        sys.unraisablehook(u)
    assert [(type(e).__name__, str(e)) for e in seen] == [
        ("RuntimeError", "Event loop is closed"),
        ("RuntimeError", "something else"),
        ("ValueError", "Event loop is closed"),
    ]


@pytest.mark.slow
def test_a_resumed_run_names_its_own_directory(straight, tmp_path, script):
    """A run directory moved elsewhere resumes there, and its config.json then says where
    it is; --out-dir/--run-name that point elsewhere are refused (they were ignored, and
    written into config.json)."""
    run = tmp_path / "elsewhere" / "CartPole-v1" / "moved"
    shutil.copytree(straight.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")
    before = _listing(run)
    for flag, value in (("--run-name", "renamed"), ("--out-dir", str(tmp_path))):
        line = _one_error_line(script("control.py", "--resume", str(run), flag, value))
        assert f"{flag}={value!r} is invalid with --resume" in line and str(run) in line
    assert _listing(run) == before
    out = script("control.py", "--resume", str(run), "--out-dir", str(tmp_path / "elsewhere"))
    assert out.returncode == 0, out.stderr
    with open(run / "config.json") as f:
        saved = json.load(f)
    assert (saved["out_dir"], saved["run_name"]) == (str(tmp_path / "elsewhere"), "moved")
    meta, _, step = read_meta(str(run))
    assert step == 8000 and meta["config"]["run_name"] == "moved"
    # Out of the <out_dir>/<env>/<name> layout: refusals name the directory itself, the same
    # place named through a relative path is no conflict, and the config keeps its names.
    flat = tmp_path / "flat"
    shutil.copytree(straight.run_dir, flat)
    shutil.rmtree(flat / "checkpoints" / "8000")
    line = _one_error_line(script("control.py", "--resume", str(flat), "--run-name", "x"))
    assert f"its own directory {str(flat)!r}" in line
    out = script("control.py", "--resume", str(flat))
    assert out.returncode == 0, out.stderr
    with open(flat / "config.json") as f:
        assert json.load(f)["run_name"] == "straight"
    shutil.rmtree(run / "checkpoints" / "8000")
    relative = os.path.relpath(tmp_path / "elsewhere", ROOT)  # scripts run in ROOT
    out = script("control.py", "--resume", str(run), "--out-dir", relative)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_resuming_a_finished_run_touches_nothing(straight, tmp_path, script):
    """It trained nothing, yet wrote a new TensorBoard file and config.json, and warned of
    moved segments that would never come."""
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    before = _listing(run)
    out = script("control.py", "--resume", str(run), "--checkpoint-interval", "2000")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == (
        f"paac: the run had already finished at step 8,000; nothing to train; outputs in {run}"
    )
    assert _listing(run) == before
    result = train(Config(**CARTPOLE, resume=str(run)), progress=False)
    assert (result.steps, result.episodes) == (8000, straight.episodes)
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(result.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _listing(run) == before


@pytest.mark.slow
def test_total_steps_off_the_batch_are_announced(tmp_path, capsys):
    config = Config(**{**CARTPOLE, "total_steps": 1010}, out_dir=str(tmp_path))
    assert train(config, progress=False).steps == 1000
    err = capsys.readouterr().err
    assert "--total-steps=1010 is not a multiple of the batch (n_e x t_max = 40)" in err
    assert "the run ends at step 1,000" in err


@pytest.mark.slow
def test_conflicting_resume_is_refused_untouched(straight, tmp_path, script):
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    before = _listing(run)
    out = script("control.py", "--resume", str(run), "--n-envs", "4")
    line = _one_error_line(out)
    assert "--n-envs=4" in line and "--n-envs=8" in line
    out = script("atari.py", "--resume", str(run), "--env", "Pong-v5", "--arch", "nips")
    assert "--env='Pong-v5'" in _one_error_line(out)
    assert _listing(run) == before


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_continues(tmp_path, script):
    run_dir = tmp_path / "CartPole-v1" / "term"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "control.py"),
         "--total-steps", "100000000", "--log-interval", "2000",
         "--checkpoint-interval", "0", "--out-dir", str(tmp_path), "--run-name", "term"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not ((run_dir / "metrics.csv").exists() and len(_rows(run_dir)) >= 2):
            assert time.time() < deadline, "training never logged"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    meta, _, step = read_meta(str(run_dir))
    assert step == int(_rows(run_dir)[-1]["step"]) and meta["update"] * 80 == step
    assert f"at step {step:,}" in stderr.strip().splitlines()[-1]
    # Resume: counters go on from the checkpoint (--target-score is a per-run setting).
    out = script("control.py", "--resume", str(run_dir), "--target-score", "0")
    assert out.returncode == 0, out.stderr
    rows = _rows(run_dir)
    assert int(rows[-1]["step"]) == step + 80 and int(rows[-1]["update"]) == meta["update"] + 1
    assert read_meta(str(run_dir))[2] == step + 80


def _tensorboard(run_dir):
    """``{(tag, step): value}`` as TensorBoard shows a run: its event files (TFRecords of
    Event protos, read here without TensorBoard) in name order, a file's START session log
    at step s dropping the points at steps >= s of the files before it."""
    from tensorboardX.proto import event_pb2

    points = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            if i + 12 + n + 4 > len(data):
                break  # a record cut short
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            if event.session_log.status == event_pb2.SessionLog.START:
                points = {k: v for k, v in points.items() if k[1] < event.step}
            for v in event.summary.value:
                points[v.tag, event.step] = v.simple_value
    return points


def test_tensorboard_rows_reach_the_file_as_they_are_written(tmp_path):
    writer = TensorBoardWriter(str(tmp_path))
    writer.write({"step": 80, "lr": 0.5, "score": None})
    assert _tensorboard(tmp_path) == {("paac/lr", 80): 0.5}  # before any flush or close
    writer.write({"step": 160, "lr": 0.25})
    assert _tensorboard(tmp_path)[("paac/lr", 160)] == 0.25
    writer.close()


@pytest.mark.slow
def test_a_checkpoint_never_gets_ahead_of_the_tensorboard_logs(tmp_path):
    """Killed the moment a checkpoint exists: TensorBoard already holds every row up to the
    checkpoint's step, the rows a resume from it keeps (it drops the later ones)."""
    run_dir = tmp_path / "CartPole-v1" / "kill"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "control.py"),
         "--total-steps", "100000000", "--log-interval", "800", "--checkpoint-interval", "4000",
         "--out-dir", str(tmp_path), "--run-name", "kill"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=script_env(),
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (saved := [p for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]):
            assert time.time() < deadline and proc.poll() is None, "no checkpoint was saved"
            time.sleep(0.01)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    step = int(saved[0].name)
    logged = {int(r["step"]) for r in _rows(run_dir) if int(r["step"]) <= step}
    assert step in logged and len(logged) == step // 800
    assert logged <= {step for tag, step in _tensorboard(run_dir) if tag == "paac/lr"}


@pytest.mark.slow
def test_a_second_ctrl_c_during_a_checkpoint_lets_it_finish(tmp_path, monkeypatch, capsys):
    """Ctrl-C twice while an interval checkpoint is being saved: the checkpoint is finished
    (no half-written one left), then the run stops at once, at that checkpoint."""
    import importlib

    setup_module = importlib.import_module("paac.run.setup")
    real_save = setup_module.Checkpointer.save

    def save(self, step, *args):
        if step == 4000:  # the first interval checkpoint
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        real_save(self, step, *args)

    monkeypatch.setattr(setup_module.Checkpointer, "save", save)
    cfg = Config(**{**CARTPOLE, "total_steps": 80_000}, out_dir=str(tmp_path), run_name="twice")
    result = train(cfg, progress=False)
    assert result.interrupted and result.steps == 4000 and result.signal == signal.SIGINT
    assert sorted(os.listdir(os.path.join(result.run_dir, "checkpoints"))) == ["4000"]
    assert read_meta(result.run_dir)[2] == 4000
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("paac: interrupted at step 4,000,") and "checkpoint" not in line


@pytest.mark.slow
def test_a_second_ctrl_c_between_checkpoints_names_the_last_one(tmp_path, monkeypatch, capsys):
    import importlib

    train_module = importlib.import_module("paac.run.train")
    real_collect = train_module.collect_rollout
    calls = 0

    def collect(*args, **kw):
        nonlocal calls
        calls += 1
        if calls == 150:  # 6000 steps: after the checkpoint at 4000
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_collect(*args, **kw)

    monkeypatch.setattr(train_module, "collect_rollout", collect)
    cfg = Config(**{**CARTPOLE, "total_steps": 80_000}, out_dir=str(tmp_path), run_name="twice")
    result = train(cfg, progress=False)
    assert result.interrupted and result.steps == 5960 and read_meta(result.run_dir)[2] == 4000
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("paac: interrupted at step 5,960")
    assert "(its last checkpoint is at step 4,000)" in line


@pytest.mark.slow
def test_sigterm_during_start_up_is_reported(monkeypatch, capsys):
    """SIGTERM before the training loop (creating environments, restoring) stops the start
    with a line saying so and status 143, as Ctrl-C does with 130; it used to kill the
    process without a word."""

    from paac.tools import cli

    def starting(config):  # start-up, before train installs its own handlers
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the start-up")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "train", starting)
    assert cli.main(Config(**CARTPOLE), []) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "paac: terminated before any checkpoint of this start"
    )
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_evaluate_cartpole_with_videos(straight, tmp_path):
    import imageio.v3 as iio
    from PIL import Image

    gif, mp4 = tmp_path / "play.gif", tmp_path / "play.mp4"
    out = _eval_cli(straight.run_dir, "--episodes", "3", "--video", str(gif), "--seed", "7")
    assert out.returncode == 0, out.stderr
    assert "score  mean" in out.stdout and "3 games" in out.stdout
    with open(os.path.join(straight.run_dir, "eval-8000-sampled.json")) as f:
        stats = json.load(f)
    assert len(stats["scores"]) == 3 and stats["steps"] == sum(stats["lengths"])
    assert stats["mean"] == pytest.approx(np.mean(stats["scores"]))
    assert stats["min"] == min(stats["scores"]) and stats["policy"] == "sampled"
    # One frame after the reset, then one per step of the recorded game.
    frames = stats["video_game"][1] + 1
    with Image.open(gif) as im:
        assert im.n_frames == frames == stats["video_frames"]
        assert im.size == (600, 400)
        # 1000 / 30 ms a frame in the GIF's 10 ms units: 30 or 40 ms, in real time overall.
        delays = []
        for i in range(im.n_frames):
            im.seek(i)
            delays.append(im.info["duration"])
        assert set(delays) == {30, 40} and abs(sum(delays) - frames * 1000 / 30) < 10
    assert stats["video_fps"] == 30 and f"({frames} frames at 30 fps)" in out.stdout
    greedy = evaluate(straight.run_dir, episodes=2, greedy=True, video=str(mp4), seed=7, fps=10)
    video = iio.imread(mp4)
    assert video.shape[0] == greedy["video_game"][1] + 1 and video.shape[1:] == (400, 600, 3)
    assert iio.immeta(mp4)["fps"] == 10 == greedy["video_fps"]
    assert greedy["policy"] == "greedy"
    assert set(os.listdir(tmp_path)) == {"play.gif", "play.mp4"}  # no partial files left


@pytest.mark.slow
def test_evaluate_rejects_bad_video_path(straight, tmp_path):
    line = _one_error_line(_eval_cli(straight.run_dir, "--video", str(tmp_path / "x.avi")))
    assert ".mp4 or .gif" in line
    line = _one_error_line(_eval_cli(straight.run_dir, "--video", "/proc/nope/x.gif"))
    assert "cannot write" in line
    (tmp_path / "d.gif").mkdir()
    line = _one_error_line(_eval_cli(straight.run_dir, "--video", str(tmp_path / "d.gif")))
    assert "is a directory" in line
    for fps in ("0", "-5", "1e9"):
        line = _one_error_line(_eval_cli(straight.run_dir, "--video", "x.gif", "--fps", fps))
        assert f"--fps={float(fps)!r} is invalid" in line


@pytest.mark.slow
def test_evaluate_reports_what_it_played_when_an_output_cannot_be_written(
    straight, tmp_path, monkeypatch
):
    """The games are played before the outputs are written: a video or eval JSON that cannot
    be written costs neither the report nor the other output, and is named on stderr."""
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    (run / "eval-8000-sampled.json").unlink(missing_ok=True)  # from another test's evaluation
    (run / "eval-8000-sampled.json").mkdir()  # in the way of the JSON
    (tmp_path / "play.partial.gif").mkdir()  # in the way of the video, while written
    video = tmp_path / "play.gif"
    out = _eval_cli(str(run), "--episodes", "2", "--video", str(video))
    assert out.returncode == 1
    assert "score  mean" in out.stdout and "2 games" in out.stdout
    errors = out.stderr.strip().splitlines()
    assert errors[-2].startswith("paac: error: cannot write the video") and "play.gif" in errors[-2]
    assert (
        errors[-1].startswith("paac: error: cannot write")
        and "eval-8000-sampled.json" in errors[-1]
    )
    assert not video.exists() and not list(run.glob("*.tmp"))
    # Only the video fails: the JSON is written, and says there is no video.
    shutil.rmtree(run / "eval-8000-sampled.json")
    stats = evaluate(str(run), episodes=2, video=str(video))
    assert len(stats["problems"]) == 1 and "video" in stats["problems"][0]
    saved = json.loads((run / "eval-8000-sampled.json").read_text())
    assert saved["video"] is None and saved["scores"] == stats["scores"]
    # An MP4 is streamed to ffmpeg while the game is played: failing to start it costs
    # nothing else either.
    (tmp_path / "play.partial.mp4").mkdir()
    stats = evaluate(str(run), episodes=2, video=str(tmp_path / "play.mp4"), write_json=False)
    assert len(stats["problems"]) == 1 and "play.mp4" in stats["problems"][0]
    assert len(stats["scores"]) == 2 and stats["video"] is None
    assert not (tmp_path / "play.mp4").exists()

    # ffmpeg dying mid-game comes as a RuntimeError: the same.
    from paac.tools.evaluate import VideoWriter

    def ffmpeg_dies(self, frame):
        raise RuntimeError("ffmpeg exited with status 1")

    monkeypatch.setattr(VideoWriter, "add", ffmpeg_dies)
    shutil.rmtree(tmp_path / "play.partial.mp4")
    stats = evaluate(str(run), episodes=2, video=str(tmp_path / "play.mp4"), write_json=False)
    assert stats["problems"] == [
        f"cannot write the video {str(tmp_path / 'play.mp4')!r} (ffmpeg exited with status 1)"
    ]
    assert len(stats["scores"]) == 2 and not list(tmp_path.glob("play*.mp4"))


@pytest.mark.slow
def test_evaluate_pong_checkpoint(tmp_path, script):
    import imageio.v3 as iio

    out = script(
        "atari.py", "--env", "Pong-v5", "--n-envs", "2", "--total-steps", "20",
        "--out-dir", str(tmp_path), "--run-name", "p",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    mp4 = tmp_path / "pong.mp4"
    out = _eval_cli(str(tmp_path / "Pong-v5" / "p"), "--episodes", "1", "--video", str(mp4))
    assert out.returncode == 0, out.stderr
    # One frame per agent step of 4 Atari frames: real time is 60 / 4 = 15 frames per second.
    assert iio.immeta(mp4)["fps"] == 15 and "frames at 15 fps)" in out.stdout
    with open(tmp_path / "Pong-v5" / "p" / "eval-20-sampled.json") as f:
        stats = json.load(f)
    # A whole game of Pong without clipping: 21 points to one side, raw score in [-21, 21].
    assert -21 <= stats["mean"] <= 21 and stats["mean"] == stats["scores"][0]
    assert stats["steps"] > 500 and stats["env"] == "Pong-v5"
    assert "score  mean" in out.stdout and "1 game" in out.stdout
    assert f"{stats['mean']:.2f}" in out.stdout


@pytest.mark.slow
def test_resume_only_from_the_latest_checkpoint(straight, tmp_path, script):
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    before = _listing(run)
    out = script("control.py", "--resume", str(run / "checkpoints" / "4000"))
    line = _one_error_line(out)
    assert "step 4000" in line and "step 8000" in line and "abandon" in line
    assert _listing(run) == before


@pytest.mark.slow
def test_a_used_run_name_is_not_reused(straight, tmp_path):
    out_dir = os.path.dirname(os.path.dirname(straight.run_dir))
    before = _listing(straight.run_dir)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train(Config(**CARTPOLE, out_dir=out_dir, run_name="straight"), progress=False)
    assert _listing(straight.run_dir) == before


@pytest.mark.parametrize(
    "saved_on",
    [
        {"sharding_type": "SingleDeviceSharding", "device_str": "cuda:0"},
        {
            "sharding_type": "NamedSharding",
            "shape": [2],
            "axis_names": ["envs"],
            "partition_spec": [],
            "device_mesh": {"mesh": [{"id": 3}, {"id": 4}]},
        },
    ],
    ids=["one-gpu", "mesh-of-two"],
)
@pytest.mark.slow
def test_checkpoint_from_another_device_restores_here(straight, tmp_path, saved_on):
    """A checkpoint records the devices it was saved from (say, a GPU, or a mesh of two
    devices this machine lacks); it must load here, on this one CPU device."""
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    sharding = run / "checkpoints" / "8000" / "state" / "_sharding"
    entries = json.loads(sharding.read_text())
    assert entries and all(json.loads(v)["sharding_type"] for v in entries.values())
    sharding.write_text(json.dumps({k: json.dumps(saved_on) for k in entries}))
    stats = evaluate(str(run), episodes=1, write_json=False)
    assert stats["step"] == 8000


@pytest.mark.slow
def test_value_based_resume_is_exact(tmp_path):
    """Sarsa: target network, per-environment epsilons and the look-ahead action survive."""
    cfg = dict(CARTPOLE, algo="sarsa", target_interval=1000, epsilon_anneal_steps=4000)
    straight = train(Config(**cfg, out_dir=str(tmp_path), run_name="a"), progress=False)
    run = tmp_path / "b"
    shutil.copytree(straight.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")
    resumed = train(Config(**cfg, resume=str(run)), progress=False)
    assert set(resumed.state.extra) == {"target_params", "final_epsilon"}
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    stats = evaluate(straight.run_dir, episodes=2, write_json=False)
    assert stats["policy"] == "greedy" and stats["algo"] == "sarsa"


@pytest.mark.parametrize(
    "mode",
    [dict(mode="a3c", workers=4, staleness="uniform", max_staleness=3), dict(mode="ga3c")],
    ids=["a3c", "ga3c"],
)
@pytest.mark.slow
def test_async_resume_is_exact(tmp_path, mode):
    """The parameter ring, the workers' copies and the delay RNG survive a resume."""
    cfg = dict(CARTPOLE, **mode)
    straight = train(Config(**cfg, out_dir=str(tmp_path), run_name="a"), progress=False)
    run = tmp_path / "b"
    shutil.copytree(straight.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")
    resumed = train(Config(**cfg, resume=str(run)), progress=False)
    want = (
        {"ring", "copies", "workers", "delay_key"} if mode["mode"] == "a3c" else {"ring", "acting"}
    )
    assert set(resumed.state.extra) == want
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert _rows(run)[-1]["staleness"] == _rows(straight.run_dir)[-1]["staleness"] != ""


@pytest.mark.slow
def test_old_format_is_named(straight, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(straight.run_dir, run)
    meta_file = run / "checkpoints" / "8000" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["format_version"] = 99
    meta_file.write_text(json.dumps(meta))
    line = _one_error_line(_eval_cli(str(run)))
    assert "format version 99" in line and "reads versions 1, 2" in line


@pytest.mark.slow
def test_format_1_checkpoint_restores_and_resumes(straight, tmp_path):
    """Checkpoints written before LearnerState.extra existed (a2c, format 1) still load."""
    import orbax.checkpoint as ocp

    from paac.algorithms.build import network_for, state_template
    from paac.core.types import EnvSpec

    class LearnerStateV1(NamedTuple):  # format 1's learner state: no extra, no norm
        params: Any
        opt_state: Any
        update_count: Any

    cfg = Config(**CARTPOLE)
    spec = EnvSpec((4,), np.dtype("float32"), 2, False)
    template = state_template(cfg, network_for(cfg, spec), spec)
    directory, _ = locate(straight.run_dir)
    from paac.run.checkpoints import restore

    step = 4000  # written in format 1, then resumed to the end of the straight run
    new = restore(directory, step, template)
    old = LearnerStateV1(new.state.params, new.state.opt_state, new.state.update_count)
    meta = dict(new.meta, format_version=1)
    run = tmp_path / "v1"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(os.path.join(straight.run_dir, "metrics.csv"), run / "metrics.csv")
    mgr = ocp.CheckpointManager(str(run / "checkpoints"))
    mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"learner": old, "act_key": new.act_key}),
        meta=ocp.args.JsonSave(meta),
    ))  # fmt: skip
    mgr.wait_until_finished()
    back = restore(str(run / "checkpoints"), step, template)
    assert back.state.extra == {}
    chex_equal = jax.tree.map(
        lambda a, b: np.array_equal(a, b), back.state.params, new.state.params
    )
    assert all(jax.tree.leaves(chex_equal))
    resumed = train(Config(**CARTPOLE, resume=str(run)), progress=False)
    assert resumed.steps == 8000
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_metrics_header_is_upgraded(tmp_path):
    """A run logged by an older paac (fewer columns) keeps its rows under today's header."""
    old = [c for c in COLUMNS if c not in ("q_mean", "epsilon")]
    path = tmp_path / "metrics.csv"
    path.write_text(",".join(old) + "\n" + ",".join(["1"] * len(old)) + "\n")
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write({"step": 2, "epsilon": 0.5})
    writer.close()
    rows = _rows(tmp_path)
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["step"] == "1" and rows[0]["epsilon"] == ""
    assert rows[1]["step"] == "2" and rows[1]["epsilon"] == "0.5"
    # Mixed rows (a resumed process appended today's columns under the old header), then a
    # resume from step 2: the rows are read under the right names before truncating.
    from paac.run.metrics import truncate_metrics

    today = ["2"] + [""] * (len(COLUMNS) - 1)
    today[COLUMNS.index("epsilon")] = "0.25"
    path.write_text(
        ",".join(old) + "\n" + ",".join(["1"] * len(old)) + "\n"
        + ",".join(today) + "\n"
        + ",".join(["3"] + [""] * (len(COLUMNS) - 1)) + "\n"
    )  # fmt: skip
    assert truncate_metrics(str(tmp_path), 2) == 1
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == ["1", "2"] and rows[1]["epsilon"] == "0.25"


def test_resume_drops_a_row_cut_short(tmp_path):
    """A process killed while writing a row leaves it without its newline: "2800" may read
    "28", and the resumed run's next row would continue that line."""
    from paac.run.metrics import truncate_metrics

    path = tmp_path / "metrics.csv"
    full = [str(s) + "," * (len(COLUMNS) - 1) for s in (1000, 2000)]
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(full) + "\n28")
    assert truncate_metrics(str(tmp_path), 2000) == 1
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write({"step": 3000, "score": 1.5})
    writer.close()
    rows = _rows(tmp_path)
    assert [(r["step"], r["score"]) for r in rows] == [("1000", ""), ("2000", ""), ("3000", "1.5")]
    # A header cut short: the file starts again with a whole header.
    path.write_text(",".join(COLUMNS)[:7])
    assert truncate_metrics(str(tmp_path), 2000) == 1
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write({"step": 3000})
    writer.close()
    assert [r["step"] for r in _rows(tmp_path)] == ["3000"]


def test_write_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    """config.json, eval JSONs and rewritten metrics.csv files are whole or untouched."""
    from paac.run.metrics import write_atomic

    path = tmp_path / "config.json"
    write_atomic(str(path), "old")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]


@pytest.mark.slow
def test_a_run_in_use_is_locked(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    holder = subprocess.Popen(  # another process trains this run: it holds the lock
        [sys.executable, "-c", HOLD_LOCK, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env=script_env(),
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ConfigError, match=f"being trained by process {holder.pid}"):
            train(Config(**CARTPOLE, resume=str(run)), progress=False)
    finally:
        holder.kill()
        holder.wait()
    # Its holder was killed: the file it left (with a dead pid) locks nothing; the resumed
    # run trains and removes it at the end.
    assert (run / ".lock").read_text() == str(holder.pid)
    cfg = Config(**{**CARTPOLE, "checkpoint_interval": 0}, resume=str(run))
    with pytest.raises(CheckpointError, match="abandon"):  # the run holds 8000; resume it
        train(Config(**CARTPOLE, resume=str(run / "checkpoints" / "4000")), progress=False)
    assert train(cfg, progress=False).steps == 8000
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_a_run_named_like_a_step_is_a_run(straight, tmp_path):
    """``--run-name 42``: its directory sits in ``<out>/<env>``, which orbax would take for a
    directory of steps; it is still read as a run directory (its latest checkpoint)."""
    runs = tmp_path / "CartPole-v1"
    shutil.copytree(straight.run_dir, runs / "42")
    shutil.copytree(straight.run_dir, runs / "4000")  # even one named like a saved step
    for name in ("42", "4000"):
        assert locate(str(runs / name)) == (str(runs / name / "checkpoints"), 8000)
        assert read_meta(str(runs / name))[2] == 8000
    os.makedirs(runs / "7" / "checkpoints")  # a run that saved nothing yet
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        locate(str(runs / "7"))
    step = runs / "42" / "checkpoints" / "4000"
    assert locate(str(step)) == (str(runs / "42" / "checkpoints"), 4000)


def test_run_lock_admits_one_of_many_starters(tmp_path):
    """Starters racing for a run, over a lock file left by a killed process: at no moment
    do two hold the lock, and in each round one of them gets it. Threads contend as
    processes do (each opens its own file description)."""
    from paac.run.rundir import RunLock

    lock_file = tmp_path / ".lock"
    holding, most, won, errors = 0, 0, [], []
    count = threading.Lock()

    def start(barrier):
        nonlocal holding, most
        barrier.wait()
        try:
            with RunLock(str(tmp_path)):
                with count:
                    holding += 1
                    most = max(most, holding)
                won.append(lock_file.read_text())
                time.sleep(0.02)
                with count:
                    holding -= 1
        except ConfigError as e:
            errors.append(str(e))

    for _ in range(20):
        lock_file.write_text("999999999")  # left by a killed process
        won.clear()
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=start, args=(barrier,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert won and won[0] == str(os.getpid())
        assert not lock_file.exists()
    assert most == 1
    assert all("being trained by" in e for e in errors)


def test_run_lock_leaves_others_lock_files_alone(tmp_path, monkeypatch):
    """A lock file deleted by hand and made again by another process is not ours to remove;
    a lock whose pid cannot be written is let go of."""
    from paac.run.rundir import RunLock

    lock = RunLock(str(tmp_path)).__enter__()
    os.remove(tmp_path / ".lock")
    (tmp_path / ".lock").write_text("12345")  # another process's, now
    lock.__exit__()
    assert (tmp_path / ".lock").read_text() == "12345"
    os.remove(tmp_path / ".lock")
    with RunLock(str(tmp_path)):
        os.remove(tmp_path / ".lock")  # gone by the end: nothing to remove, no error
    assert not (tmp_path / ".lock").exists()

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "write", full_disk)
        with pytest.raises(OSError, match="No space"):
            RunLock(str(tmp_path)).__enter__()
    with RunLock(str(tmp_path)):  # the failed attempt holds nothing
        pass


def test_run_lock_without_file_locks(tmp_path, monkeypatch, capsys):
    """On a file system without locks the run trains unlocked, and says so."""
    import fcntl

    from paac.run.rundir import RunLock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunLock(str(tmp_path)):
        pass
    assert "cannot lock" in capsys.readouterr().err


FIXTURE = os.path.join(ROOT, "tests", "fixtures", "cartpole-mlp-a8126b7")


@pytest.mark.slow
def test_a_checkpoint_of_the_flat_package_evaluates_and_resumes_exactly(straight, tmp_path):
    """A run written by paac before its modules moved into layers (commit a8126b7: the
    CARTPOLE run stopped at its 4000-step checkpoint) still evaluates, and resumed to 8000
    equals today's straight run: the checkpoint format did not change."""
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    meta, _, step = read_meta(str(run))
    assert step == 4000 and meta["format_version"] == 2
    assert {k: meta["config"][k] for k in CARTPOLE} == CARTPOLE
    stats = evaluate(str(run), episodes=2, greedy=True, write_json=False)
    assert stats["step"] == 4000 and len(stats["scores"]) == 2
    resumed = train(Config(**CARTPOLE, resume=str(run)), progress=False)
    assert resumed.steps == 8000 and resumed.run_dir == str(run)
    # Its first 4000 steps were computed on another CPU: 4000 more steps grow their float
    # rounding (seen: up to 3.2e-6 on weights of about 0.1, on a CPU without AVX-512), far
    # below what a checkpoint read in another layout or format would give.
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
    # The rows up to 4000 were written by a8126b7's build: the same numbers to the last few
    # digits (the explained variance, a ratio of two variances, is the most sensitive).
    assert_same_logs(run, straight.run_dir, rtol=1e-4)


@pytest.mark.slow
def test_stop_at_keeps_the_schedule_and_resumes_to_the_straight_run(straight, tmp_path, capsys):
    """--stop-at ends a run early on the whole run's learning-rate schedule; resumed without
    it, the run goes on to the end and equals the run that never stopped."""
    cfg = dict(CARTPOLE, out_dir=str(tmp_path))
    early = train(Config(**cfg, run_name="early", stop_at=3990), progress=False)
    assert early.steps == 4000  # the update that crosses 3,990
    lr = float(_rows(early.run_dir)[-1]["lr"])
    assert lr == float([r for r in _rows(straight.run_dir) if r["step"] == "4000"][0]["lr"])
    assert lr > 0.004  # halfway down the 8,000-step anneal of 0.01, not at its end
    again = train(Config(**cfg, run_name="early", stop_at=3990, resume=early.run_dir))
    assert again.steps == 4000 and "already finished at step 4,000" in capsys.readouterr().err
    resumed = train(Config(**cfg, resume=early.run_dir), progress=False)
    assert resumed.steps == 8000
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert_same_logs(early.run_dir, straight.run_dir)
