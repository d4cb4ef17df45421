"""Gymnasium tasks (``--env gymnasium:ID``): EnvPool's semantics through the adapter, the
spaces refused, learning, async vectorisation, evaluation, resume, devices, the tools.

The environments of ``tests/gym_envs.py`` are named by module path, as a user names theirs.
"""

import dataclasses
import json
import os
import shutil

import gymnasium
import jax
import numpy as np
import pytest
from PIL import Image

from paac import Config, ConfigError, train
from paac.run.envs import INFO_KEY, EpisodeStats, describe_space, env_spec, make_env
from paac.tools import cli
from paac.tools.benchmark import BenchConfig, format_table, run_benchmark
from paac.tools.compare import run_comparison, write_comparison
from paac.tools.evaluate import evaluate
from paac.tools.presets import CONTROL
from tests import gym_envs
from tests.conftest import run_script
from tests.test_checkpoints import CARTPOLE, assert_same_logs
from tests.test_distributed import (
    _assert_close,
    _assert_same_rows,
    _finish,
    _launch,
    _leaves,
    _rows,
    run_on_two_devices,
)

CORRIDOR = "gymnasium:tests.gym_envs:Corridor-v0"
LEFT, STAY, RIGHT = 0, 1, 2  # paac's actions; the corridor's are -1, 0, +1
GYM_CARTPOLE = dict(CARTPOLE, env="gymnasium:CartPole-v1")


def _cells(obs: np.ndarray) -> np.ndarray:
    return np.argmax(obs, axis=-1)


# --- EnvPool's semantics ---------------------------------------------------------------


def _check_next_step(env, n: int, steps: int, rng) -> tuple[int, int]:
    """Random actions; every step after a done step must be EnvPool's reset step: reward 0,
    neither flag, a fresh CartPole state (all of it within +-0.05). Returns the counts of
    terminations and truncations seen."""
    obs, _ = env.reset()
    done_before = np.zeros(n, bool)
    ends = [0, 0]
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(rng.integers(0, 2, n, dtype=np.int32))
        assert reward.dtype == np.float32 and term.dtype == trunc.dtype == bool
        assert not (reward[done_before] != 0).any()
        assert not (term | trunc)[done_before].any()
        assert (np.abs(obs[done_before]) <= 0.05).all()
        if "elapsed_step" in info:  # EnvPool's own mark of the same steps
            np.testing.assert_array_equal(info["elapsed_step"] == 0, done_before)
        ends[0] += int(term.sum())
        ends[1] += int(trunc.sum())
        done_before = term | trunc
    env.close()
    return ends[0], ends[1]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "gymnasium:CartPole-v1"])
def test_the_step_after_done_resets_as_in_envpool(env_id):
    """NextStep autoreset, as EnvPool does it, on the environments paac makes of each."""
    env = make_env(env_id, 8, 0, max_episode_steps=40)
    terminated, truncated = _check_next_step(env, 8, 300, np.random.default_rng(0))
    assert terminated > 10 and truncated > 0


def _walk(env, actions):
    """``(cells, reward, terminated, truncated)`` of each step with ``actions`` per step."""
    out = []
    for a in actions:
        obs, reward, term, trunc, _ = env.step(np.asarray(a, np.int32))
        out.append((_cells(obs), reward, term, trunc))
    return out


def _check_corridor_next_step(vectorization: str) -> None:
    """Two copies of two corridors with one seed. Walker 0 walks right to the goal
    (terminated); walker 1 stays put until the 30-step limit truncates it. The step after
    each is a reset step (reward 0, no flags, a fresh walker), and its action is ignored: the
    copies take different actions there and come out the same."""
    fresh = []
    for reset_action in (LEFT, RIGHT):
        env = make_env(CORRIDOR, 2, 7, vectorization=vectorization)
        obs, _ = env.reset()
        to_goal = 7 - _cells(obs)[0]
        steps = _walk(env, [[RIGHT, STAY]] * to_goal + [[reset_action, STAY]])
        steps += _walk(env, [[STAY, STAY]] * (gym_envs.TIME_LIMIT - len(steps)))
        steps += _walk(env, [[STAY, reset_action]])
        cells, reward, term, trunc = (np.stack(x) for x in zip(*steps, strict=True))
        env.close()
        assert term[:, 0].tolist() == [t == to_goal - 1 for t in range(len(steps))]
        assert reward[to_goal - 1, 0] == gym_envs.GOAL_REWARD
        assert trunc[:, 1].tolist() == [t == gym_envs.TIME_LIMIT - 1 for t in range(len(steps))]
        assert not term[:, 1].any() and not trunc[:, 0].any()
        at = [(to_goal, 0), (gym_envs.TIME_LIMIT, 1)]  # the reset steps
        for t, i in at:
            assert reward[t, i] == 0 and not term[t, i] and not trunc[t, i]
            assert cells[t, i] < gym_envs.LENGTH // 2
        fresh.append([int(cells[t, i]) for t, i in at])
    assert fresh[0] == fresh[1]


def test_corridor_next_step_semantics_sync():
    _check_corridor_next_step("sync")


@pytest.mark.slow
def test_corridor_next_step_semantics_async():
    _check_corridor_next_step("async")


def test_the_first_reset_seeds_environment_i_with_seed_plus_i():
    """As EnvPool seeds its pool; a seed wrapped into int32 (paac.run.resume.segment_env)
    is unwrapped, as Gymnasium's seeds are never negative."""
    for seed, unwrapped in ((11, 11), (-(2**31) + 5, 2**31 + 5)):
        obs, _ = make_env("gymnasium:CartPole-v1", 3, seed).reset()
        for i in range(3):
            single, _ = gymnasium.make("CartPole-v1").reset(seed=unwrapped + i)
            np.testing.assert_array_equal(obs[i], single)


def test_spaces_info_and_scores_of_the_adapter():
    """Discrete(3, start=-1) is paac's Discrete(3); float64 observations arrive as float32;
    the env's info (which has keys named 'reward' and 'terminated') is nested, so a score is
    the sum of the env's own rewards."""
    env = make_env(CORRIDOR, 4, 3)
    spec = env_spec(env)
    assert (spec.num_actions, spec.obs_shape, spec.obs_dtype) == (3, (8,), np.float32)
    assert env.action_space == gymnasium.spaces.Discrete(3)
    assert env.spec.config.max_episode_steps == gym_envs.TIME_LIMIT
    obs, info = env.reset()
    assert obs.dtype == np.float32 and set(info) == {INFO_KEY}
    start = _cells(obs)
    stats = EpisodeStats(4)
    done_before = np.zeros(4, bool)
    for _ in range(8):
        _, reward, term, trunc, info = env.step(np.full(4, RIGHT, np.int32))
        assert set(info) == {INFO_KEY}
        stats.step(reward, term, trunc, info, ~done_before)
        done_before = term | trunc
    scores, lengths = stats.drain()
    order = np.argsort(7 - start, kind="stable")  # the closest walkers finish first
    assert lengths == sorted(lengths) == list(7 - start[order])
    np.testing.assert_allclose(scores, 1 - 0.05 * (6 - start[order]), rtol=1e-6)
    assert make_env("gymnasium:CartPole-v1", 1, 0).spec.config.max_episode_steps == 500


def test_render_gives_rgb_frames_or_one_line():
    env = make_env(CORRIDOR, 2, 0, render_mode="rgb_array")
    env.reset()
    (frame,) = env.render(env_ids=[0])
    assert frame.shape == (16, 16 * gym_envs.LENGTH, 3) and frame.dtype == np.uint8
    env = make_env(CORRIDOR, 2, 0)  # no render_mode
    env.reset()
    with pytest.raises(ConfigError, match="renders no RGB frames in render_mode 'rgb_array'"):
        env.render(env_ids=[0])


# --- What is refused, in one line -------------------------------------------------------


def _main(args, monkeypatch) -> int:
    """``paac.tools.cli.main`` over CONTROL; its exit status, whether returned or raised."""
    monkeypatch.setenv("PAAC_XLA_CPU_YNN", "0")  # main() must not change this process's XLA
    try:
        return cli.main(CONTROL, args)
    except SystemExit as e:
        return e.code


def _error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("paac: error: "), lines
    return lines[0].removeprefix("paac: error: ")


@pytest.mark.parametrize(
    "env_id, space",
    [
        ("gymnasium:tests.gym_envs:Corridor-dict_obs-v0", "observation space Dict('cell': Box("),
        ("gymnasium:tests.gym_envs:Corridor-tuple_obs-v0", "observation space Tuple(Box("),
        ("gymnasium:tests.gym_envs:Corridor-multi_discrete-v0", "action space MultiDiscrete("),
        ("gymnasium:tests.gym_envs:Corridor-multi_binary-v0", "action space MultiBinary(2)"),
        (
            "gymnasium:tests.gym_envs:Corridor-box_matrix_action-v0",
            "action space Box(shape=(2, 2), dtype=float32) is not a vector",
        ),
    ],
)
def test_unsupported_spaces_are_one_line(env_id, space, tmp_path, monkeypatch, capsys):
    assert _main(["--env", env_id, "--out-dir", str(tmp_path)], monkeypatch) == 2
    line = _error_line(capsys)
    assert line.startswith(f"--env={env_id!r} is invalid: its {space}"), line
    assert not os.listdir(tmp_path)  # refused before a run directory was made


@pytest.mark.parametrize(
    "env_id, why",
    [
        ("gymnasium:NoSuch-v0", "'NoSuch-v0' is not a registered Gymnasium id"),
        ("gymnasium:tests.no_such_module:Maze-v0", "its module 'tests.no_such_module' cannot"),
        ("gymnasium:tests.gym_envs:Maze-v0", "'Maze-v0' is not a registered Gymnasium id after"),
        (
            "gymnasium:tests.gym_envs:Corridor-broken-v0",
            "Gymnasium could not create it (RuntimeError: the corridor's walls are missing)",
        ),
        (
            "gymnasium:tests.gym_envs:Corridor-same-step-v0",
            "its vector environment resets in autoreset mode SameStep; paac needs NextStep",
        ),
    ],
)
def test_unknown_and_unmakeable_environments_are_one_line(env_id, why, monkeypatch, capsys):
    assert _main(["--env", env_id], monkeypatch) == 2
    line = _error_line(capsys)
    assert line.startswith(f"--env={env_id!r} is invalid: {why}"), line


def test_flags_of_the_other_kind_of_task_are_refused():
    with pytest.raises(ConfigError, match=r"--num-threads=2 is invalid for --env='gymnasium:"):
        make_env("gymnasium:CartPole-v1", 2, 0, num_threads=2)
    with pytest.raises(ConfigError, match=r"--vectorization='async' is invalid for --env='Cart"):
        make_env("CartPole-v1", 2, 0, vectorization="async")


def test_spaces_are_described_in_one_short_line():
    wide = gymnasium.spaces.Box(-np.arange(300.0), np.arange(300.0) + 1)
    assert describe_space(wide) == "Box(shape=(300,), dtype=float32)"
    nested = gymnasium.spaces.Dict({f"k{i}": wide for i in range(20)})
    text = describe_space(nested)
    assert len(text) <= 120 and "\n" not in text and text.startswith("Dict('k0': Box(")


# --- Learning ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corridor(tmp_path_factory):
    """CONTROL on the corridor, stopped at a mean score of 0.6 (random: -1.1; best: 0.775)."""
    config = dataclasses.replace(
        CONTROL, env=CORRIDOR, total_steps=40_000, target_score=0.6, log_interval=2000,
        checkpoint_interval=0, out_dir=str(tmp_path_factory.mktemp("corridor")),
    )  # fmt: skip
    return train(config, progress=False)


@pytest.mark.slow
def test_a_custom_environment_learns(corridor):
    assert corridor.score_last20 >= 0.6 and corridor.steps < 40_000, corridor


def _late_mean_score(run_dir: str, after: int) -> float:
    """The mean score of the games that ended after step ``after``, from metrics.csv."""
    total = games = 0.0
    episodes_before = 0
    for row in _rows(run_dir):
        ended = int(row["episodes"]) - episodes_before
        episodes_before = int(row["episodes"])
        if int(row["step"]) > after and ended:
            total += float(row["score"]) * ended
            games += ended
    return total / games


@pytest.mark.slow
def test_gymnasium_cartpole_learns_like_envpools(tmp_path):
    """The same config and seed on EnvPool's CartPole-v1 and Gymnasium's: after 100k steps
    both play games of 80 steps or more (random play: 22), within a factor 1.5 of each other
    (measured over three seeds: 116-138 and 122-135)."""
    late = {}
    for env in ("CartPole-v1", "gymnasium:CartPole-v1"):
        config = dataclasses.replace(
            CONTROL, env=env, total_steps=100_000, checkpoint_interval=0, out_dir=str(tmp_path)
        )
        late[env] = _late_mean_score(train(config, progress=False).run_dir, after=75_000)
    print(late)
    assert min(late.values()) >= 80, late
    assert max(late.values()) / min(late.values()) < 1.5, late


# --- Async vectorisation ---------------------------------------------------------------


@pytest.mark.slow
def test_async_vectorisation_in_a_script_equals_sync(tmp_path):
    """experiments/control.py with --vectorization async steps the corridor, named by module
    path, in subprocesses (started without forking JAX's threads), restarted at each interval
    checkpoint; it logs the numbers of the same run stepped in this process."""
    flags = dict(
        env=CORRIDOR, n_envs=4, total_steps=2000, log_interval=400, checkpoint_interval=1000
    )
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    out = run_script(
        "control.py", *args, "--vectorization", "async", "--out-dir", str(tmp_path / "a"),
        "--run-name", "async", timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "os.fork" not in out.stderr and "Traceback" not in out.stderr
    config = dataclasses.replace(CONTROL, **flags, out_dir=str(tmp_path / "s"), run_name="sync")
    ours = train(config, progress=False)
    assert_same_logs(tmp_path / "a" / CORRIDOR / "async", ours.run_dir)
    saved = json.loads((tmp_path / "a" / CORRIDOR / "async" / "config.json").read_text())
    assert saved["vectorization"] == "async"


# --- Evaluation, resume, several devices -------------------------------------------------


@pytest.mark.slow
def test_evaluation_and_gif_of_a_custom_environment(corridor, tmp_path):
    gif = tmp_path / "corridor.gif"
    stats = evaluate(corridor.run_dir, episodes=6, greedy=True, video=str(gif), seed=3)
    assert stats["problems"] == [] and len(stats["scores"]) == 6
    # The env's own rewards: a straight walk scores 0.70 to 0.85 (its info's 'reward': 1000).
    assert stats["mean"] >= 0.6 and stats["max"] <= 0.85 + 1e-6, stats["scores"]
    with Image.open(gif) as im:
        assert im.n_frames == stats["video_game"][1] + 1 == stats["video_frames"]
        assert im.size == (16 * gym_envs.LENGTH, 16)
    assert stats["video_fps"] == 30


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """gymnasium:CartPole-v1, 8000 steps with checkpoints at 4000 and 8000."""
    out = tmp_path_factory.mktemp("straight")
    return train(Config(**GYM_CARTPOLE, out_dir=str(out), run_name="straight"), progress=False)


@pytest.mark.slow
def test_a_resumed_run_equals_the_straight_one(straight, tmp_path):
    """Stopped at its checkpoint at 4000 and resumed, the run is the one that never stopped:
    the environments restart at every interval checkpoint with the segment's seed."""
    run = tmp_path / "resumed"
    shutil.copytree(straight.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")
    resumed = train(Config(**GYM_CARTPOLE, resume=str(run)), progress=False)
    assert resumed.steps == straight.steps == 8000 and resumed.episodes == straight.episodes
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert_same_logs(run, straight.run_dir)


def two_device_run(out: str) -> None:
    """Run in the two-device subprocess: GYM_CARTPOLE split over two devices."""
    assert jax.device_count() == 2
    run = train(Config(**GYM_CARTPOLE, devices=2, out_dir=out, run_name="two"), progress=False)
    assert len(jax.tree.leaves(run.state)[0].sharding.device_set) == 2
    np.savez(os.path.join(out, "state.npz"), *_leaves(run.state))


@pytest.mark.slow
def test_two_devices_train_as_one(straight, tmp_path):
    run_on_two_devices(
        f"from tests.test_gymnasium import two_device_run; two_device_run({str(tmp_path)!r})"
    )
    theirs = np.load(tmp_path / "state.npz")
    _assert_close([theirs[k] for k in theirs.files], _leaves(straight.state))
    _assert_same_rows(_rows(str(tmp_path / GYM_CARTPOLE["env"] / "two")), _rows(straight.run_dir))


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path):
    """experiments/control.py as two processes under jax.distributed, 4 environments each
    (process 1's seeded from seed + 4, in every segment), equals its config trained here in
    one process with 8."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in GYM_CARTPOLE.items()]
    errs = _finish(_launch(tmp_path, "mp", *flags))
    run_dir = tmp_path / GYM_CARTPOLE["env"] / "mp"
    assert "paac: finished at step 8,000" in errs[0], errs
    saved = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert saved.num_processes == 2
    one = dataclasses.replace(
        saved, coordinator_address=None, num_processes=None, process_id=None,
        out_dir=str(tmp_path / "one"), run_name="one",
    )  # fmt: skip
    _assert_same_rows(_rows(str(run_dir)), _rows(train(one, progress=False).run_dir))


# --- The tools --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_the_benchmark_measures_gymnasium_tasks(vectorization):
    bench = BenchConfig(
        env="gymnasium:CartPole-v1", arch="mlp", n_envs=4, seconds=1.0, vectorization=vectorization
    )
    result = run_benchmark(bench)
    for key in ("env_sps", "act_sps", "update_sps", "train_sps"):
        assert result[key] > 0, (key, result)
    assert result["vectorization"] == vectorization
    assert f"raw Gymnasium {vectorization}, random actions" in format_table(result)


@pytest.mark.slow
def test_compare_runs_gymnasium_tasks(tmp_path):
    base = dataclasses.replace(
        CONTROL, env="gymnasium:CartPole-v1", n_envs=4, total_steps=400, log_interval=200,
        checkpoint_interval=0,
    )  # fmt: skip
    results = run_comparison(base, str(tmp_path), modes=("sync", "a3c"), seeds=(0,))
    assert [(r.mode, r.steps) for r in results] == [("sync", 400), ("a3c", 400)]
    for path in write_comparison(results, base, str(tmp_path)):
        assert os.path.getsize(path) > 0
