"""Several devices and processes compute the update of one device (issue #7).

The device count of a JAX process is fixed when it starts, so the two-device runs happen
in a subprocess with ``--xla_force_host_platform_device_count=2`` (this test process has
one CPU device), and the two-process run is two processes of ``experiments/control.py``
under ``jax.distributed`` on localhost. Each is compared with the same run computed here,
independently, on one device in one process.
"""

import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from paac.algorithms.build import init_state, make_algorithm, network_for, state_template
from paac.core.config import Config, ConfigError
from paac.core.types import Batch, EnvSpec
from paac.run.distributed import DataParallel, distributed_settings
from paac.run.train import train
from paac.tools.cli import parse_config
from tests.conftest import ROOT, script_env

CARTPOLE = dict(
    env="CartPole-v1", arch="mlp", n_envs=8, t_max=5, total_steps=4000, lr=0.01,
    entropy_coef=0.01, checkpoint_interval=2000, log_interval=400,
)  # fmt: skip
SARSA = dict(
    CARTPOLE, algo="sarsa", total_steps=2000, target_interval=400, epsilon_anneal_steps=1000
)
NORMALISED = dict(CARTPOLE, normalize_obs=True, normalize_reward=True)
LSTM = dict(CARTPOLE, lstm_cells=16)
GAUSSIAN = dict(CARTPOLE, env="InvertedPendulum-v4", normalize_obs=True)
TOL = dict(rtol=1e-5, atol=1e-6)


def _env(**extra) -> dict:
    env = script_env(dict(os.environ, PAAC_XLA_CPU_YNN="0", **extra))
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_close(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, **TOL)


def _rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_rows(ours: list[dict], theirs: list[dict]) -> None:
    """The same logged numbers: counters and scores exactly, losses to float rounding."""
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        for col in ("update", "score", "score_last20", "episodes", "episode_length", "lr"):
            assert a[col] == b[col], (a["step"], col)
        for col in ("policy_loss", "value_loss", "entropy", "grad_norm"):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4), (a["step"], col)


def _atari_updates(devices: int | None, updates: int = 2) -> list[np.ndarray]:
    """Learner state after ``updates`` nips-CNN a2c updates on synthetic Atari batches
    (8 environments x 5 steps, random frames, terminations, truncations, reset steps)."""
    t, n = 5, 8
    spec = EnvSpec((4, 84, 84), np.dtype("uint8"), 6, True)
    cfg = Config(env="Pong-v5", arch="nips", n_envs=n, t_max=t, total_steps=1000, devices=devices)
    network = network_for(cfg, spec)
    algorithm = make_algorithm(cfg, network, spec)
    dp = DataParallel(n, devices)
    state = dp.replicate(init_state(cfg, network, spec, jax.random.PRNGKey(3)))
    update = dp.jit_update(algorithm.update)
    rng = np.random.default_rng(7)
    for _ in range(updates):
        done = rng.random((t, n)) < 0.15
        batch = Batch(
            obs=rng.integers(0, 256, (t, n, 4, 84, 84), dtype=np.uint8),
            action=rng.integers(0, 6, (t, n)).astype(np.int32),
            reward=rng.choice([-1.0, 0.0, 1.0], (t, n)).astype(np.float32),
            terminated=done & (rng.random((t, n)) < 0.7),
            truncated=done & (rng.random((t, n)) >= 0.7),
            mask=np.concatenate([np.ones((1, n)), 1.0 - done[:-1]]).astype(np.float32),
            bootstrap_obs=rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8),
        )
        state, _ = update(state, batch)
    return _leaves(state)


def _shard_shapes() -> dict[str, list]:
    """What each device holds of the observations inside the jitted act and update of a
    ``DataParallel(8)`` (all devices): shapes as the compiled computations see them."""
    dp, t, n = DataParallel(8), 5, 8
    seen: dict[str, list] = {}

    def record(name, x):
        shape = x.shape
        jax.debug.inspect_array_sharding(
            x, callback=lambda s: seen.setdefault(name, list(s.shard_shape(shape)))
        )

    def act(state, obs, key):
        record("act_obs", obs)
        return obs[:, 0].astype(np.int32), key

    def update(state, batch):
        record("update_obs", batch.obs)
        record("update_bootstrap_obs", batch.bootstrap_obs)
        return state, {}

    state, key = dp.replicate({"w": np.zeros(3, np.float32)}), jax.random.PRNGKey(0)
    dp.jit_act(act)(state, np.zeros((n, 4), np.float32), key)
    zeros = np.zeros((t, n), np.float32)
    batch = Batch(
        obs=np.zeros((t, n, 4), np.float32),
        action=zeros.astype(np.int32),
        reward=zeros,
        terminated=zeros.astype(bool),
        truncated=zeros.astype(bool),
        mask=zeros,
        bootstrap_obs=np.zeros((n, 4), np.float32),
    )
    dp.jit_update(update)(state, batch)
    return seen


def two_device_results(out: str) -> None:
    """Run in the two-device subprocess: the runs to compare, and the errors, into ``out``."""
    assert jax.device_count() == 2
    results: dict = {}
    runs = (("a2c", CARTPOLE), ("sarsa", SARSA), ("norm", NORMALISED), ("lstm", LSTM),
            ("gaussian", GAUSSIAN))  # fmt: skip
    for name, cfg in runs:
        run = train(Config(**cfg, devices=2, out_dir=out, run_name=name), progress=False)
        results[name] = dict(run_dir=run.run_dir, episodes=run.episodes)
        results[name]["devices"] = len(jax.tree.leaves(run.state)[0].sharding.device_set)
        np.savez(os.path.join(out, f"{name}.npz"), *_leaves(run.state))
    np.savez(os.path.join(out, "atari.npz"), *_atari_updates(2))
    results["shards"] = _shard_shapes()
    # An async emulation with --devices left at its default runs on one device.
    a3c = dict(CARTPOLE, total_steps=400, mode="a3c", workers=2)
    run = train(Config(**a3c, out_dir=out, run_name="a3c"), progress=False)
    results["a3c"] = dict(
        steps=run.steps, devices=len(jax.tree.leaves(run.state)[0].sharding.device_set)
    )
    errors = {}
    for key, make in (
        ("indivisible", lambda: DataParallel(3)),  # all (2) devices by default
        ("too_many", lambda: DataParallel(8, 4)),
    ):
        try:
            make()
        except ConfigError as e:
            errors[key] = str(e)
    results["errors"] = errors
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f)


def run_on_two_devices(code: str) -> None:
    """Runs Python ``code`` in a subprocess whose JAX has two CPU devices; it must succeed."""
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("two-devices"))
    run_on_two_devices(
        f"from tests.test_distributed import two_device_results; two_device_results({out!r})"
    )
    with open(os.path.join(out, "results.json")) as f:
        return out, json.load(f)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The a2c CartPole run on this process's one device."""
    out = tmp_path_factory.mktemp("one-device")
    assert jax.device_count() == 1
    return train(Config(**CARTPOLE, out_dir=str(out), run_name="a2c"), progress=False)


@pytest.mark.slow
def test_two_devices_train_as_one(two_devices, one_device, tmp_path):
    """a2c and Sarsa on CartPole, 8 environments split over 2 devices, equal the runs on one
    device: parameters, optimiser state, target network and the logged numbers."""
    out, results = two_devices
    assert results["a2c"]["devices"] == results["sarsa"]["devices"] == 2
    # Each device acts on and learns from its own half of the environments.
    shards = results["shards"]
    assert shards == {"act_obs": [4, 4], "update_obs": [5, 4, 4], "update_bootstrap_obs": [4, 4]}
    theirs = np.load(os.path.join(out, "a2c.npz"))
    _assert_close([theirs[k] for k in theirs.files], _leaves(one_device.state))
    assert results["a2c"]["episodes"] == one_device.episodes > 0
    _assert_same_rows(_rows(results["a2c"]["run_dir"]), _rows(one_device.run_dir))
    sarsa = train(Config(**SARSA, out_dir=str(tmp_path), run_name="sarsa"), progress=False)
    assert set(sarsa.state.extra) == {"target_params", "final_epsilon"}
    theirs = np.load(os.path.join(out, "sarsa.npz"))
    _assert_close([theirs[k] for k in theirs.files], _leaves(sarsa.state))
    assert results["sarsa"]["episodes"] == sarsa.episodes > 0


@pytest.mark.slow
def test_two_devices_normalise_as_one(two_devices, tmp_path):
    """The normalisation statistics are gathered from all environments: two devices hold
    the same statistics as one device, and the same parameters."""
    out, results = two_devices
    one = train(Config(**NORMALISED, out_dir=str(tmp_path), run_name="norm"), progress=False)
    assert set(one.state.norm) == {"obs", "reward", "return"}
    assert results["norm"]["devices"] == 2
    theirs = np.load(os.path.join(out, "norm.npz"))
    _assert_close([theirs[k] for k in theirs.files], _leaves(one.state))
    _assert_same_rows(_rows(results["norm"]["run_dir"]), _rows(one.run_dir))


@pytest.mark.slow
def test_two_devices_carry_the_lstm_memory_as_one(two_devices, tmp_path):
    """The recurrent memory is sharded with its environments: an LSTM run on two devices
    equals the run on one."""
    out, results = two_devices
    one = train(Config(**LSTM, out_dir=str(tmp_path), run_name="lstm"), progress=False)
    assert results["lstm"]["devices"] == 2
    theirs = np.load(os.path.join(out, "lstm.npz"))
    _assert_close([theirs[k] for k in theirs.files], _leaves(one.state))
    _assert_same_rows(_rows(results["lstm"]["run_dir"]), _rows(one.run_dir))


@pytest.mark.slow
def test_two_devices_take_continuous_actions_as_one(two_devices, tmp_path):
    """A Gaussian policy's actions are split with their environments: an InvertedPendulum
    run on two devices equals the run on one."""
    out, results = two_devices
    one = train(Config(**GAUSSIAN, out_dir=str(tmp_path), run_name="gaussian"), progress=False)
    assert "log_std" in one.state.params["params"]
    assert results["gaussian"]["devices"] == 2
    theirs = np.load(os.path.join(out, "gaussian.npz"))
    _assert_close([theirs[k] for k in theirs.files], _leaves(one.state))
    _assert_same_rows(_rows(results["gaussian"]["run_dir"]), _rows(one.run_dir))


@pytest.mark.slow
def test_two_devices_atari_cnn_update(two_devices):
    """The nips-CNN update on Atari-shaped batches split over two devices equals one device's."""
    out, _ = two_devices
    theirs = np.load(os.path.join(out, "atari.npz"))
    ours = _atari_updates(None)
    _assert_close([theirs[k] for k in theirs.files], ours)
    # Not vacuous: the updates moved the parameters away from their initial values.
    spec = EnvSpec((4, 84, 84), np.dtype("uint8"), 6, True)
    cfg = Config(env="Pong-v5", arch="nips", n_envs=8, t_max=5, total_steps=1000)
    network = network_for(cfg, spec)
    assert jax.tree.structure(state_template(cfg, network, spec)).num_leaves == len(ours)
    first = _leaves(init_state(cfg, network, spec, jax.random.PRNGKey(3)))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(first, ours, strict=True)) > 1e-3


@pytest.mark.slow
def test_checkpoint_of_two_devices_resumes_on_one(two_devices, one_device, tmp_path):
    out, results = two_devices
    run = tmp_path / "resumed"
    shutil.copytree(results["a2c"]["run_dir"], run)
    shutil.rmtree(run / "checkpoints" / "4000")
    with open(run / "config.json") as f:
        assert json.load(f)["devices"] == 2
    # On the command line the saved run's config is the default, but not where it ran.
    assert parse_config(Config(), ["--resume", str(run)]).devices is None
    resumed = train(Config(**CARTPOLE, resume=str(run)), progress=False)  # devices: all (1)
    assert resumed.steps == 4000
    _assert_close(_leaves(resumed.state), _leaves(one_device.state))
    _assert_same_rows(_rows(str(run)), _rows(one_device.run_dir))


@pytest.mark.slow
def test_async_mode_defaults_to_one_device(two_devices):
    _, results = two_devices
    assert results["a3c"] == {"steps": 400, "devices": 1}


@pytest.mark.slow
def test_device_errors_are_clear(two_devices):
    _, results = two_devices
    errors = results["errors"]
    assert errors["indivisible"].startswith("--n-envs=3 is invalid: must be divisible by the 2")
    assert "--devices" in errors["indivisible"]
    assert errors["too_many"].startswith("--devices=4 is invalid: only 2 cpu devices")
    with pytest.raises(ConfigError, match=r"--devices=2 is invalid: only 1 cpu devices"):
        train(Config(**CARTPOLE, devices=2), progress=False)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(devices=3), "--devices=3 is invalid: must divide --n-envs=8"),
        (dict(devices=0), "--devices=0 is invalid: must be an integer >= 1"),
        (dict(num_processes=3), "--num-processes=3 is invalid: must divide --n-envs=8"),
        (dict(num_processes=2, process_id=2), "--process-id=2 is invalid: must be below"),
        (dict(devices=2, num_processes=4, n_envs=16), "--devices=2 is invalid: must be a multiple"),
        (dict(coordinator_address="localhost"), "--coordinator-address='localhost' is invalid"),
        (dict(coordinator_address="h:99999"), "must be HOST:PORT"),
        (dict(devices=2, mode="a3c"), "--mode='a3c' is invalid: the async modes run on one"),
    ],
)
def test_impossible_placements_are_refused(fields, message):
    with pytest.raises(ConfigError) as err:
        Config(**{**CARTPOLE, **fields})
    assert message in str(err.value)


@pytest.mark.slow
def test_bad_coordinator_address_is_one_line():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "control.py"),
         "--coordinator-address", "nohost", "--num-processes", "2", "--process-id", "0"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("paac: error: --coordinator-address='nohost' is invalid")


def test_multi_process_settings(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    assert distributed_settings() is None
    assert distributed_settings(num_processes=1) is None
    with pytest.raises(ConfigError, match="--num-processes=2 is invalid without"):
        distributed_settings(num_processes=2, process_id=0)
    with pytest.raises(ConfigError, match="--process-id=1 is invalid without"):
        distributed_settings(process_id=1)
    with pytest.raises(ConfigError, match="needs --process-id"):
        distributed_settings("10.0.0.1:1234", num_processes=2)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed_settings() == ("10.0.0.1:1234", 2, 1)
    assert distributed_settings(process_id=0) == ("10.0.0.1:1234", 2, 0)  # flags win
    monkeypatch.setenv("JAX_NUM_PROCESSES", "0")
    with pytest.raises(ConfigError, match=r"--num-processes=0 is invalid \(from the flag or "):
        distributed_settings()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    with pytest.raises(ConfigError, match=r"\$JAX_PROCESS_ID='one' is invalid"):
        distributed_settings()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out_dir, run_name: str, *args: str, by_env: bool = False) -> list[subprocess.Popen]:
    """``experiments/control.py`` as processes 0 and 1 of a run on localhost, told so by
    the flags, or ``by_env`` by JAX's environment variables alone."""
    port = _free_port()
    script = [sys.executable, os.path.join(ROOT, "experiments", "control.py")]
    common = [*script, "--out-dir", str(out_dir), "--run-name", run_name, *args]
    procs = []
    for i in range(2):
        env, argv = _env(), list(common)
        settings = {
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i),
        }
        if by_env:
            env.update(settings)
        else:
            argv += ["--coordinator-address", settings["JAX_COORDINATOR_ADDRESS"]]
            argv += ["--num-processes", "2", "--process-id", str(i)]
        procs.append(
            subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return procs


def _finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    errs = []
    try:
        for p in procs:
            errs.append(p.communicate(timeout=timeout)[1])
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return errs


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The CartPole run of ``one_device`` as two processes x one CPU device under
    jax.distributed, 4 environments each: its run directory and the processes' stderr."""
    out = tmp_path_factory.mktemp("two-processes")
    procs = _launch(
        out, "mp", "--n-envs", "8", "--total-steps", "4000",
        "--checkpoint-interval", "2000", "--log-interval", "400",
    )  # fmt: skip
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0], errs
    return str(out / "CartPole-v1" / "mp"), errs


def _final_state(run_dir: str):
    from paac.run.checkpoints import locate, restore
    from paac.run.envs import env_spec, make_env

    directory, step = locate(run_dir)
    spec = env_spec(make_env("CartPole-v1", 1, 0))
    cfg = Config(**CARTPOLE)
    return restore(directory, step, state_template(cfg, network_for(cfg, spec), spec)).state


@pytest.mark.slow
def test_two_processes_train_as_one(two_processes, one_device):
    """Two processes with 4 environments each equal one process with 8: checkpoints
    (written together), parameters and logs; process 0 alone writes the logs and the config."""
    run_dir, errs = two_processes
    assert "paac: finished at step 4,000" in errs[0] and "paac: finished" not in errs[1]
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    assert (saved["num_processes"], saved["process_id"]) == (2, 0)
    assert {k: saved[k] for k in CARTPOLE} == CARTPOLE
    assert len(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))) == 1
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["2000", "4000"]
    _assert_same_rows(_rows(run_dir), _rows(one_device.run_dir))
    _assert_close(_leaves(_final_state(run_dir)), _leaves(one_device.state))
    assert not os.path.exists(os.path.join(run_dir, ".lock"))


@pytest.mark.slow
def test_two_processes_resume_as_one(two_processes, one_device, tmp_path):
    """A two-process run that lost everything after its step-2000 checkpoint, resumed by
    both processes with ``--resume RUN_DIR`` alone (the saved config is the default), ends
    where the uninterrupted one-process run ends: parameters, optimiser state and logs."""
    run_dir = str(tmp_path / "CartPole-v1" / "mp")
    shutil.copytree(two_processes[0], run_dir)
    shutil.rmtree(os.path.join(run_dir, "checkpoints", "4000"))  # the crash came before it
    kept = os.stat(os.path.join(run_dir, "checkpoints", "2000")).st_mtime_ns
    procs = _launch(tmp_path, "mp", "--resume", run_dir)
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0], errs
    assert "paac: finished at step 4,000" in errs[0]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["2000", "4000"]
    assert os.stat(os.path.join(run_dir, "checkpoints", "2000")).st_mtime_ns == kept
    _assert_same_rows(_rows(run_dir), _rows(one_device.run_dir))
    _assert_close(_leaves(_final_state(run_dir)), _leaves(one_device.state))


@pytest.mark.slow
def test_async_mode_over_processes_set_by_environment_is_refused(tmp_path):
    """Processes given by $JAX_* alone (no flags for Config to check): the async mode is
    named, not a --devices the user never gave."""
    procs = _launch(tmp_path, "a3c", "--mode", "a3c", "--n-envs", "8", by_env=True)
    errs = _finish(procs, timeout=120)
    assert [p.returncode for p in procs] == [2, 2], errs
    for err in errs:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("paac: error: --mode='a3c' is invalid")
        assert "2 processes" in lines[0]
    assert not os.path.exists(tmp_path / "CartPole-v1" / "a3c")


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both(tmp_path):
    """SIGTERM to process 1 alone: both stop after the same update, save that checkpoint
    together, and exit 143."""
    procs = _launch(
        tmp_path, "sig", "--n-envs", "8", "--total-steps", "100000000",
        "--checkpoint-interval", "0", "--log-interval", "400",
    )  # fmt: skip
    run_dir = tmp_path / "CartPole-v1" / "sig"
    try:
        deadline = time.time() + 120
        while not ((run_dir / "metrics.csv").exists() and len(_rows(str(run_dir))) >= 2):
            assert time.time() < deadline and procs[0].poll() is None, "training never logged"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
    finally:
        errs = _finish(procs, timeout=120)
    assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, errs
    step = int(_rows(str(run_dir))[-1]["step"])
    assert os.listdir(run_dir / "checkpoints") == [str(step)]
    assert f"interrupted at step {step:,}" in errs[0]


@pytest.mark.slow
def test_two_processes_carry_the_lstm_memory_as_one(tmp_path):
    """An LSTM run as two processes (each stepping, and holding the memory of, 4 of the 8
    environments) equals the run in one process: logs and parameters."""
    procs = _launch(
        tmp_path, "mp", "--n-envs", "8", "--total-steps", "4000", "--lstm-cells", "16",
        "--checkpoint-interval", "2000", "--log-interval", "400",
    )  # fmt: skip
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0], errs
    one = train(Config(**LSTM, out_dir=str(tmp_path), run_name="one"), progress=False)
    run_dir = str(tmp_path / "CartPole-v1" / "mp")
    _assert_same_rows(_rows(run_dir), _rows(one.run_dir))
    from paac.run.checkpoints import locate, restore

    directory, step = locate(run_dir)
    spec = EnvSpec((4,), np.dtype("float32"), 2, False)
    cfg = Config(**LSTM)
    state = restore(directory, step, state_template(cfg, network_for(cfg, spec), spec)).state
    _assert_close(_leaves(state), _leaves(one.state))
