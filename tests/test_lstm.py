"""A3C-LSTM: the recurrent actor-critic in the one loop (sync, a3c, ga3c)."""

import csv
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paac.algorithms.a2c import make_a2c_grad, make_forward
from paac.algorithms.build import init_state, make_algorithm, network_for
from paac.core.config import Config, ConfigError
from paac.core.types import EnvSpec
from paac.run.envs import EpisodeStats, make_env
from paac.run.rollout import collect_rollout, initial_carry
from paac.run.train import train
from paac.tools.cli import main
from paac.tools.evaluate import evaluate
from paac.tools.presets import CONTROL
from tests.test_checkpoints import assert_resume_is_exact

SPEC = EnvSpec((4,), np.dtype("float32"), 2, False)
LSTM = dict(
    env="CartPole-v1", arch="mlp", n_envs=4, t_max=5, total_steps=4000, lr=0.01,
    entropy_coef=0.01, lstm_cells=16,
)  # fmt: skip


def _recording(act, seen: list):
    """``act`` that also keeps the logits the acting network computed (by recomputing them
    from the same parameters, observation, memory and start flags)."""

    def recorded(state, obs, key, memory, start):
        network, params = recorded.network, recorded.params(state)
        logits, values, _ = network.apply(params, obs[None], memory, start[None])
        seen.append((np.asarray(logits[0]), np.asarray(values[0])))
        return act(state, obs, key, memory, start)

    return recorded


@pytest.mark.parametrize("mode", ["sync", "ga3c"])
def test_the_update_recomputes_what_acting_computed(mode):
    """Logits and values recomputed by the update from the rollout's first memory equal
    those computed step by step while acting, across episode ends inside the rollouts
    (terminations and time-limit truncations) and across rollouts. In ga3c both are at the
    lagged acting parameters, which drive the acting memory (the update then takes its
    gradient at the current ones from the same memory)."""
    cfg = Config(**LSTM, mode=mode, policy_lag=0)
    network = network_for(cfg, SPEC)
    algorithm = make_algorithm(cfg, network, SPEC)
    state = init_state(cfg, network, SPEC, jax.random.PRNGKey(0))
    # Larger weights than at initialisation, so that the memory matters to the logits.
    state = state._replace(params=jax.tree.map(lambda p: p * 3.0, state.params))
    if mode == "ga3c":
        state = state._replace(extra={**state.extra, "acting": state.params})
    seen: list = []
    act = _recording(jax.jit(algorithm.act), seen)
    act.network = network
    act.params = lambda s: s.params if mode == "sync" else s.extra["acting"]
    env = make_env("CartPole-v1", 4, seed=3, max_episode_steps=6)
    obs, _ = env.reset()
    carry = initial_carry(jax.random.PRNGKey(1), obs, algorithm.memory)
    forward = jax.jit(make_forward(network))
    starts = 0
    for _ in range(4):
        seen.clear()
        batch, carry = collect_rollout(env, act, state, carry, EpisodeStats(4), cfg.t_max)
        logits, values, _ = forward(act.params(state), batch)
        np.testing.assert_allclose(logits, np.stack([s[0] for s in seen]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(values, np.stack([s[1] for s in seen]), rtol=1e-5, atol=1e-5)
        # An observation starts an episode exactly when the step before it was a reset step.
        np.testing.assert_array_equal(batch.start[1:], batch.mask == 0)
        starts += int(batch.start[1:].sum())
    env.close()
    assert starts >= 4  # episodes did end inside the rollouts


def test_a_start_zeroes_the_memory_and_nothing_else_does():
    network = network_for(Config(**LSTM), SPEC)
    params = init_state(Config(**LSTM), network, SPEC, jax.random.PRNGKey(0)).params
    obs = np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32)
    memory = jax.tree.map(lambda m: m + 0.5, network.initial_memory(2))
    start = np.array([[False, True], [False, False], [True, False]])
    logits, values, after = network.apply(params, obs, memory, start)
    # By hand: environment 0 starts again at step 2, environment 1 at step 0.
    for env_i, cut in ((0, 2), (1, 0)):
        mem = jax.tree.map(lambda m, i=env_i: m[i : i + 1], memory)
        never = np.zeros((1, 1), bool)
        for t in range(3):
            if t == cut:
                mem = network.initial_memory(1)
            lt, vt, mem = network.apply(params, obs[t : t + 1, env_i : env_i + 1], mem, never)
            np.testing.assert_allclose(lt[0, 0], logits[t, env_i], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(vt[0, 0], values[t, env_i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mem[1][0], after[1][env_i], rtol=1e-5, atol=1e-6)
    # Without a start the memory is carried: a different memory, different logits.
    other, _, _ = network.apply(params, obs, network.initial_memory(2), np.zeros((3, 2), bool))
    assert not np.allclose(other[:, 0], logits[:, 0])


def test_a3c_workers_act_with_their_own_copies():
    cfg = Config(**LSTM, mode="a3c", workers=2)
    network = network_for(cfg, SPEC)
    algorithm = make_algorithm(cfg, network, SPEC)
    state = init_state(cfg, network, SPEC, jax.random.PRNGKey(0))
    # Worker 1's copy differs from worker 0's: its policy head always picks action 1.
    workers = state.extra["workers"]
    head = workers["params"]["Dense_0"]
    head = {"kernel": head["kernel"].at[1].set(0.0), "bias": head["bias"].at[1].set(
        jnp.array([-50.0, 50.0]))}  # fmt: skip
    workers = {"params": {**workers["params"], "Dense_0": head}}
    state = state._replace(extra={**state.extra, "workers": workers})
    obs = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
    memory = algorithm.memory(4)
    start = np.ones(4, bool)
    actions, _, new_memory = jax.jit(algorithm.act)(state, obs, jax.random.PRNGKey(2), memory,
                                                   start)  # fmt: skip
    assert np.asarray(actions)[2:].tolist() == [1, 1]  # worker 1: environments 2 and 3
    # Each worker's memory is its own copy's: recomputed with that copy alone.
    for w in range(2):
        copy = jax.tree.map(lambda p, w=w: p[w], workers)
        rows = slice(2 * w, 2 * w + 2)
        _, _, mem = network.apply(copy, obs[None, rows], network.initial_memory(2),
                                  start[None, rows])  # fmt: skip
        np.testing.assert_allclose(new_memory[1][rows], mem[1], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [dict(), dict(mode="a3c", workers=2), dict(mode="ga3c"), dict(gae_lambda=0.95,
     normalize_obs=True)],
    ids=["sync", "a3c", "ga3c", "gae-normalised"],
)  # fmt: skip
def test_lstm_resume_is_exact(tmp_path, extra):
    cfg = dict(LSTM, n_envs=8, total_steps=8000, checkpoint_interval=4000, log_interval=700,
               **extra)  # fmt: skip
    assert_resume_is_exact(tmp_path, cfg)


@pytest.mark.slow
def test_lstm_and_feed_forward_checkpoints_do_not_mix(tmp_path, capsys):
    cfg = dict(LSTM, total_steps=400, out_dir=str(tmp_path))
    run = train(Config(**cfg, run_name="lstm"), progress=False)
    capsys.readouterr()
    assert main(CONTROL, ["--resume", run.run_dir, "--lstm-cells", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conflicts with --lstm-cells=0" in err[0]
    assert "trained with --lstm-cells=16" in err[0]


def test_bad_lstm_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"^--lstm-cells=-1 is invalid: must be an integer in"):
        Config(**dict(LSTM, lstm_cells=-1))
    for algo in ("nstep_q", "q", "sarsa"):
        with pytest.raises(ConfigError, match=f"--algo {algo} is feed-forward only"):
            Config(**dict(LSTM, algo=algo))


@pytest.mark.slow
def test_evaluation_carries_the_memory_through_whole_games(tmp_path):
    """Greedy evaluation of an LSTM agent equals a hand-written loop that carries the memory
    through each game and zeroes it after the reset step; a video records too."""
    cfg = Config(**dict(LSTM, total_steps=2000, out_dir=str(tmp_path), run_name="e"))
    run = train(cfg, progress=False)
    stats = evaluate(run.run_dir, episodes=3, greedy=True, seed=11, num_envs=1,
                     video=str(tmp_path / "lstm.gif"), write_json=False)  # fmt: skip
    assert stats["video_frames"] > 0 and not stats["problems"]
    network = network_for(cfg, SPEC)
    params = run.state.params
    env = make_env(cfg.env, 1, 11, training=False)
    obs, _ = env.reset()
    memory, start, done_before = network.initial_memory(1), np.ones(1, bool), np.zeros(1, bool)
    scores, total = [], 0.0
    while len(scores) < 3:
        logits, _, memory = network.apply(params, obs[None], memory, start[None])
        obs, reward, term, trunc, _ = env.step(np.asarray(jnp.argmax(logits[0], -1), np.int32))
        total += float(reward[0])
        if term[0] or trunc[0]:
            scores.append(total)
            total = 0.0
        start, done_before = done_before, term | trunc
    env.close()
    assert stats["scores"] == scores


class _LivesEnv:
    """Two environments: a game of 6 steps, a life lost after steps 2 and 4 (env 0 only)."""

    spec = types.SimpleNamespace(config=types.SimpleNamespace(max_episode_steps=0))

    def __init__(self):
        self.t = np.zeros(2, int)

    def reset(self):
        return np.zeros((2, 4), np.float32), {}

    def step(self, actions):
        self.t += 1
        over = self.t % 7 == 6
        lives = np.where([True, False], 3 - (self.t % 7) // 2, 3).clip(1)
        info = {"lives": lives, "reward": np.ones(2), "terminated": over}
        return np.zeros((2, 4), np.float32), np.ones(2), over, np.zeros(2, bool), info


def test_evaluation_zeroes_the_memory_at_lost_lives_when_trained_so():
    from paac.tools.evaluate import _play

    for life_resets in (True, False):
        starts = []

        def act(params, obs, key, memory, start, starts=starts):
            starts.append(np.asarray(start).copy())
            return np.zeros(2, np.int32), key, memory

        _play(_LivesEnv(), act, None, 4, 2, 0, None, None, (np.zeros((2, 1)),), life_resets)
        starts = np.array(starts)[:8]  # the start flags given with the observation after step i
        # Steps 1-6 are a game, step 7 the reset step, after which the next game starts.
        assert starts[:, 1].tolist() == [True] + [False] * 6 + [True]
        lost = (2, 4) if life_resets else ()  # environment 0 loses lives at steps 2 and 4
        want = [True] + [i in lost for i in range(1, 7)] + [True]
        assert starts[:, 0].tolist() == want, life_resets


def test_cartpole_without_velocities_keeps_position_and_angle():
    full, novel = make_env("CartPole-v1", 3, seed=4), make_env("CartPoleNoVel-v1", 3, seed=4)
    a, _ = full.reset()
    b, _ = novel.reset()
    np.testing.assert_array_equal(b, a[:, [0, 2]])
    for t in range(30):
        actions = np.array([t % 2, 1, 0], np.int32)
        a, ra, ta, _, _ = full.step(actions)
        b, rb, tb, _, _ = novel.step(actions)
        np.testing.assert_array_equal(b, a[:, [0, 2]])
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(ta, tb)
    assert novel.observation_space.shape == (2,)
    np.testing.assert_array_equal(novel.observation_space.high, full.observation_space.high[[0, 2]])
    full.close()
    novel.close()


def _rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _novel_run(tmp_path, seed: int, cells: int):
    args = ["--env", "CartPoleNoVel-v1", "--lstm-cells", str(cells), "--seed", str(seed),
            "--out-dir", str(tmp_path), "--run-name", f"l{cells}-s{seed}",
            "--target-score", "400", "--checkpoint-interval", "0"]  # fmt: skip
    assert main(CONTROL, args, presets=True) == 0
    config = Config.from_dict(json.loads((tmp_path / "CartPoleNoVel-v1" / f"l{cells}-s{seed}" /
                                          "config.json").read_text()))  # fmt: skip
    rows = _rows(tmp_path / "CartPoleNoVel-v1" / f"l{cells}-s{seed}")
    return config, rows


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_lstm_learns_cartpole_without_velocities(tmp_path, seed):
    """With its memory the agent reaches a last-20 mean of 400 within 1M steps."""
    config, rows = _novel_run(tmp_path, seed, 64)
    assert config.total_steps <= 1_000_000 and config.lstm_cells == 64
    assert config.preset == "CartPoleNoVel-v1" and config.t_max == 16  # the task's preset
    assert float(rows[-1]["score_last20"]) >= 400.0, rows[-1]
    assert int(rows[-1]["step"]) < 1_000_000


@pytest.mark.slow
def test_without_memory_cartpole_without_velocities_is_not_learnt(tmp_path):
    """The contrast: the feed-forward MLP, same settings and budget, stays below 200."""
    config, rows = _novel_run(tmp_path, 0, 0)
    assert config.lstm_cells == 0
    assert int(rows[-1]["step"]) == config.num_updates * config.batch_size  # the whole budget
    assert max(float(r["score_last20"]) for r in rows if r["score_last20"]) < 200.0


@pytest.mark.slow
def test_pong_with_an_lstm_of_256_cells_trains(script, tmp_path):
    """The A3C-LSTM network on Atari: `atari.py --env Pong-v5 --lstm-cells 256` runs (two
    updates of the defaults' n_e 32 x t_max 5)."""
    out = script(
        "atari.py", "--env", "Pong-v5", "--lstm-cells", "256", "--total-steps", "320",
        "--out-dir", str(tmp_path), "--run-name", "lstm", timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "Pong-v5" / "lstm"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["lstm_cells"] == 256 and config["arch"] == "nips"
    assert _rows(run_dir)[-1]["step"] == "320"


@pytest.mark.parametrize("gae_lambda", [None, 0.9])
def test_lstm_targets_are_the_returns_of_its_own_values(gae_lambda):
    """The recurrent update's value targets are n-step returns (or GAE) of the values it
    recomputed: checked against a plain NumPy loop over the rollout."""
    cfg = Config(**LSTM, gae_lambda=gae_lambda)
    network = network_for(cfg, SPEC)
    state = init_state(cfg, network, SPEC, jax.random.PRNGKey(0))
    env = make_env("CartPole-v1", 4, seed=5, max_episode_steps=4)
    algorithm = make_algorithm(cfg, network, SPEC)
    obs, _ = env.reset()
    carry = initial_carry(jax.random.PRNGKey(1), obs, algorithm.memory)
    act = jax.jit(algorithm.act)
    for _ in range(2):
        batch, carry = collect_rollout(env, act, state, carry, EpisodeStats(4), cfg.t_max)
    env.close()
    _, (_, values, returns) = jax.jit(make_a2c_grad(cfg, network))(state.params, batch)
    _, _, v_boot = make_forward(network)(state.params, batch)
    v, v_boot = np.asarray(values, np.float64), np.asarray(v_boot, np.float64)
    lam = 1.0 if gae_lambda is None else gae_lambda
    want = np.zeros_like(v)
    for i in range(4):
        adv = 0.0
        for t in reversed(range(cfg.t_max)):
            nxt = v_boot[i] if t == cfg.t_max - 1 else v[t + 1, i]
            discount = 0.0 if batch.terminated[t, i] else cfg.gamma
            delta = batch.reward[t, i] + discount * nxt - v[t, i]
            done = batch.terminated[t, i] or batch.truncated[t, i]
            # At a done step the next value is the final observation's (truncation) or 0.
            adv = delta + (0.0 if done else discount * lam * adv)
            want[t, i] = adv + v[t, i]
    real = batch.mask > 0
    np.testing.assert_allclose(np.asarray(returns)[real], want[real], rtol=1e-5, atol=1e-5)
