"""Tests for paac.asynchronous: the parameter ring, and the a3c and ga3c emulations.

The a3c update is checked against a hand-run A3C written here: each worker's gradient is
the oracle PAAC gradient of tests/test_learner.py (a plain loop over time) taken at the
worker's stale parameter version on its own slice of the batch, and the gradients are
applied one after another by a float64 NumPy TF1-RMSProp with ``lr / W``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import paac as L
from paac.algorithms import asynchronous as A
from paac.core.config import Config, ConfigError
from paac.core.types import EnvSpec
from paac.nets.networks import make_network
from paac.run.envs import EpisodeStats, make_training_env
from paac.run.rollout import RolloutCarry, collect_rollout
from tests.test_learner import _oracle_grad

T, N, NA = 4, 4, 2
SPEC = EnvSpec(obs_shape=(4,), obs_dtype=np.dtype("float32"), num_actions=NA, is_image=False)
BASE = dict(
    env="CartPole-v1",
    arch="mlp",
    n_envs=N,
    t_max=T,
    total_steps=T * N * 100,
    lr=0.05,
    lr_schedule="constant",
    gamma=0.9,
    entropy_coef=0.5,
    clip_norm=0.5,  # active on some worker gradients
)


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def _assert_tree_close(got, want, rtol=1e-5, atol=1e-6):
    for g, w in zip(_leaves(got), _leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def make_batch(seed: int) -> L.Batch:
    """A random batch with a termination, a truncation and reset steps in both halves."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, N, 4)).astype(np.float32)
    action = rng.integers(0, NA, size=(T, N)).astype(np.int32)
    reward = rng.normal(size=(T, N)).astype(np.float32)
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    mask = np.ones((T, N), np.float32)
    terminated[1, 0] = True
    truncated[0, 3] = True
    for t, n in [(2, 0), (1, 3), (0, 1)]:
        mask[t, n], reward[t, n] = 0.0, 0.0
    bootstrap_obs = rng.normal(size=(N, 4)).astype(np.float32)
    return L.Batch(obs, action, reward, terminated, truncated, mask, bootstrap_obs)


def _slice(batch: L.Batch, lo: int, hi: int) -> L.Batch:
    return L.Batch(*(x[:, lo:hi] for x in batch[:6]), batch.bootstrap_obs[lo:hi], batch.next_action)


@functools.cache
def _setup(config: Config):
    network = make_network("mlp", NA)
    algorithm = L.make_algorithm(config, network, SPEC)
    state = L.init_state(config, network, SPEC, jax.random.PRNGKey(0))
    return network, state, jax.jit(algorithm.update), jax.jit(algorithm.act)


# --------------------------------------------------------------------------- #
# The ring buffer
# --------------------------------------------------------------------------- #
def test_ring_returns_each_of_the_last_k_versions():
    k = 3
    tree = lambda v: {"w": jnp.full((2, 2), float(v)), "b": jnp.full((3,), -float(v))}  # noqa: E731
    ring = A.ring_init(tree(0), k)
    push = jax.jit(A.ring_push)
    for v in range(1, 8):
        ring = push(ring, tree(v), v)
        for back in range(min(k, v + 1)):
            got = A.ring_get(ring, v - back)
            np.testing.assert_array_equal(got["w"], np.full((2, 2), v - back))
            np.testing.assert_array_equal(got["b"], np.full((3,), -(v - back)))
        if v >= k - 1:
            assert sorted(np.asarray(ring.versions).tolist()) == list(range(v - k + 1, v + 1))
    gathered = A.ring_gather(ring, jnp.array([7, 5, 6, 7]))
    np.testing.assert_array_equal(gathered["w"][:, 0, 0], [7, 5, 6, 7])


@pytest.mark.parametrize("w", [2, 3, 5])  # fewer, as many, and more versions than slots
def test_ring_push_many_keeps_the_newest_k_versions(w):
    k = 3
    tree = lambda v: {"w": jnp.full((2,), float(v))}  # noqa: E731
    ring = A.ring_init(tree(0), k)
    push = jax.jit(A.ring_push_many)
    newest = 0
    for _ in range(3):
        versions = newest + 1 + np.arange(w)
        stacked = {"w": jnp.stack([tree(v)["w"] for v in versions])}
        ring = push(ring, stacked, jnp.asarray(versions, jnp.int32))
        newest = int(versions[-1])
        held = list(range(max(newest - k + 1, 0), newest + 1))
        assert sorted(np.asarray(ring.versions).tolist()) == held
        for v in held:  # each slot's value is the version it claims to hold
            np.testing.assert_array_equal(A.ring_get(ring, v)["w"], [v, v])


def test_ring_rejects_size_zero():
    with pytest.raises(ValueError, match="size=0"):
        A.ring_init({"w": jnp.zeros(2)}, 0)


# --------------------------------------------------------------------------- #
# a3c against a hand-run A3C
# --------------------------------------------------------------------------- #
def _tf_rmsprop_step(p, ms, g, lr, config):
    """One float64 TF1-RMSProp step with global-norm clipping, on lists of leaves."""
    norm = np.sqrt(sum(np.sum(x**2) for x in g))
    g = [x * min(1.0, config.clip_norm / norm) for x in g]
    ms = [config.rms_decay * m + (1 - config.rms_decay) * x**2 for m, x in zip(ms, g, strict=True)]
    p = [pi - lr * x / np.sqrt(m + config.rms_eps) for pi, x, m in zip(p, g, ms, strict=True)]
    return p, ms


def hand_a3c(config: Config, network, params0, batches, copies_of_round):
    """Runs A3C by hand: returns every parameter version (as float64 leaf lists)."""
    treedef = jax.tree_util.tree_structure(params0)
    w = config.num_workers
    m = config.n_envs // w
    versions = [_leaves(params0)]
    ms = [np.ones_like(x) for x in versions[0]]
    for r, batch in enumerate(batches):
        copies = copies_of_round(r, len(versions) - 1)
        # Every worker's gradient at its own copy, on its own environments.
        grads = []
        for i in range(w):
            stale = jax.tree_util.tree_unflatten(
                treedef, [jnp.asarray(x, jnp.float32) for x in versions[copies[i]]]
            )
            (_, _), g = _oracle_grad(stale, network, _slice(batch, i * m, (i + 1) * m), config)
            grads.append(_leaves(g))
        for g in grads:  # applied one after another, unaveraged, lr / W each
            p, ms = _tf_rmsprop_step(versions[-1], ms, g, config.lr / w, config)
            versions.append(p)
    return versions


@pytest.mark.parametrize(
    "staleness, w, lag",
    [
        ("round_robin", 2, 3),
        pytest.param("fixed", 2, 3, marks=pytest.mark.slow),
        # Four workers, a ring of 2 slots: each round pushes more versions than it holds.
        pytest.param("fixed", 4, 1, marks=pytest.mark.slow),
    ],
)
def test_a3c_applies_each_workers_gradient_at_its_stale_copy(staleness, w, lag):
    config = Config(**BASE, mode="a3c", workers=w, staleness=staleness, max_staleness=lag)
    network, state, update, _ = _setup(config)

    def copies_of_round(r, version):
        if r == 0:
            return [0] * w
        if staleness == "round_robin":  # took the newest right after its previous apply
            return [version - w + 1 + i for i in range(w)]
        return [max(version - lag, 0)] * w

    batches = [make_batch(seed) for seed in range(4)]
    metrics = []
    for b in batches:
        state, m = update(state, b)
        metrics.append(m)
    want = hand_a3c(config, network, _setup(config)[1].params, batches, copies_of_round)
    _assert_tree_close(
        state.params,
        jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state.params), want[-1]),
    )
    assert int(state.update_count) == 4
    # The ring holds the newest versions; the copies for the next round point into it.
    ring = state.extra["ring"]
    for v in np.asarray(ring.versions):
        _assert_tree_close(
            A.ring_get(ring, v),
            jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state.params), want[int(v)]),
        )
    assert np.asarray(state.extra["copies"]).tolist() == copies_of_round(4, 4 * w)
    # Staleness of the applied gradients: version at apply minus the copy's version.
    for r, m in enumerate(metrics):
        applied_at = [w * r + i for i in range(w)]
        expect = np.mean(
            [a - c for a, c in zip(applied_at, copies_of_round(r, w * r), strict=True)]
        )
        np.testing.assert_allclose(float(m["staleness"]), expect)
    assert float(metrics[-1]["staleness"]) > 0


@pytest.mark.slow  # a3c updates of several workers' copies compile for seconds
def test_a3c_uniform_staleness_applies_each_gradient_at_its_drawn_copy():
    """Uniform staleness draws the copies at random, so the hand-run A3C takes the copies
    that the update recorded for each round, after checking that they are the lags allowed."""
    w, lag = 4, 2  # one environment a worker
    config = Config(**BASE, mode="a3c", workers=w, staleness="uniform", max_staleness=lag)
    network, state, update, _ = _setup(config)
    params0 = state.params
    batches = [make_batch(seed) for seed in range(4)]
    recorded, metrics = [], []
    for r, b in enumerate(batches):
        copies = np.asarray(state.extra["copies"]).tolist()
        start = w * r  # the version at the round's start
        if r == 0:
            assert copies == [0] * w
        else:  # drawn at the previous round's end: lags 0..lag from this round's start
            assert all(max(start - lag, 0) <= c <= start for c in copies), copies
        recorded.append(copies)
        state, m = update(state, b)
        metrics.append(m)
    lags = [w * r - c for r, cs in enumerate(recorded[1:], 1) for c in cs]
    assert len(set(lags)) > 1  # the draws differ, so the test tells copies apart
    want = hand_a3c(config, network, params0, batches, lambda r, v: recorded[r])
    _assert_tree_close(
        state.params,
        jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state.params), want[-1]),
    )
    for r, m in enumerate(metrics):
        expect = np.mean([w * r + i - c for i, c in enumerate(recorded[r])])
        np.testing.assert_allclose(float(m["staleness"]), expect)


def _decided(params):
    """``params`` with a policy head that always picks action 0 (logits 50 vs -50): acting
    with them instead of the intended version shows in the actions, although the versions'
    near-uniform logits alone would sample the same actions."""
    params = jax.tree_util.tree_map(lambda x: x, params)  # a copy to change
    params["params"]["Dense_0"]["bias"] = jnp.array([50.0, -50.0])
    return params


@pytest.mark.slow  # a3c updates of several workers' copies compile for seconds
def test_a3c_acts_with_each_workers_copy():
    config = Config(**BASE, mode="a3c", workers=2, staleness="fixed", max_staleness=2)
    network, state, update, act = _setup(config)
    for seed in range(3):
        state, _ = update(state, make_batch(seed))
    copies = np.asarray(state.extra["copies"])
    assert copies.tolist() == [4, 4]  # 6 applies so far, lag 2
    obs = make_batch(9).obs[0]
    key = jax.random.PRNGKey(3)
    actions, _ = act(state, obs, key)
    logits = []
    for i, c in enumerate(copies):
        params = A.ring_get(state.extra["ring"], int(c))
        logits.append(network.apply(params, obs[2 * i : 2 * i + 2])[0])
    _, sample_key = jax.random.split(key)
    want = jax.random.categorical(sample_key, jnp.concatenate(logits)).astype(jnp.int32)
    np.testing.assert_array_equal(np.asarray(actions), np.asarray(want))
    # The current parameters play no part in acting.
    assert np.asarray(want).any()
    actions, _ = act(state._replace(params=_decided(state.params)), obs, key)
    np.testing.assert_array_equal(np.asarray(actions), np.asarray(want))


@pytest.mark.slow  # a3c and sync updates side by side compile for seconds
def test_a3c_logs_loss_terms_as_sync_does():
    """In the first round every worker holds sync's parameters, so the round's logged loss
    terms are sync's: means over all real steps, although the two workers' halves of the
    batch hold different numbers of reset steps (2 and 1)."""
    batch = make_batch(0)
    assert [batch.mask[:, :2].sum(), batch.mask[:, 2:].sum()] == [6, 7]
    _, sync_state, sync_update, _ = _setup(Config(**BASE))
    _, state, update, _ = _setup(Config(**BASE, mode="a3c", workers=2))
    _, want = sync_update(sync_state, batch)
    _, got = update(state, batch)
    for k in ("policy_loss", "value_loss", "entropy", "explained_variance"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)


def test_uniform_staleness_draws_lags_in_range():
    config = Config(**BASE, mode="a3c", workers=4, staleness="uniform", max_staleness=3)
    key = jax.random.PRNGKey(0)
    lags = []
    for _ in range(200):
        copies, key = A.next_copies(config, jnp.int32(100), key)
        lags.extend((104 - np.asarray(copies)).tolist())
    counts = np.bincount(lags, minlength=4)
    assert len(counts) == 4 and counts.min() > 150  # each of 0..3 about 200 times
    early, _ = A.next_copies(config, jnp.int32(0), key)
    assert np.asarray(early).min() >= 0  # never before version 0


def test_a3c_lr_follows_a3c_convention():
    config = Config(**{**BASE, "lr_schedule": "linear"}, mode="a3c", workers=4)
    schedule = L.make_lr_schedule(config)
    np.testing.assert_allclose(float(schedule(0)), 0.05 / 4)
    # 100 rounds of 4 applies: the lr reaches 0 after 400 optimiser steps.
    np.testing.assert_allclose(float(schedule(200)), 0.05 / 4 / 2, rtol=1e-6)


# --------------------------------------------------------------------------- #
# ga3c
# --------------------------------------------------------------------------- #
@pytest.mark.slow  # several ga3c updates over the ring compile for seconds
def test_ga3c_acts_with_the_params_of_lag_updates_ago():
    lag = 2
    config = Config(**BASE, mode="ga3c", policy_lag=lag)
    network, state, update, act = _setup(config)
    history = [state.params]
    obs = make_batch(7).obs[0]
    key = jax.random.PRNGKey(5)
    for k in range(5):
        actions, _ = act(state, obs, key)
        want, _ = L.make_act(network)(history[max(k - lag, 0)], obs, key)
        np.testing.assert_array_equal(np.asarray(actions), np.asarray(want))
        assert np.asarray(want).any()  # so that acting with _decided params would show
        actions, _ = act(state._replace(params=_decided(state.params)), obs, key)
        np.testing.assert_array_equal(np.asarray(actions), np.asarray(want))
        state, m = update(state, make_batch(k))
        history.append(state.params)
        assert float(m["staleness"]) == min(k, lag)
    # The gradient is taken at the current parameters: the update is sync's.
    sync = Config(**BASE)
    _, s_state, s_update, _ = _setup(sync)
    for k in range(5):
        s_state, _ = s_update(s_state, make_batch(k))
    _assert_tree_close(state.params, s_state.params, rtol=1e-6, atol=1e-7)
    for back in range(lag + 1):
        _assert_tree_close(A.ring_get(state.extra["ring"], 5 - back), history[5 - back], 0, 0)


# --------------------------------------------------------------------------- #
# Staleness 0 is sync PAAC, through real rollouts
# --------------------------------------------------------------------------- #
def _train_updates(config: Config, updates: int):
    network = L.network_for(config, SPEC)
    algorithm = L.make_algorithm(config, network, SPEC)
    init_key, act_key = jax.random.split(jax.random.PRNGKey(config.seed))
    state = L.init_state(config, network, SPEC, init_key)
    act, update = jax.jit(algorithm.act), jax.jit(algorithm.update)
    env = make_training_env(config)
    obs, _ = env.reset()
    carry = RolloutCarry(act_key, obs, np.zeros(config.n_envs, bool))
    stats = EpisodeStats(config.n_envs)
    actions = []
    for _ in range(updates):
        batch, carry = collect_rollout(env, act, state, carry, stats, config.t_max)
        actions.append(batch.action)
        state, _ = update(state, batch)
    env.close()
    return state, np.stack(actions)


@pytest.mark.parametrize(
    "mode", [dict(mode="a3c", workers=1), dict(mode="ga3c", policy_lag=0)], ids=["a3c", "ga3c"]
)
@pytest.mark.slow  # trains sync and async side by side with EnvPool environments
def test_staleness_zero_equals_sync(mode):
    base = dict(BASE, n_envs=8, t_max=5, total_steps=8 * 5 * 100, lr=0.01, seed=3)
    sync_state, sync_actions = _train_updates(Config(**base), 12)
    state, actions = _train_updates(Config(**base, **mode), 12)
    np.testing.assert_array_equal(actions, sync_actions)  # same data, step for step
    _assert_tree_close(state.params, sync_state.params, rtol=1e-6, atol=1e-7)
    _assert_tree_close(state.opt_state, sync_state.opt_state, rtol=1e-6, atol=1e-7)


def test_async_modes_reject_value_algos_and_uneven_workers():
    with pytest.raises(ConfigError, match="--mode='a3c'.*a2c"):
        Config(**BASE, mode="a3c", algo="nstep_q")
    with pytest.raises(ConfigError, match="--workers=3.*--n-envs=4"):
        Config(**BASE, mode="a3c", workers=3)
    with pytest.raises(ConfigError, match="--staleness='lifo'"):
        Config(**BASE, mode="a3c", staleness="lifo")


@pytest.mark.slow
def test_a_ring_larger_than_memory_is_refused(script, tmp_path):
    """Parameter versions an update cannot hold in the device's memory: one line naming the
    setting, before any allocation (not XLA's out-of-memory error, nor the OOM killer)."""
    from paac.run.memory import check_state_fits, device_memory

    network = make_network("mlp", NA)
    big = 2 * device_memory(jax.local_devices()[0]) // (4 * 4 * 64)  # versions to fill 2x
    check_state_fits(Config(**BASE, mode="ga3c", policy_lag=1000), network, SPEC)  # fits
    with pytest.raises(ConfigError, match=f"--max-staleness={big} with --workers=4 keeps"):
        config = Config(**BASE, mode="a3c", staleness="uniform", max_staleness=big)
        check_state_fits(config, network, SPEC)
    out = script(
        "control.py", "--mode", "ga3c", "--policy-lag", str(big), "--total-steps", "800",
        "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("paac: error: the learner state is ")
    assert f"(--policy-lag={big} keeps {big + 1} copies" in out.stderr
    assert "more than the" in out.stderr and not os.listdir(tmp_path)
    # An update holds the state about three times over: a ring of half the memory is
    # refused, one of a quarter fits.
    params = network.init(jax.random.PRNGKey(0), np.zeros((1, 4), np.float32))
    version = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    memory = device_memory(jax.local_devices()[0])
    with pytest.raises(ConfigError, match="about 3 times over"):
        lag = memory // 2 // version
        check_state_fits(Config(**BASE, mode="ga3c", policy_lag=lag), network, SPEC)
    lag = memory // 4 // version
    check_state_fits(Config(**BASE, mode="ga3c", policy_lag=lag), network, SPEC)
