"""Continuous actions: the Gaussian policy, the environment boundary, and every part of the
loop that takes them (rollout, modes, devices, checkpoints, evaluation, tools)."""

import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium import spaces

from paac.algorithms.a2c import make_a2c_grad, make_forward
from paac.algorithms.build import init_state, make_algorithm, network_for, state_template
from paac.algorithms.common import make_act, make_greedy_act
from paac.core.config import Config, ConfigError
from paac.core.types import EnvSpec
from paac.nets.networks import MIN_VARIANCE, make_network
from paac.ops.distributions import CATEGORICAL, GAUSSIAN, gaussian_split
from paac.ops.losses import a2c_loss
from paac.run.agents import Agent, check_agent_spec
from paac.run.checkpoints import CheckpointError, restore
from paac.run.envs import ActionBounds, EpisodeStats, env_spec, make_env, render_problem
from paac.run.rollout import collect_rollout, initial_carry
from paac.run.train import train
from paac.tools.cli import main
from paac.tools.evaluate import evaluate
from paac.tools.presets import CONTINUOUS, PRESETS
from tests.test_checkpoints import assert_resume_is_exact

SPEC = EnvSpec((4,), np.dtype("float32"), 1, False, True)  # InvertedPendulum-v4's
SMALL = dict(
    env="InvertedPendulum-v4", arch="mlp", n_envs=4, t_max=5, total_steps=4000, lr=0.01,
    entropy_coef=0.01, normalize_obs=True,
)  # fmt: skip


# --- The Gaussian distribution, against closed forms written here -------------------------


def _normal_logpdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def test_gaussian_log_prob_and_entropy_are_the_closed_forms():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(5, 3))
    log_std = rng.normal(scale=0.5, size=(5, 3))
    actions = rng.normal(size=(5, 3)) * 2
    p = jnp.asarray(np.concatenate([mean, log_std], -1), jnp.float32)
    want_logp = [
        sum(_normal_logpdf(actions[i, j], mean[i, j], math.exp(log_std[i, j])) for j in range(3))
        for i in range(5)
    ]
    # A Gaussian's differential entropy: 0.5 * log(2 pi e sigma^2) per dimension.
    want_h = [
        sum(0.5 * math.log(2 * math.pi * math.e * math.exp(2 * log_std[i, j])) for j in range(3))
        for i in range(5)
    ]
    np.testing.assert_allclose(GAUSSIAN.log_prob(p, jnp.asarray(actions)), want_logp, rtol=1e-5)
    np.testing.assert_allclose(GAUSSIAN.entropy(p), want_h, rtol=1e-5)
    np.testing.assert_array_equal(GAUSSIAN.mode(p), np.asarray(p)[:, :3])


def test_gaussian_samples_have_the_mean_and_std_asked_for():
    p = jnp.asarray([[1.5, -2.0, math.log(0.3), math.log(2.0)]], jnp.float32)
    p = jnp.broadcast_to(p, (40_000, 4))
    x = np.asarray(GAUSSIAN.sample(jax.random.PRNGKey(0), p))
    assert x.shape == (40_000, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), [1.5, -2.0], atol=0.03)
    np.testing.assert_allclose(x.std(0), [0.3, 2.0], rtol=0.02)
    assert np.abs(x[:, 1] - -2.0).max() > 5.0  # unclipped: the tails are there


def test_categorical_is_the_softmax():
    logits = jnp.asarray([[0.0, math.log(3.0)]])
    logp = CATEGORICAL.log_prob(logits, jnp.asarray([1]))
    np.testing.assert_allclose(logp, [math.log(0.75)], rtol=1e-6)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(CATEGORICAL.entropy(logits), [h], rtol=1e-6)


def test_the_gaussian_a2c_loss_is_the_masked_mean_by_hand():
    rng = np.random.default_rng(1)
    b, d = 6, 2
    mean, log_std = rng.normal(size=(b, d)), rng.normal(scale=0.3, size=(b, d))
    actions = rng.normal(size=(b, d))
    values, adv, ret = rng.normal(size=b), rng.normal(size=b), rng.normal(size=b)
    mask = np.array([1, 1, 0, 1, 0, 1], np.float32)
    actions[2] = np.nan  # a reset step's action may be anything: it must not count
    p = np.concatenate([mean, log_std], -1)
    loss, terms = a2c_loss(
        jnp.asarray(p, jnp.float32), jnp.asarray(values, jnp.float32),
        jnp.asarray(actions, jnp.float32), jnp.asarray(adv, jnp.float32),
        jnp.asarray(ret, jnp.float32), jnp.asarray(mask), 0.01, 0.5, GAUSSIAN,
    )  # fmt: skip
    real = [i for i in range(b) if mask[i]]
    logp = {
        i: sum(_normal_logpdf(actions[i, j], mean[i, j], math.exp(log_std[i, j])) for j in range(d))
        for i in real
    }
    h = {
        i: sum(log_std[i, j] + 0.5 * math.log(2 * math.pi * math.e) for j in range(d)) for i in real
    }
    policy = np.mean([-logp[i] * adv[i] for i in real])
    value = np.mean([0.5 * (ret[i] - values[i]) ** 2 for i in real])
    entropy = np.mean([h[i] for i in real])
    np.testing.assert_allclose(terms.policy_loss, policy, rtol=1e-5)
    np.testing.assert_allclose(terms.value_loss, value, rtol=1e-5)
    np.testing.assert_allclose(terms.entropy, entropy, rtol=1e-5)
    np.testing.assert_allclose(loss, policy + 0.5 * value - 0.01 * entropy, rtol=1e-5)


# --- The network's Gaussian head -----------------------------------------------------------


@pytest.mark.parametrize("policy_std", ["parameter", "softplus"])
@pytest.mark.parametrize("log_std_init", [0.0, -1.0])
def test_the_gaussian_head_starts_at_the_log_std_asked_for(policy_std, log_std_init):
    net = make_network("mlp", 3, continuous=True, policy_std=policy_std, log_std_init=log_std_init)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(7, 5)), jnp.float32)
    params = net.init(jax.random.PRNGKey(0), obs)
    p, v = net.apply(params, obs)
    assert p.shape == (7, 6) and v.shape == (7,)
    mean, log_std = gaussian_split(p)
    assert np.abs(np.asarray(mean)).max() < 0.1  # near 0: a policy head of gain 0.01
    if policy_std == "parameter":  # state-independent: exactly the parameter
        assert params["params"]["log_std"].shape == (3,)
        np.testing.assert_array_equal(log_std, np.full((7, 3), log_std_init, np.float32))
    else:  # state-dependent, through the softplus of a layer of gain 0.01
        np.testing.assert_allclose(log_std, log_std_init, atol=0.02)
        assert np.ptp(np.asarray(log_std)) > 0
        assert float(0.5 * math.log(MIN_VARIANCE)) < float(log_std.min())


def test_the_log_std_learns_from_the_loss():
    net = make_network("mlp", 2, continuous=True)
    obs = jnp.ones((4, 3))
    params = net.init(jax.random.PRNGKey(0), obs)

    def loss(params):  # the entropy bonus alone: grows every log-std
        p, _ = net.apply(params, obs)
        return -jnp.mean(GAUSSIAN.entropy(p))

    g = jax.grad(loss)(params)["params"]["log_std"]
    np.testing.assert_allclose(g, [-1.0, -1.0], rtol=1e-6)


def test_greedy_acting_plays_the_mean_and_sampling_does_not():
    net = make_network("mlp", 2, continuous=True, log_std_init=-0.5)
    obs = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4)), jnp.float32)
    params = net.init(jax.random.PRNGKey(0), obs)
    mean = gaussian_split(net.apply(params, obs)[0])[0]
    greedy, _ = make_greedy_act(net)(params, obs, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(greedy, mean)
    sampled, _ = make_act(net)(params, obs, jax.random.PRNGKey(1))
    assert sampled.shape == (3, 2) and sampled.dtype == jnp.float32
    spread = np.asarray(sampled - mean)
    assert 0.05 < np.abs(spread).mean() < 2.0  # std exp(-0.5) = 0.61 around the mean


# --- The environment boundary --------------------------------------------------------------


class _Box:
    """An environment that keeps the actions it is given."""

    def __init__(self, low, high, dtype=np.float64):
        self.action_space = spaces.Box(np.asarray(low, dtype), np.asarray(high, dtype), dtype=dtype)
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.received = []

    def step(self, action):
        self.received.append(action)
        return np.zeros((len(action), 2), np.float32), np.zeros(len(action)), *([None] * 3)


def test_actions_are_rescaled_to_the_bounds_then_clipped():
    env = ActionBounds(_Box([-0.4, 0.0, -3.0], [0.4, 2.0, 3.0]))
    u = np.array([[0.5, -1.0, 0.1], [1.7, 0.25, -9.0]], np.float32)
    env.step(u)
    got = env.env.received[0]
    assert got.dtype == np.float64  # MuJoCo's, from the space
    want = [
        [0.5 * 0.4, 0.0, 0.1 * 3.0],  # low + (u + 1) (high - low) / 2
        [0.4, 1.0 + 0.25, -3.0],  # beyond +-1: the bound
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_infinite_bounds_are_neither_rescaled_nor_clipped():
    env = ActionBounds(_Box([-np.inf, -1.0, 0.0], [np.inf, 1.0, np.inf], np.float32))
    env.step(np.array([[-123.0, 5.0, -7.0], [4.5, -0.5, 7.0]], np.float32))
    got = env.env.received[0]
    assert got.dtype == np.float32
    # Dimension 0: no bounds, as given. Dimension 2: one bound, clipped on that side only.
    np.testing.assert_allclose(got, [[-123.0, 1.0, 0.0], [4.5, -0.5, 7.0]])


def test_envpool_and_gymnasium_box_tasks_are_continuous_specs():
    cheetah = make_env("HalfCheetah-v4", 2, 0)
    assert env_spec(cheetah, "HalfCheetah-v4") == EnvSpec(
        (17,), np.dtype("float32"), 6, False, True
    )
    obs, _ = cheetah.reset()
    assert obs.dtype == np.float32  # EnvPool's float64 observations, as the networks take them
    assert cheetah.to_env(np.zeros((2, 6), np.float32)).dtype == np.float64
    cheetah.close()
    humanoid = make_env("Humanoid-v4", 1, 0)
    np.testing.assert_allclose(humanoid.to_env(np.ones((1, 17)))[0], 0.4)  # its bounds, +-0.4
    humanoid.close()
    pendulum = make_env("gymnasium:Pendulum-v1", 2, 0)
    assert env_spec(pendulum) == EnvSpec((3,), np.dtype("float32"), 1, False, True)
    np.testing.assert_allclose(pendulum.to_env([[0.5], [-3.0]]), [[1.0], [-2.0]])  # +-2
    pendulum.close()


def test_spaces_neither_discrete_nor_a_box_vector_are_one_line():
    for space, words in (
        (spaces.Box(-1.0, 1.0, (2, 2)), "Box(shape=(2, 2), dtype=float32) is not a vector"),
        (spaces.Box(-1.0, 1.0, (0,)), "Box(shape=(0,), dtype=float32) is not a vector"),
        (spaces.Box(-3, 3, (2,), np.int64), "is a Box of integers"),
        (spaces.MultiDiscrete([2, 3]), "is neither Discrete nor a Box"),
    ):
        env = types.SimpleNamespace(action_space=space, observation_space=spaces.Box(0, 1, (3,)))
        with pytest.raises(ConfigError, match=r"^--env='X' is invalid: its action space"):
            env_spec(env, "X")
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            env_spec(env, "X")


# --- The rollout and the update --------------------------------------------------------------


def test_the_rollout_keeps_the_policys_actions_and_the_env_gets_them_bounded():
    cfg = Config(**SMALL)
    env = make_env("InvertedPendulum-v4", 4, 0)
    spec = env_spec(env)
    network = network_for(cfg, spec)
    algorithm = make_algorithm(cfg, network, spec)
    state = init_state(cfg, network, spec, jax.random.PRNGKey(0))
    # A wide policy, so that samples leave [-1, 1] and the bounds clip them.
    state = state._replace(
        params={"params": {**state.params["params"], "log_std": jnp.asarray([0.7])}}
    )
    sent = []
    step = env.env.step
    env.env.step = lambda a: (sent.append(np.array(a)), step(a))[1]
    obs, _ = env.reset()
    carry = initial_carry(jax.random.PRNGKey(1), obs)
    batch, _ = collect_rollout(env, jax.jit(algorithm.act), state, carry, EpisodeStats(4), 5)
    assert batch.action.shape == (5, 4, 1) and batch.action.dtype == np.float32
    assert np.abs(batch.action).max() > 1.0  # kept unclipped
    sent = np.stack(sent)
    assert sent.dtype == np.float64  # InvertedPendulum-v4's actions
    np.testing.assert_allclose(sent, np.clip(3.0 * batch.action, -3.0, 3.0), rtol=1e-6)
    # The update learns from it, finitely, the log-std too.
    grads, _ = make_a2c_grad(cfg, network)(state.params, batch)
    g = float(grads["params"]["log_std"][0])
    assert np.isfinite(g) and g != 0.0
    _, metrics = jax.jit(algorithm.update)(state, batch)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    env.close()


@pytest.mark.parametrize("extra", [dict(), dict(lstm_cells=8)], ids=["mlp", "lstm"])
def test_the_update_recomputes_the_gaussian_acting_sampled_from(extra):
    """The update's forward pass gives the very means and log-stds acting sampled from
    (the LSTM's too, from the rollout's first memory, across episode ends), and the
    rollout's actions are draws of that Gaussian, unclipped: standardised, they are
    standard normal."""
    cfg = Config(**dict(SMALL, n_envs=16, t_max=20), **extra)
    network = network_for(cfg, SPEC)
    algorithm = make_algorithm(cfg, network, SPEC)
    state = init_state(cfg, network, SPEC, jax.random.PRNGKey(0))
    # Larger weights, so that the observations (and the memory) move the mean, and a std of
    # 2 in the policy's range: a clipped action would not pass for a draw.
    params = jax.tree.map(lambda p: p * 3.0, state.params)
    params["params"]["log_std"] = jnp.asarray([0.7])
    mean_head = params["params"]["mean"]
    params["params"]["mean"] = {**mean_head, "kernel": mean_head["kernel"] * 100.0}
    state = state._replace(params=params)
    seen = []
    act = jax.jit(algorithm.act)

    def recorded(state, obs, key, *memory):
        if memory:
            p, _, _ = network.apply(state.params, obs[None], memory[0], memory[1][None])
            seen.append(np.asarray(p[0]))
        else:
            seen.append(np.asarray(network.apply(state.params, obs)[0]))
        return act(state, obs, key, *memory)

    env = make_env("InvertedPendulum-v4", 16, 3, max_episode_steps=7)
    obs, _ = env.reset()
    carry = initial_carry(jax.random.PRNGKey(1), obs, algorithm.memory)
    batch, _ = collect_rollout(env, recorded, state, carry, EpisodeStats(16), 20)
    env.close()
    p, _, _ = jax.jit(make_forward(network))(state.params, batch)
    np.testing.assert_allclose(p, np.stack(seen), rtol=1e-5, atol=1e-5)
    mean, log_std = gaussian_split(np.asarray(p))
    assert np.ptp(mean) > 0.1  # the mean does depend on the state
    z = (batch.action - mean) / np.exp(log_std)
    assert z.shape == (20, 16, 1)  # 320 draws
    assert abs(z.mean()) < 0.2 and 0.88 < z.std() < 1.12
    assert (batch.mask == 0).sum() >= 16  # episodes did end inside the rollout


# --- Every part of the loop with continuous actions ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [dict(), dict(mode="a3c", workers=2, lstm_cells=8),
     dict(mode="ga3c", policy_std="softplus", gae_lambda=0.95, normalize_reward=True)],
    ids=["sync", "a3c-lstm", "ga3c-softplus-gae-normalised"],
)  # fmt: skip
def test_continuous_resume_is_exact(tmp_path, extra):
    cfg = dict(SMALL, n_envs=8, total_steps=8000, checkpoint_interval=4000, log_interval=700,
               **extra)  # fmt: skip
    assert_resume_is_exact(tmp_path, cfg)


@pytest.mark.slow
def test_a3c_with_one_worker_is_sync_with_continuous_actions(tmp_path):
    cfg = dict(SMALL, total_steps=1000, out_dir=str(tmp_path), log_interval=100)
    sync = train(Config(**cfg, run_name="sync"), progress=False)
    a3c = train(Config(**cfg, run_name="a3c", mode="a3c", workers=1), progress=False)
    for a, b in zip(jax.tree.leaves(sync.state.params), jax.tree.leaves(a3c.state.params),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_value_methods_refuse_continuous_actions_in_one_line(capsys):
    for algo in ("nstep_q", "q", "sarsa"):
        assert (
            main(CONTINUOUS, ["--env", "Pendulum-v1", "--algo", algo, "--total-steps", "512"]) == 2
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"--algo='{algo}' is invalid for --env='Pendulum-v1': its actions are " in err[0]
        assert "use --algo a2c" in err[0]


def test_presets_that_do_not_fit_the_actions_are_one_line(capsys):
    for args, words in (
        (["--env", "CartPole-v1", "--preset", "HalfCheetah-v4"], "it is for continuous actions"),
        (["--env", "HalfCheetah-v4", "--preset", "CartPole-v1"], "it is for discrete actions"),
        (["--env", "Pendulum-v1", "--preset", "control"], "Pendulum-v1's preset is 'continuous'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(CONTINUOUS, [*args, "--total-steps", "80"], presets=True)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert PRESETS["InvertedPendulum-v4"].normalize_obs


def test_gaussian_settings_on_discrete_actions_are_one_line(capsys):
    for flag, value in (("--policy-std", "softplus"), ("--log-std-init", "-1.0")):
        args = ["--env", "CartPole-v1", flag, value, "--total-steps", "512"]  # one update
        assert main(CONTINUOUS, args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag}=" in err[0] and "its actions are discrete" in err[0]


def test_gymnasium_tasks_take_the_preset_of_their_envpool_twin():
    from paac.tools.presets import preset_of

    assert preset_of("gymnasium:Pendulum-v1") == preset_of("Pendulum-v1") == "continuous"
    assert preset_of("gymnasium:HalfCheetah-v4") == "HalfCheetah-v4"
    assert preset_of("gymnasium:tests.gym_envs:Corridor-box_action-v0") == "control"


def test_bad_gaussian_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"^--policy-std='fixed' is invalid: must be one of"):
        Config(**dict(SMALL, policy_std="fixed"))
    with pytest.raises(ConfigError, match=r"^--log-std-init=-9.0 is invalid: must be a number"):
        Config(**dict(SMALL, log_std_init=-9.0))


@pytest.mark.slow
def test_discrete_and_continuous_checkpoints_do_not_mix(tmp_path):
    run = train(Config(**dict(SMALL, total_steps=400, out_dir=str(tmp_path))), progress=False)
    cartpole = Config(env="CartPole-v1", arch="mlp", n_envs=4)
    discrete = EnvSpec((4,), np.dtype("float32"), 1, False, False)
    template = state_template(cartpole, network_for(cartpole, discrete), discrete)
    with pytest.raises(CheckpointError, match="holds a policy of continuous actions, and this "
                       "run's environment has discrete ones"):  # fmt: skip
        restore(f"{run.run_dir}/checkpoints", 400, template)
    discrete_run = train(Config(**dict(cartpole.to_dict(), total_steps=400, out_dir=str(tmp_path),
                                       run_name="cartpole")), progress=False)  # fmt: skip
    template = state_template(Config(**SMALL), network_for(Config(**SMALL), SPEC), SPEC)
    with pytest.raises(CheckpointError, match="holds a policy of discrete actions, and this "
                       "run's environment has continuous ones"):  # fmt: skip
        restore(f"{discrete_run.run_dir}/checkpoints", 400, template)


@pytest.mark.slow
def test_evaluation_plays_the_mean_greedily_and_samples_otherwise(tmp_path):
    run = train(Config(**dict(SMALL, total_steps=2000, out_dir=str(tmp_path))), progress=False)
    greedy = [evaluate(run.run_dir, episodes=3, greedy=True, seed=5) for _ in range(2)]
    sampled = [evaluate(run.run_dir, episodes=3, seed=s) for s in (5, 6)]
    assert greedy[0]["scores"] == greedy[1]["scores"]  # the mean: no randomness but the env's
    assert greedy[0]["policy"] == "greedy" and sampled[0]["policy"] == "sampled"
    # At the same seed, the same environments: only the policy's noise tells them apart.
    assert sampled[0]["lengths"] != greedy[0]["lengths"]
    with open(f"{run.run_dir}/eval-2000-greedy.json") as f:
        assert json.load(f)["episodes"] == 3


@pytest.mark.slow
def test_videos_of_continuous_tasks_play_or_say_why_not(tmp_path):
    run = train(
        Config(**dict(SMALL, env="Pendulum-v1", total_steps=400, out_dir=str(tmp_path))),
        progress=False,
    )
    gif = tmp_path / "pendulum.gif"
    stats = evaluate(run.run_dir, episodes=1, video=str(gif))
    assert gif.exists() and stats["video_frames"] == 201  # the first frame and 200 steps
    cheetah = train(
        Config(**dict(SMALL, env="HalfCheetah-v4", total_steps=400, out_dir=str(tmp_path))),
        progress=False,
    )
    problem = render_problem("HalfCheetah-v4")
    if problem is None:  # a machine with OpenGL: EnvPool's MuJoCo renderer records it
        stats = evaluate(cheetah.run_dir, episodes=1, video=str(tmp_path / "cheetah.mp4"))
        assert stats["video_frames"] > 0
    else:  # none here: one line, before MuJoCo could abort the process
        assert "OpenGL" in problem
        with pytest.raises(ConfigError, match="^--video is invalid for --env='HalfCheetah-v4': "):
            evaluate(cheetah.run_dir, episodes=1, video=str(tmp_path / "cheetah.mp4"))


@pytest.mark.slow
def test_the_gymnasium_box_path_trains_and_learns(tmp_path):
    """The corridor with continuous actions in Box(-2, 2): it fails any step given an
    action outside its bounds or of another dtype, and is walked to its goal."""
    cfg = Config(
        env="gymnasium:tests.gym_envs:Corridor-box_action-v0", arch="mlp", n_envs=8, t_max=5,
        total_steps=60_000, lr=0.01, entropy_coef=0.0, log_interval=5000,
        out_dir=str(tmp_path), seed=0,
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert result.score_last20 > 0.6  # walking straight scores 0.70 to 0.85
    stats = evaluate(result.run_dir, episodes=8, greedy=True)
    assert stats["mean"] > 0.6


@pytest.mark.slow
def test_inverted_pendulum_is_learnt_with_its_preset(tmp_path):
    """The CI learning test of continuous actions: InvertedPendulum-v4's preset, seed 0,
    reaches a last-20 mean of 950 (of 1000) within its budget, greedy too."""
    cfg = PRESETS["InvertedPendulum-v4"]
    config = Config(**{**cfg.to_dict(), "out_dir": str(tmp_path), "target_score": 950.0})
    result = train(config, progress=False)
    assert result.score_last20 >= 950, result.score_last20
    assert result.steps < cfg.total_steps  # stopped at the target, inside the budget
    stats = evaluate(result.run_dir, episodes=10, greedy=True)
    assert stats["mean"] >= 950


@pytest.mark.slow
def test_mujoco_script_trains_halfcheetah(script, tmp_path):
    done = script(
        "mujoco.py", "--env", "HalfCheetah-v4", "--total-steps", "2000", "--out-dir",
        str(tmp_path), "--run-name", "hc",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "HalfCheetah-v4" / "hc" / "config.json") as f:
        assert json.load(f)["preset"] == "HalfCheetah-v4"


@pytest.mark.slow
def test_the_benchmark_and_compare_take_continuous_actions(script, tmp_path):
    done = script(
        "benchmark.py", "--env", "InvertedPendulum-v4", "--arch", "mlp", "--n-envs", "8",
        "--seconds", "4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "random actions" in done.stdout
    done = script(
        "compare_async.py", "--env", "InvertedPendulum-v4", "--total-steps", "2000",
        "--seeds", "0", "--compare-dir", str(tmp_path / "compare"), "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_agent_of_other_actions_is_refused_in_one_line():
    discrete = EnvSpec((4,), np.dtype("float32"), 1, False, False)
    agent = Agent(Config(**SMALL), discrete, {}, {}, 0, {})
    with pytest.raises(CheckpointError, match=r"^agent 'a' plays discrete actions, and "
                       r"InvertedPendulum-v4 made here has continuous ones$"):  # fmt: skip
        check_agent_spec(agent, SPEC, "a")
    check_agent_spec(agent._replace(spec=SPEC), SPEC, "a")  # the same spec: no complaint


def test_a_value_torso_of_its_own_takes_no_gradient_from_the_policy():
    net = make_network("mlp", 2, continuous=True, shared_torso=False)
    obs = jnp.asarray(np.random.default_rng(3).normal(size=(5, 4)), jnp.float32)
    params = net.init(jax.random.PRNGKey(0), obs)
    assert {"torso", "value_torso", "mean", "log_std", "value"} == set(params["params"])

    def value(params):
        return jnp.sum(net.apply(params, obs)[1])

    def policy(params):
        return jnp.sum(net.apply(params, obs)[0])

    g_value, g_policy = jax.grad(value)(params)["params"], jax.grad(policy)(params)["params"]
    zero = lambda tree: all(not np.any(np.asarray(x)) for x in jax.tree.leaves(tree))  # noqa: E731
    assert zero(g_value["torso"]) and not zero(g_value["value_torso"])
    assert zero(g_policy["value_torso"]) and not zero(g_policy["torso"])
    # Shared (PAAC's), the value's gradient reaches the one torso.
    shared = make_network("mlp", 2, continuous=True)
    p = shared.init(jax.random.PRNGKey(0), obs)
    g = jax.grad(lambda p: jnp.sum(shared.apply(p, obs)[1]))(p)["params"]
    assert "value_torso" not in p["params"] and not zero(g["torso"])


def test_a_value_torso_of_its_own_is_for_feed_forward_a2c():
    for extra, words in (
        (dict(lstm_cells=8), "not --lstm-cells 8"),
        (dict(algo="q"), "not --algo q"),
    ):
        with pytest.raises(ConfigError, match=f"^--no-shared-torso is invalid: .*{words}$"):
            Config(**dict(SMALL, shared_torso=False, **extra))
