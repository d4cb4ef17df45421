"""Faults a long run meets: kill -9, non-finite updates, a full disk, too little memory."""

import contextlib
import errno
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.path.atomicity import TMP_DIR_SUFFIX

from paac import Config, EnvSpec, network_for, read_meta, state_template, train
from paac.algorithms.common import check_finite, nonfinite_terms, params_finite
from paac.core.config import ConfigError
from paac.run import memory
from paac.run.checkpoints import config_from_meta, locate, restore
from paac.tools.cli import NONFINITE_EXIT, WRITE_ERROR_EXIT
from tests.conftest import ROOT, script_env
from tests.test_checkpoints import CARTPOLE, _rows, assert_same_logs

train_module = importlib.import_module("paac.run.train")
run_setup = importlib.import_module("paac.run.setup")


def test_orbax_names_its_temporary_directories_as_paac_removes_them():
    from paac.run.checkpoints import TMP_SUFFIX

    assert TMP_SUFFIX == TMP_DIR_SUFFIX


def test_the_check_flags_each_nonfinite_metric_but_explained_variance():
    def update_giving(**metrics):
        return lambda state, batch: (state, {k: jnp.float32(v) for k, v in metrics.items()})

    state = {"w": jnp.ones(3)}
    for metrics, bad in (
        (dict(policy_loss=1.0, grad_norm=2.0, explained_variance=np.nan), []),
        (dict(policy_loss=np.inf, grad_norm=2.0, explained_variance=0.5), ["policy_loss"]),
        (dict(policy_loss=1.0, grad_norm=np.nan, value_loss=-np.inf), ["grad_norm", "value_loss"]),
    ):
        _, out, finite = jax.jit(check_finite(update_giving(**metrics)))(state, None)
        assert bool(finite) == (not bad) and sorted(nonfinite_terms(out, finite)) == bad
    assert bool(params_finite({"a": jnp.ones(2), "b": {"c": jnp.zeros((2, 2))}}))
    assert not bool(params_finite({"a": jnp.ones(2), "b": {"c": jnp.array([[0.0, np.nan]])}}))
    assert not bool(params_finite({"a": jnp.array([1.0, -np.inf])}))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """CARTPOLE trained straight to 8000 steps (checkpoints at 4000 and 8000)."""
    out = tmp_path_factory.mktemp("straight")
    return train(Config(**CARTPOLE, out_dir=str(out), run_name="straight"), progress=False)


@pytest.mark.slow
def test_a_nonfinite_update_is_not_kept_and_the_run_resumes_exactly(
    straight, tmp_path, monkeypatch, capsys
):
    """A rollout with an infinite reward (the 130th, after the checkpoint at 4000) makes that
    update's losses non-finite: the run stops there, keeps the state before it, writes no
    checkpoint of it, and a resume from the last checkpoint trains on as if nothing happened."""
    real_collect = train_module.collect_rollout
    rollouts = []

    def collect(*args, **kwargs):
        batch, carry = real_collect(*args, **kwargs)
        rollouts.append(1)
        if len(rollouts) == 130:
            batch = batch._replace(reward=np.full_like(batch.reward, np.inf))
        return batch, carry

    monkeypatch.setattr(train_module, "collect_rollout", collect)
    cfg = Config(**CARTPOLE, out_dir=str(tmp_path), run_name="inf")
    result = train(cfg, progress=False)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("paac: error: update 130 (step 5,200) made ") and "value_loss" in line
    assert "the last checkpoint, at step 4,000, is finite" in line and "docs/faults.md" in line
    assert result.nonfinite.startswith("update 130 (step 5,200)") and not result.interrupted
    assert result.steps == 129 * 40 and int(result.state.update_count) == 129
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.state))
    assert sorted(os.listdir(os.path.join(result.run_dir, "checkpoints"))) == ["4000"]
    assert int(_rows(result.run_dir)[-1]["step"]) == 5200  # its row is logged (then dropped)

    monkeypatch.setattr(train_module, "collect_rollout", real_collect)
    resumed = train(Config(**CARTPOLE, resume=result.run_dir), progress=False)
    assert resumed.nonfinite is None and resumed.steps == 8000
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert_same_logs(result.run_dir, straight.run_dir)


@pytest.mark.slow
def test_nonfinite_parameters_are_never_checkpointed(tmp_path, monkeypatch, capsys):
    """Parameters that go non-finite while the update's metrics stay finite (here: made so
    by the 100th update, whose step is the first checkpoint's) are caught before the save."""

    def poisoning(update):
        def poisoned(state, batch):
            new, metrics = update(state, batch)
            bad = new.update_count == 100
            params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new.params)
            return new._replace(params=params), metrics

        return check_finite(poisoned)

    monkeypatch.setattr(run_setup, "check_finite", poisoning)
    result = train(Config(**CARTPOLE, out_dir=str(tmp_path), run_name="nan"), progress=False)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "paac: error: update 100 (step 4,000) left the parameters non-finite; stopped without "
        "saving it (no checkpoint was saved)"
    ), line
    assert result.nonfinite is not None
    assert not os.path.exists(os.path.join(result.run_dir, "checkpoints", "4000"))


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_its_exit_status(tmp_path, script):
    """--lr 1e30: the second update's value loss and gradient overflow."""
    out = script(
        "control.py", "--lr", "1e30", "--clip-norm", "1e30", "--total-steps", "50000",
        "--out-dir", str(tmp_path), "--run-name", "r", timeout=120,
    )  # fmt: skip
    assert out.returncode == NONFINITE_EXIT == 3, out.stderr[-2000:]
    line = out.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert line.startswith("paac: error: update 2 (step 160) made ") and "grad_norm" in line
    assert "(no checkpoint was saved)" in line
    run = tmp_path / "CartPole-v1" / "r"
    assert not (run / "checkpoints").exists() or not os.listdir(run / "checkpoints")
    with pytest.raises(Exception, match="checkpoint"):
        read_meta(str(run))
    shutil.rmtree(run)


PONG = EnvSpec((4, 84, 84), np.dtype("uint8"), 6, True)


def test_rollout_buffers_are_counted_and_refused_when_too_large(monkeypatch):
    """A rollout of t_max x n_envs steps holds each step's observation (4 x 84 x 84 bytes on
    Atari), action (4), reward (4), two flags (1 each) and mask (4), and one bootstrap
    observation per environment; with the learner state it must fit in memory."""
    config = Config(t_max=5, n_envs=32)
    frame = 4 * 84 * 84
    assert memory.rollout_bytes(config, PONG, 32) == 5 * 32 * (frame + 14) + 32 * frame
    assert memory.rollout_bytes(config, PONG, 16) == 5 * 16 * (frame + 14) + 16 * frame
    network = network_for(config, PONG)
    memory.check_rollout_fits(config, network, PONG, 32)  # 4.6 MB: fits anywhere
    big = Config(t_max=100_000, n_envs=32)
    monkeypatch.setattr(memory, "host_memory", lambda: 64 * 2**30)
    with pytest.raises(ConfigError) as e:
        memory.check_rollout_fits(big, network, PONG, 32)
    assert str(e.value).startswith(
        "--t-max=100000 with --n-envs=32 is too large: a rollout's buffers take 84.2 GiB "
        "(100000 x 32 observations of 4 x 84 x 84 uint8)"
    ) and str(e.value).endswith("more than the 64.0 GiB of memory of the host")
    monkeypatch.setattr(memory, "host_memory", lambda: 2**40)  # 1 TiB: fits
    memory.check_rollout_fits(big, network, PONG, 32)


@pytest.mark.slow
def test_a_rollout_larger_than_memory_is_one_line_before_any_work(tmp_path, script):
    """The issue's case: --t-max 100000 on Pong was NumPy's 84 GiB allocation traceback."""
    out = script("atari.py", "--t-max", "100000", "--out-dir", str(tmp_path), timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paac: error: --t-max=100000 with --n-envs=32")
    assert not os.listdir(tmp_path)  # no run directory was made


# The soak's run: 50 interval checkpoints (exact resume), long enough to be killed often.
SOAK = [
    "--total-steps", "400000", "--checkpoint-interval", "8000", "--log-interval", "4000",
    "--run-name", "soak",
]  # fmt: skip


def _start(out_dir) -> tuple[subprocess.Popen, float]:
    """Resumes the soak's run, or starts it afresh when it has no checkpoint yet."""
    run = out_dir / "CartPole-v1" / "soak"
    checkpoints = run / "checkpoints"
    if checkpoints.exists() and any(p.isdigit() for p in os.listdir(checkpoints)):
        args = ["--resume", str(run)]
    else:
        shutil.rmtree(run, ignore_errors=True)  # killed before its first checkpoint
        args = [*SOAK, "--out-dir", str(out_dir)]
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "control.py"), *args],
        cwd=ROOT, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    return proc, started


def _wait_for(condition, proc, timeout=120.0) -> bool:
    """Polls ``condition`` every 2 ms until it holds (True) or ``proc`` ends (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("the run neither got there nor ended")


def _entries(path):
    return list(path.iterdir()) if path.exists() else []


def _final(run_dir: str):
    directory, step = locate(run_dir)
    cfg = config_from_meta(read_meta(run_dir)[0])
    spec = EnvSpec((4,), np.dtype("float32"), 2, False)
    restored = restore(directory, step, state_template(cfg, network_for(cfg, spec), spec))
    return step, (restored.state, restored.act_key)


@pytest.mark.slow
def test_kill_9_at_seeded_moments_then_resume_equals_the_run_never_killed(tmp_path):
    """SIGKILL at 12 seeded moments of one run, each followed by --resume (or a fresh start
    before the first checkpoint): 2 inside the first update's compilation, 3 while a
    checkpoint is being written, 7 at random moments of training. The run that finally
    ends has every logged number and its final parameters equal to one never killed."""
    straight = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "control.py"), *SOAK,
         "--out-dir", str(tmp_path / "straight")],
        cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    run = out / "CartPole-v1" / "soak"
    checkpoints = run / "checkpoints"
    rng = np.random.default_rng(0)
    kinds = ["compile"] * 2 + ["save"] * 3 + ["time"] * 7
    rng.shuffle(kinds)
    killed = {"compile": 0, "save": 0, "time": 0}
    for kind in kinds:
        proc, started = _start(out)
        # Each start writes config.json once it is set up, just before the first update
        # (which compiles); a run that ended instead is not killed.
        if _wait_for(
            lambda t=started: (
                (run / "config.json").exists() and os.path.getmtime(run / "config.json") >= t
            ),
            proc,
        ):
            if kind == "save":
                _wait_for(
                    lambda: any(TMP_DIR_SUFFIX in p.name for p in _entries(checkpoints)), proc
                )
            elif kind == "time":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=rng.uniform(0.2, 1.5))
        if proc.poll() is None:
            proc.kill()
            killed[kind] += 1
        proc.wait(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read()[-2000:]
    assert killed == {"compile": 2, "save": 3, "time": 7}, killed
    final, _ = _start(out)
    assert final.wait(timeout=300) == 0, final.stderr.read()[-2000:]

    assert_same_logs(run, tmp_path / "straight" / "CartPole-v1" / "soak")
    step, mine = _final(str(run))
    step_b, straight_state = _final(str(tmp_path / "straight" / "CartPole-v1" / "soak"))
    assert step == step_b == 400_000
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(straight_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _full_disk(path):
    return OSError(errno.ENOSPC, "No space left on device", path)


class _FillingFile:
    """A file that takes ``room`` writes (flushes included), then finds the disk full."""

    def __init__(self, file, room: int):
        self._file, self._room = file, room

    def __getattr__(self, name):
        return getattr(self._file, name)

    def _spend(self):
        self._room -= 1
        if self._room < 0:
            raise _full_disk(self._file.name)

    def write(self, data):
        self._spend()
        return self._file.write(data)

    def flush(self):
        self._spend()
        return self._file.flush()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["metrics.csv", "tensorboard"])
def test_a_full_disk_at_the_logs_stops_the_run_at_once(where, tmp_path, monkeypatch, capsys):
    """ENOSPC at metrics.csv or the TensorBoard file, after the checkpoint at 4000: the run
    stops at that row with one line naming the file and the error, the checkpoint is
    intact, and once there is room a resume finishes the run."""
    from paac.run import metrics

    if where == "metrics.csv":
        real_open = open

        def filling_open(path, *args, **kwargs):
            file = real_open(path, *args, **kwargs)
            return _FillingFile(file, 14) if str(path).endswith("metrics.csv") else file

        monkeypatch.setattr(metrics, "open", filling_open, raising=False)
    else:
        real_writer = metrics.RecordWriter

        def filling_writer(path):
            writer = real_writer(path)
            writer._writer = _FillingFile(writer._writer, 50)  # 4 writes, 1 flush a row
            return writer

        monkeypatch.setattr(metrics, "RecordWriter", filling_writer)
    cfg = Config(**CARTPOLE, out_dir=str(tmp_path), run_name="full")
    result = train(cfg, progress=False)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    name = "metrics.csv" if where == "metrics.csv" else "events.out.tfevents."
    assert line.startswith("paac: error: cannot write ") and name in line, line
    assert "(No space left on device); the run stopped at step " in line
    assert "(its last checkpoint, at step 4,000, is intact)" in line
    assert name in result.write_error and result.steps < 8000 and not result.interrupted
    assert sorted(os.listdir(os.path.join(result.run_dir, "checkpoints"))) == ["4000"]
    monkeypatch.undo()
    resumed = train(Config(**CARTPOLE, resume=result.run_dir), progress=False)
    assert resumed.write_error is None and resumed.steps == 8000


@pytest.mark.slow
def test_a_full_disk_at_config_json_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    from paac.run import metrics
    from paac.tools.cli import WRITE_ERROR_EXIT, main

    def full_disk(src, dst):
        raise _full_disk(dst)

    monkeypatch.setattr(metrics.os, "replace", full_disk)
    monkeypatch.setenv("PAAC_XLA_CPU_YNN", "0")  # main() must not change this process's XLA
    config = Config(**CARTPOLE, out_dir=str(tmp_path))
    assert main(config, ["--run-name", "r"]) == WRITE_ERROR_EXIT == 4
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("paac: error: cannot write ") and "config.json" in line
    assert line.endswith("(No space left on device); nothing was trained")
    assert not os.path.exists(tmp_path / "CartPole-v1" / "r" / "config.json")


def _small_filesystem(path, size: str) -> bool:
    """Mounts a tmpfs of ``size`` at ``path`` where this machine allows it (root, Linux)."""
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True, capture_output=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_on_a_real_filesystem(tmp_path, script):
    """A 150 KB tmpfs as --out-dir holds one CartPole checkpoint, not two: the second save
    fails with one line (no orbax traceback), leaves no temporary directory, keeps the first
    checkpoint, and the run resumes to its end once there is room."""
    disk = tmp_path / "small"
    if not _small_filesystem(disk, "150k"):
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    try:
        args = ["--total-steps", "100000", "--checkpoint-interval", "20000", "--run-name", "r"]
        out = script("control.py", *args, "--out-dir", str(disk), timeout=120)
        assert out.returncode == WRITE_ERROR_EXIT == 4, out.stderr[-3000:]
        errors = [ln for ln in out.stderr.replace("\r", "\n").splitlines() if ln.strip()]
        errors = [ln for ln in errors if "step/s" not in ln and "warning" not in ln]
        assert len(errors) == 1, errors[:20]
        run = disk / "CartPole-v1" / "r"
        # Whether the first or the second checkpoint meets the full disk depends on how
        # much the logs took by then.
        told = re.fullmatch(
            rf"paac: error: cannot write '{run}/checkpoints/(\d+)' \(No space left on device\); "
            r"the run stopped at step ([\d,]+) \((its last checkpoint, at step ([\d,]+), is "
            rf"intact|no checkpoint was saved)\); (make room, then resume it with --resume|make "
            rf"room); outputs in {run}",
            errors[0],
        )
        assert told, errors[0]
        assert int(told.group(1)) == int(told.group(2).replace(",", ""))
        intact = [] if told.group(4) is None else [told.group(4).replace(",", "")]
        assert os.listdir(run / "checkpoints") == intact  # no temporary directory either
        if not intact:
            return
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True, timeout=10)
        again = script("control.py", "--resume", str(run), timeout=120)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "100000" in os.listdir(run / "checkpoints")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=10)


@pytest.mark.slow
def test_a_gif_that_could_outgrow_memory_is_refused_and_the_games_still_played(
    tmp_path, monkeypatch
):
    """Evaluation's one memory-hungry buffer: a GIF holds every frame of its game. On a host
    with too little memory for a game as long as the time limit the GIF is refused after
    its first frame, the games are played and reported, and an MP4 is still recorded."""
    from paac.tools import evaluate as evaluation
    from tests.test_checkpoints import FIXTURE

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    monkeypatch.setattr(evaluation, "host_memory", lambda: 2**20)  # 1 MiB
    stats = evaluation.evaluate(str(run), episodes=2, video=str(tmp_path / "game.gif"))
    assert len(stats["scores"]) == 2 and stats["video"] is None
    (problem,) = stats["problems"]
    assert problem.startswith(f"cannot record the video '{tmp_path / 'game.gif'}': a GIF of a")
    assert "501 frames of 600 x 400" in problem and "record an .mp4" in problem
    assert not os.path.exists(tmp_path / "game.gif") and os.listdir(tmp_path) == ["run"]
    stats = evaluation.evaluate(str(run), episodes=1, video=str(tmp_path / "game.mp4"))
    assert stats["problems"] == [] and stats["video_frames"] > 0
