"""Observation and reward normalisation: the numbers against NumPy, the wrapper, the runs."""

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paac.algorithms.build import make_algorithm, network_for, state_template
from paac.algorithms.normalize import frozen_policy, init_norm, normalized
from paac.core.config import Config, ConfigError
from paac.core.types import Algorithm, Batch, EnvSpec, LearnerState
from paac.ops.normalize import (
    MOMENTS_EPSILON,
    NORM_EPSILON,
    RunningMoments,
    discounted_returns,
    init_moments,
    normalize,
    scale,
    update_moments,
)
from paac.run.checkpoints import CheckpointError, locate, restore
from paac.run.train import train
from paac.tools.cli import main
from paac.tools.evaluate import evaluate
from paac.tools.presets import CONTROL
from tests.test_checkpoints import assert_same_logs

SPEC = EnvSpec((3,), np.dtype("float32"), 2, False)


def _oracle(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, variance and count of ``values`` [K, ...] pooled with the starting moments:
    MOMENTS_EPSILON pseudo-values of mean 0 and variance 1."""
    k = values.shape[0]
    count = MOMENTS_EPSILON + k
    mean = values.sum(axis=0) / count
    # Each pseudo-value contributes its variance (1) plus its squared distance to the mean.
    m2 = MOMENTS_EPSILON * (1.0 + mean**2) + ((values - mean) ** 2).sum(axis=0)
    return mean, m2 / count, count


def _masks(rng, t, n, p_done=0.2):
    done = rng.random((t, n)) < p_done
    previous = np.concatenate([np.zeros((1, n), bool), done[:-1]])
    return done, (~previous).astype(np.float32)


def test_moments_pool_every_real_value_however_batched():
    rng = np.random.default_rng(0)
    moments = init_moments((3,))
    seen = []
    for t in (5, 1, 7):  # batches of different sizes
        x = rng.normal(3.0, 2.0, (t, 4, 3)).astype(np.float32) * [1, 10, 0.1]
        mask = (rng.random((t, 4)) < 0.7).astype(np.float32)
        moments = update_moments(moments, x, mask)
        seen.append(x[mask > 0])
    mean, var, count = _oracle(np.concatenate(seen).astype(np.float64))
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(moments.var, var, rtol=1e-4)
    assert float(moments.count) == pytest.approx(count)
    # A batch whose mask is all 0 changes nothing.
    same = update_moments(moments, np.ones((2, 4, 3), np.float32), np.zeros((2, 4)))
    for a, b in zip(same, moments, strict=True):
        np.testing.assert_array_equal(a, b)


def test_normalize_and_scale_by_hand():
    m = RunningMoments(jnp.array([1.0, 0.0]), jnp.array([4.0, 1.0]), jnp.array(10.0))
    np.testing.assert_allclose(normalize(m, np.array([5.0, -30.0]), clip=10.0), [2.0, -10.0])
    np.testing.assert_allclose(
        normalize(m, np.array([[1.0, 0.5]]), clip=10.0), [[0.0, 0.5 / np.sqrt(1 + 1e-8)]]
    )
    r = RunningMoments(jnp.array(7.0), jnp.array(9.0), jnp.array(3.0))  # the mean is not used
    np.testing.assert_allclose(scale(r, np.array([3.0, -60.0, 0.0]), clip=5.0), [1.0, -5.0, 0.0])


def test_discounted_returns_match_a_loop():
    rng = np.random.default_rng(1)
    t, n, gamma = 9, 5, 0.9
    reward = rng.normal(size=(t, n)).astype(np.float32)
    done, mask = _masks(rng, t, n, p_done=0.3)
    reward[mask == 0] = 0.0  # EnvPool's reset steps have reward 0
    start = rng.normal(size=n).astype(np.float32)
    want = np.zeros((t, n))
    for i in range(n):
        g = float(start[i])
        for s in range(t):
            g = gamma * g + reward[s, i] if mask[s, i] else 0.0
            want[s, i] = g
            if done[s, i]:
                g = 0.0
        after = 0.0 if done[-1, i] else g
        assert float(discounted_returns(start, reward, done, mask, gamma)[1][i]) == pytest.approx(
            after, rel=1e-5, abs=1e-6
        )
    got, _ = discounted_returns(start, reward, done, mask, gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _recording_algorithm() -> Algorithm:
    """An algorithm whose act returns what it was given and whose update reports its batch."""

    def init(key):
        return LearnerState({"w": jnp.zeros(1)}, (), jnp.zeros((), jnp.int32), {})

    def act(state, obs, key):
        return obs, key

    def update(state, batch):
        seen = {"obs": batch.obs, "boot": batch.bootstrap_obs, "reward": batch.reward}
        return state._replace(update_count=state.update_count + 1), seen

    return Algorithm(init, act, update, lambda greedy: act)


def _batch(rng, t=4, n=3) -> Batch:
    done, mask = _masks(rng, t, n)
    reward = rng.normal(2.0, 3.0, (t, n)).astype(np.float32) * mask
    return Batch(
        obs=rng.normal(5.0, 4.0, (t, n, 3)).astype(np.float32),
        action=np.zeros((t, n), np.int32),
        reward=reward,
        terminated=done,
        truncated=np.zeros((t, n), bool),
        mask=mask,
        bootstrap_obs=rng.normal(5.0, 4.0, (n, 3)).astype(np.float32),
    )


def test_the_wrapper_learns_from_the_statistics_it_acted_with():
    """Each batch is normalised with the statistics before it, then taken into them, real
    steps only; acting normalises the same way."""
    cfg = Config(env="CartPole-v1", arch="mlp", n_envs=3, t_max=4, total_steps=1000,
                 normalize_obs=True, normalize_reward=True, gamma=0.9, norm_clip=3.0)  # fmt: skip
    algo = normalized(_recording_algorithm(), cfg, SPEC)
    state = algo.init(jax.random.PRNGKey(0))
    assert set(state.norm) == {"obs", "reward", "return"}
    rng = np.random.default_rng(2)
    batches = [_batch(rng) for _ in range(3)]
    real_obs, returns, running = [], [], np.zeros(3, np.float32)
    for batch in batches:
        before = jax.tree.map(np.asarray, state.norm)
        state, seen = algo.update(state, batch)
        sd = np.sqrt(before["obs"].var + NORM_EPSILON)
        want_obs = np.clip((batch.obs - before["obs"].mean) / sd, -3, 3)
        np.testing.assert_allclose(seen["obs"], want_obs, rtol=1e-5, atol=1e-6)
        want_boot = np.clip((batch.bootstrap_obs - before["obs"].mean) / sd, -3, 3)
        np.testing.assert_allclose(seen["boot"], want_boot, rtol=1e-5, atol=1e-6)
        want_reward = np.clip(batch.reward / np.sqrt(before["reward"].var + NORM_EPSILON), -3, 3)
        np.testing.assert_allclose(seen["reward"], want_reward, rtol=1e-5, atol=1e-6)
        # The statistics now hold every real step so far (NumPy oracle).
        real_obs.append(batch.obs[batch.mask > 0])
        g, running = discounted_returns(running, batch.reward, batch.terminated, batch.mask, 0.9)
        returns.append(np.asarray(g)[batch.mask > 0])
        mean, var, count = _oracle(np.concatenate(real_obs).astype(np.float64))
        np.testing.assert_allclose(state.norm["obs"].mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.norm["obs"].var, var, rtol=1e-4)
        assert float(state.norm["obs"].count) == pytest.approx(count)
        mean, var, count = _oracle(np.concatenate(returns).astype(np.float64))
        np.testing.assert_allclose(state.norm["reward"].mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.norm["reward"].var, var, rtol=1e-4)
        np.testing.assert_allclose(state.norm["return"], running, rtol=1e-5, atol=1e-6)
    obs = rng.normal(size=(3, 3)).astype(np.float32)
    acted, _ = algo.act(state, obs, None)
    want = np.clip((obs - state.norm["obs"].mean) / np.sqrt(state.norm["obs"].var + 1e-8), -3, 3)
    np.testing.assert_allclose(acted, want, rtol=1e-5, atol=1e-6)
    # Evaluation: the policy on raw observations, normalised with the frozen statistics.
    played, _ = frozen_policy(algo.policy(True), state.norm, 3.0)(None, obs, None)
    np.testing.assert_allclose(played, want, rtol=1e-5, atol=1e-6)


def test_each_normalisation_alone_and_neither():
    plain = Config(env="CartPole-v1", arch="mlp", n_envs=3, t_max=4, total_steps=1000)
    assert init_norm(plain, SPEC) == {}
    inner = _recording_algorithm()
    assert normalized(inner, plain, SPEC) is inner
    obs_only = dataclasses.replace(plain, normalize_obs=True)
    assert set(init_norm(obs_only, SPEC)) == {"obs"}
    algo = normalized(inner, obs_only, SPEC)
    state = algo.init(jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(3))
    _, seen = algo.update(state, batch)
    np.testing.assert_array_equal(seen["reward"], batch.reward)  # rewards untouched
    reward_only = dataclasses.replace(plain, normalize_reward=True)
    assert set(init_norm(reward_only, SPEC)) == {"reward", "return"}
    algo = normalized(inner, reward_only, SPEC)
    _, seen = algo.update(algo.init(jax.random.PRNGKey(0)), batch)
    np.testing.assert_array_equal(seen["obs"], batch.obs)  # observations untouched
    # Every algorithm of the loop gets it through the dispatcher.
    for extra in (dict(algo="sarsa"), dict(mode="a3c", workers=3), dict(mode="ga3c")):
        cfg = dataclasses.replace(obs_only, **extra)
        template = state_template(cfg, network_for(cfg, SPEC), SPEC)
        assert set(template.norm) == {"obs"}, extra


def test_atari_frames_are_not_normalised():
    with pytest.raises(ConfigError, match=r"^--normalize-obs=True is invalid: .*--arch mlp"):
        Config(normalize_obs=True)
    with pytest.raises(ConfigError, match=r"^--norm-clip=0 is invalid"):
        Config(env="CartPole-v1", arch="mlp", norm_clip=0)


NORMALISED = dict(
    env="CartPole-v1", arch="mlp", n_envs=8, t_max=5, total_steps=8000, lr=0.01,
    entropy_coef=0.01, checkpoint_interval=4000, log_interval=700, normalize_obs=True,
    normalize_reward=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def normalised_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("normalised")
    return train(Config(**NORMALISED, out_dir=str(out), run_name="straight"), progress=False)


@pytest.mark.slow
def test_resume_continues_the_statistics_exactly(normalised_run, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(normalised_run.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "8000")
    resumed = train(Config(**NORMALISED, resume=str(run)), progress=False)
    assert set(resumed.state.norm) == {"obs", "reward", "return"}
    for a, b in zip(
        jax.tree.leaves(normalised_run.state), jax.tree.leaves(resumed.state), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert_same_logs(run, normalised_run.run_dir)


@pytest.mark.slow
def test_turning_normalisation_on_or_off_in_a_resume_is_refused(normalised_run, capsys):
    for flag, value in (("--no-normalize-obs", False), ("--no-normalize-reward", False)):
        assert main(CONTROL, ["--resume", normalised_run.run_dir, flag]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("paac: error: --resume="), err
        assert f"{flag.replace('no-', '')}={value!r}" in err[0]


@pytest.mark.slow
def test_evaluation_plays_with_the_saved_statistics(normalised_run, monkeypatch):
    import paac.tools.evaluate as evaluate_module

    given = []

    def spy(policy, norm, clip):
        given.append((jax.tree.map(np.asarray, norm), clip))
        return frozen_policy(policy, norm, clip)

    monkeypatch.setattr(evaluate_module, "frozen_policy", spy)
    stats = evaluate(normalised_run.run_dir, episodes=2, write_json=False)
    assert stats["step"] == 8000 and len(stats["scores"]) == 2
    ((norm, clip),) = given
    assert clip == 10.0
    saved = jax.tree.map(np.asarray, normalised_run.state.norm)
    np.testing.assert_array_equal(norm["obs"].mean, saved["obs"].mean)
    np.testing.assert_array_equal(norm["obs"].var, saved["obs"].var)


@pytest.mark.slow
def test_a_checkpoint_without_statistics_does_not_fit_a_normalising_run(tmp_path):
    plain = dict(NORMALISED, normalize_obs=False, normalize_reward=False, total_steps=400)
    run = train(Config(**plain, out_dir=str(tmp_path), run_name="plain"), progress=False)
    cfg = Config(**NORMALISED)
    spec = SPEC._replace(obs_shape=(4,))
    template = state_template(cfg, network_for(cfg, spec), spec)
    directory, step = locate(run.run_dir)
    with pytest.raises(
        CheckpointError, match="statistics of none, and this run normalises obs and"
    ):
        restore(directory, step, template)


@pytest.mark.slow
def test_cartpole_learns_with_both_normalisations(tmp_path):
    cfg = dataclasses.replace(
        CONTROL, normalize_obs=True, normalize_reward=True, total_steps=200_000,
        target_score=475.0, out_dir=str(tmp_path), checkpoint_interval=0,
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert result.score_last20 >= 475.0, result.score_last20
    stats = evaluate(result.run_dir, episodes=5, greedy=True, write_json=False)
    assert stats["mean"] >= 450.0, stats["scores"]


def test_normalisation_runs_through_make_algorithm_and_jit():
    cfg = Config(env="CartPole-v1", arch="mlp", n_envs=3, t_max=4, total_steps=1000,
                 normalize_obs=True, normalize_reward=True)  # fmt: skip
    spec = SPEC._replace(obs_shape=(4,))
    algo = make_algorithm(cfg, network_for(cfg, spec), spec)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(4))
    batch = batch._replace(
        obs=np.concatenate([batch.obs, batch.obs[..., :1]], -1),
        bootstrap_obs=np.concatenate([batch.bootstrap_obs, batch.bootstrap_obs[..., :1]], -1),
    )
    new, metrics = jax.jit(algo.update)(state, batch)
    assert int(new.update_count) == 1 and np.isfinite(float(metrics["policy_loss"]))
    assert float(new.norm["obs"].count) == pytest.approx(MOMENTS_EPSILON + batch.mask.sum())
    actions, _ = jax.jit(algo.act)(new, batch.obs[0], jax.random.PRNGKey(1))
    assert actions.shape == (3,)
