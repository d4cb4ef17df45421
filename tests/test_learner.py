"""Tests for paac.learner: optimiser, schedule, the jitted update and action selection.

The update is checked against an oracle written here from the definitions:

* n-step returns (PAAC, Algorithm 1) with a plain Python backward loop over time;
  ``done = terminated | truncated`` cuts the recursion, a done or last step
  bootstraps from ``V(s_{t+1})`` (``V(obs[t+1])``, or ``V(bootstrap_obs)`` at
  ``t = T - 1``) with ``discount = gamma * (1 - terminated)``;
* GAE: ``delta_t = r_t + discount_t V(s_{t+1}) - V(s_t)``,
  ``A_t = delta_t + discount_t * lambda * (1 - done_t) * A_{t+1}``;
* the masked-mean A2C loss times ``t_max``;
* TF1 RMSProp in NumPy (float64): global-norm clip, ``ms`` initialised to 1,
  ``ms <- decay ms + (1 - decay) g^2``, ``p <- p - lr g / sqrt(ms + eps)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import paac as L
from paac.core.config import Config
from paac.core.types import EnvSpec
from paac.nets.networks import make_network

T, N, A = 4, 3, 2
SPEC = EnvSpec(obs_shape=(4,), obs_dtype=np.dtype("float32"), num_actions=A, is_image=False)

BASE = dict(
    env="CartPole-v1",
    arch="mlp",
    n_envs=N,
    t_max=T,
    total_steps=1200,  # num_updates = 1200 // (3 * 4) = 100
    lr=0.05,
    gamma=0.9,
    entropy_coef=0.5,
    value_coef=0.5,
    rms_decay=0.99,
    rms_eps=0.1,
)
# Two configurations, one jitted update each: n-step returns with an active clip
# (constant lr), GAE(0.9) with an inactive clip (linear lr).
CFG_NSTEP = Config(**BASE, gae_lambda=None, clip_norm=0.05, lr_schedule="constant")
CFG_GAE = Config(**BASE, gae_lambda=0.9, clip_norm=100.0, lr_schedule="linear")
CONFIGS = {"nstep": CFG_NSTEP, "gae": CFG_GAE}


@functools.cache
def _setup(config: Config):
    network = make_network("mlp", A)
    state = L.init_state(config, network, SPEC, jax.random.PRNGKey(0))
    update = jax.jit(L.make_update(config, network))
    return network, state, update


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


# --------------------------------------------------------------------------- #
# The batch: env 0 terminated at t=1 (t=2 is its reset step), env 1 truncated at
# t=2 (t=3 is its reset step), env 2's previous rollout ended on a done step (t=0
# is its reset step) and it then runs on to the end of the rollout.
# --------------------------------------------------------------------------- #
RESET_STEPS = [(2, 0), (3, 1), (0, 2)]


def make_batch(seed=0) -> L.Batch:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, N, 4)).astype(np.float32)
    action = rng.integers(0, A, size=(T, N)).astype(np.int32)
    reward = rng.normal(size=(T, N)).astype(np.float32)
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    terminated[1, 0] = True
    truncated[2, 1] = True
    mask = np.ones((T, N), np.float32)
    for t, n in RESET_STEPS:
        mask[t, n] = 0.0
        reward[t, n] = 0.0  # EnvPool's reset steps carry reward 0
    bootstrap_obs = rng.normal(size=(N, 4)).astype(np.float32)
    return L.Batch(obs, action, reward, terminated, truncated, mask, bootstrap_obs)


# --------------------------------------------------------------------------- #
# Oracles
# --------------------------------------------------------------------------- #
def oracle_loss(params, network, batch: L.Batch, config: Config):
    """The PAAC loss from the definitions; returns (loss, aux dict)."""
    logits, values = network.apply(params, jnp.asarray(batch.obs))
    _, v_boot = network.apply(params, jnp.asarray(batch.bootstrap_obs))
    v = jax.lax.stop_gradient(values)
    v_boot = jax.lax.stop_gradient(v_boot)
    terminated = jnp.asarray(batch.terminated)
    done = jnp.logical_or(terminated, jnp.asarray(batch.truncated))
    discount = config.gamma * (1.0 - terminated.astype(jnp.float32))
    r = jnp.asarray(batch.reward)
    n_steps = r.shape[0]
    v_next = [v[t + 1] if t < n_steps - 1 else v_boot for t in range(n_steps)]

    if config.gae_lambda is None:
        g = [None] * n_steps
        for t in reversed(range(n_steps)):
            if t == n_steps - 1:
                follow = v_next[t]
            else:
                follow = jnp.where(done[t], v_next[t], g[t + 1])
            g[t] = r[t] + discount[t] * follow
        returns = jnp.stack(g)
        adv = returns - v
    else:
        lam = config.gae_lambda
        a = [None] * n_steps
        a_next = jnp.zeros_like(v[0])
        for t in reversed(range(n_steps)):
            delta = r[t] + discount[t] * v_next[t] - v[t]
            a[t] = delta + discount[t] * lam * (1.0 - done[t]) * a_next
            a_next = a[t]
        adv = jnp.stack(a)
        returns = adv + v
    adv = jax.lax.stop_gradient(adv)
    returns = jax.lax.stop_gradient(returns)

    mask = jnp.asarray(batch.mask)
    msum = jnp.sum(mask)
    logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    onehot = jax.nn.one_hot(batch.action, logits.shape[-1])
    logp_a = jnp.sum(onehot * logp, axis=-1)
    pg = jnp.sum(mask * -logp_a * adv) / msum
    vl = jnp.sum(mask * 0.5 * (returns - values) ** 2) / msum
    ent = jnp.sum(mask * -jnp.sum(jnp.exp(logp) * logp, axis=-1)) / msum
    loss = config.t_max * (pg + config.value_coef * vl - config.entropy_coef * ent)
    return loss, dict(policy_loss=pg, value_loss=vl, entropy=ent, returns=returns, values=v)


# Jitted once per (network, config) only for speed; the arithmetic is the above.
_oracle_grad = jax.jit(jax.value_and_grad(oracle_loss, has_aux=True), static_argnums=(1, 3))
_oracle_loss_jit = jax.jit(oracle_loss, static_argnums=(1, 3))


def tf_rmsprop(params, grads_seq, lr_seq, *, decay, eps, clip):
    """TF1 RMSProp with global-norm clipping, NumPy float64, on lists of leaves."""
    p = [np.array(x, np.float64) for x in params]
    ms = [np.ones_like(x) for x in p]
    for grads, lr in zip(grads_seq, lr_seq, strict=True):
        g = [np.array(x, np.float64) for x in grads]
        norm = np.sqrt(sum(np.sum(x**2) for x in g))
        scale = min(1.0, clip / norm)
        g = [x * scale for x in g]
        ms = [decay * m + (1.0 - decay) * x**2 for m, x in zip(ms, g, strict=True)]
        p = [pi - lr * x / np.sqrt(m + eps) for pi, x, m in zip(p, g, ms, strict=True)]
    return p


def oracle_explained_variance(values, returns, mask):
    keep = np.asarray(mask) > 0
    y = np.asarray(returns, np.float64)[keep]
    err = y - np.asarray(values, np.float64)[keep]
    return 1.0 - err.var() / y.var()


# --------------------------------------------------------------------------- #
# Optimiser and schedule
# --------------------------------------------------------------------------- #
G1 = {"a": np.array([0.3, -0.4], np.float32), "b": np.array([[1.2]], np.float32)}  # norm 1.3
G2 = {"a": np.array([-0.1, 0.5], np.float32), "b": np.array([[0.05]], np.float32)}  # ~0.512
P0 = {"a": np.array([1.0, -2.0], np.float32), "b": np.array([[0.5]], np.float32)}


@pytest.mark.parametrize(
    "clip,schedule",
    [(3.0, "constant"), (1.0, "constant"), (0.2, "constant"), (1.0, "linear")],
)
def test_optimizer_matches_tf_rmsprop(clip, schedule):
    config = Config(**{**BASE, "lr": 0.01}, clip_norm=clip, lr_schedule=schedule)
    opt = L.make_optimizer(config)
    state = opt.init(P0)
    total = [np.zeros_like(x) for x in _leaves(P0)]  # summed in float64: no rounding by P0
    for g in (G1, G2):
        updates, state = opt.update(g, state, P0)
        total = [t + u for t, u in zip(total, _leaves(updates), strict=True)]
    lrs = [0.01, 0.01] if schedule == "constant" else [0.01, 0.01 * (1 - 1 / 100)]
    want = tf_rmsprop(_leaves(P0), [_leaves(G1), _leaves(G2)], lrs, decay=0.99, eps=0.1, clip=clip)
    for got, w, p0 in zip(total, want, _leaves(P0), strict=True):
        np.testing.assert_allclose(got, w - p0, rtol=1e-5, atol=1e-9)


def test_optimizer_first_step_hand_value():
    # No clip (norm 1.3 < 3): ms = 0.99 * 1 + 0.01 * 0.09 = 0.9909;
    # update = -0.01 * 0.3 / sqrt(0.9909 + 0.1) = -0.0028723...
    config = Config(**{**BASE, "lr": 0.01}, clip_norm=3.0, lr_schedule="constant")
    opt = L.make_optimizer(config)
    updates, _ = opt.update(G1, opt.init(P0), P0)
    np.testing.assert_allclose(updates["a"][0], -0.003 / np.sqrt(1.0909), rtol=1e-5)
    np.testing.assert_allclose(updates["a"][0], -0.0028723, rtol=1e-4)
    # Clip active (c = 1): g = 1.2 / 1.3; ms = 0.99 + 0.01 g^2.
    config = Config(**{**BASE, "lr": 0.01}, clip_norm=1.0, lr_schedule="constant")
    opt = L.make_optimizer(config)
    updates, _ = opt.update(G1, opt.init(P0), P0)
    g = 1.2 / 1.3
    np.testing.assert_allclose(
        updates["b"][0, 0], -0.01 * g / np.sqrt(0.99 + 0.01 * g * g + 0.1), rtol=1e-5
    )


def test_linear_lr_schedule():
    config = Config(**{**BASE, "lr": 0.02}, lr_schedule="linear")
    assert config.num_updates == 100
    sched = L.make_lr_schedule(config)
    for step, want in [(0, 0.02), (25, 0.015), (50, 0.01), (99, 0.0002), (100, 0.0), (150, 0.0)]:
        np.testing.assert_allclose(sched(step), want, rtol=1e-5, atol=1e-9, err_msg=str(step))
    # num_updates rounds down: 1210 steps of batch 12 is still 100 updates.
    sched = L.make_lr_schedule(Config(**{**BASE, "lr": 0.02, "total_steps": 1210}))
    np.testing.assert_allclose(sched(50), 0.01, rtol=1e-5)
    np.testing.assert_allclose(sched(100), 0.0, atol=1e-9)
    # A different run length moves the end point.
    sched = L.make_lr_schedule(Config(**{**BASE, "lr": 0.02, "total_steps": 240}))  # 20 updates
    np.testing.assert_allclose(sched(10), 0.01, rtol=1e-5)
    np.testing.assert_allclose(sched(20), 0.0, atol=1e-9)


def test_constant_lr_schedule():
    sched = L.make_lr_schedule(Config(**{**BASE, "lr": 0.02}, lr_schedule="constant"))
    for step in (0, 50, 100, 1000):
        np.testing.assert_allclose(sched(step), 0.02, rtol=1e-6)


# --------------------------------------------------------------------------- #
# The update against the oracle
# --------------------------------------------------------------------------- #
def assert_one_tf_rmsprop_step(config, params, new_params, grads, atol=2e-7):
    """``new_params`` is one step of TF1 RMSProp with global-norm clipping from ``params``
    with ``grads`` (a list of leaves) at ``config.lr``, by the NumPy oracle."""
    want = tf_rmsprop(
        _leaves(params),
        [grads],
        [config.lr],
        decay=config.rms_decay,
        eps=config.rms_eps,
        clip=config.clip_norm,
    )
    for got, w, p0 in zip(_leaves(new_params), want, _leaves(params), strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
        # The change itself, which is much smaller than the parameters.
        np.testing.assert_allclose(got - p0, w - p0, rtol=2e-3, atol=atol)


@pytest.mark.parametrize("name", ["nstep", pytest.param("gae", marks=pytest.mark.slow)])
def test_update_matches_oracle(name):
    config = CONFIGS[name]
    network, state, update = _setup(config)
    batch = make_batch(0)
    new_state, metrics = update(state, batch)

    (_, aux), grads = _oracle_grad(state.params, network, batch, config)
    g = _leaves(grads)
    grad_norm = np.sqrt(sum(np.sum(x**2) for x in g))
    if name == "nstep":
        assert grad_norm > config.clip_norm  # this case exercises the clip
    else:
        assert grad_norm < config.clip_norm  # and this one does not
    assert_one_tf_rmsprop_step(config, state.params, new_state.params, g)

    np.testing.assert_allclose(metrics["policy_loss"], aux["policy_loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["value_loss"], aux["value_loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["entropy"], aux["entropy"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-5)
    np.testing.assert_allclose(metrics["lr"], config.lr, rtol=1e-6)
    np.testing.assert_allclose(
        metrics["explained_variance"],
        oracle_explained_variance(aux["values"], aux["returns"], batch.mask),
        rtol=1e-4,
        atol=1e-5,
    )


def _update_params(name, batch):
    _, state, update = _setup(CONFIGS[name])
    new_state, _ = update(state, batch)
    return _leaves(new_state.params)


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)


def _assert_differs(a, b):
    assert any(not np.allclose(x, y, rtol=1e-6, atol=1e-9) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["nstep", "gae"])
def test_reset_step_reward_and_action_are_ignored(name):
    batch = make_batch(1)
    base = _update_params(name, batch)
    reward = batch.reward.copy()
    action = batch.action.copy()
    for t, n in RESET_STEPS:
        reward[t, n] = 1e6
        action[t, n] = 1 - action[t, n]
    _assert_same(base, _update_params(name, batch._replace(reward=reward, action=action)))
    # Control: the same change on a real step does change the update.
    reward = batch.reward.copy()
    reward[1, 2] = 1e6
    _assert_differs(base, _update_params(name, batch._replace(reward=reward)))
    action = batch.action.copy()
    action[1, 2] = 1 - action[1, 2]
    _assert_differs(base, _update_params(name, batch._replace(action=action)))


@pytest.mark.parametrize("name", ["nstep", "gae"])
def test_truncated_step_bootstraps_from_reset_step_obs(name):
    # Env 1 truncated at t=2: obs[3, 1] is the true final observation, its value
    # is the bootstrap of step 2, so changing it must change the update.
    batch = make_batch(2)
    base = _update_params(name, batch)
    obs = batch.obs.copy()
    obs[3, 1] = obs[3, 1] + 3.0
    _assert_differs(base, _update_params(name, batch._replace(obs=obs)))


@pytest.mark.parametrize("name", ["nstep", "gae"])
def test_truncated_bootstrap_obs_agrees_with_oracle(name):
    # The update on a batch with a changed final observation still matches the oracle.
    config = CONFIGS[name]
    network, state, update = _setup(config)
    batch = make_batch(3)
    obs = batch.obs.copy()
    obs[3, 1] = 5.0
    batch = batch._replace(obs=obs)
    new_state, metrics = update(state, batch)
    _, aux = _oracle_loss_jit(state.params, network, batch, config)
    np.testing.assert_allclose(metrics["value_loss"], aux["value_loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["policy_loss"], aux["policy_loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["nstep", "gae"])
def test_terminated_step_ignores_reset_step_obs(name):
    # Env 0 terminated at t=1: obs[2, 0] is not bootstrapped from (discount 0) and
    # step 2 is masked, so the update must not depend on it.
    batch = make_batch(4)
    base = _update_params(name, batch)
    obs = batch.obs.copy()
    obs[2, 0] = obs[2, 0] + 100.0
    _assert_same(base, _update_params(name, batch._replace(obs=obs)))
    # Control: a real step's observation matters.
    obs = batch.obs.copy()
    obs[1, 0] = obs[1, 0] + 3.0
    _assert_differs(base, _update_params(name, batch._replace(obs=obs)))


@pytest.mark.parametrize("name", ["nstep", "gae"])
def test_bootstrap_obs_used_only_where_last_step_is_real(name):
    batch = make_batch(5)
    base = _update_params(name, batch)
    # Env 1's last step is a reset step: its bootstrap observation is never used.
    boot = batch.bootstrap_obs.copy()
    boot[1] = boot[1] + 100.0
    _assert_same(base, _update_params(name, batch._replace(bootstrap_obs=boot)))
    # Env 2's last step is real and not done: it bootstraps from bootstrap_obs[2].
    boot = batch.bootstrap_obs.copy()
    boot[2] = boot[2] + 3.0
    _assert_differs(base, _update_params(name, batch._replace(bootstrap_obs=boot)))


def test_update_count_lr_metric_and_finite_metrics():
    config = CFG_GAE  # linear schedule, 100 updates
    _, state, update = _setup(config)
    assert int(state.update_count) == 0
    lrs = []
    for k in range(3):
        before = int(state.update_count)
        state, metrics = update(state, make_batch(10 + k))
        assert int(state.update_count) == before + 1
        lrs.append(float(metrics["lr"]))
        for key, value in metrics.items():
            assert np.isfinite(np.asarray(value)).all(), key
        assert float(metrics["entropy"]) > 0
    np.testing.assert_allclose(lrs, [0.05, 0.05 * 0.99, 0.05 * 0.98], rtol=1e-5)
    sched = L.make_lr_schedule(config)
    np.testing.assert_allclose(lrs, [sched(0), sched(1), sched(2)], rtol=1e-6)


def test_init_state():
    network, state, _ = _setup(CFG_NSTEP)
    assert state.update_count.dtype == jnp.int32
    assert int(state.update_count) == 0
    fresh = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    _assert_same(_leaves(state.params), _leaves(fresh))


# --------------------------------------------------------------------------- #
# Action selection
# --------------------------------------------------------------------------- #
@functools.cache
def _act_setup():
    network = make_network("mlp", 3)
    params = network.init(jax.random.PRNGKey(7), jnp.zeros((1, 4), jnp.float32))
    return network, params, jax.jit(L.make_act(network)), jax.jit(L.make_greedy_act(network))


def _fixed_logit_params(params, bias):
    """Policy head with zero kernel and the given bias: logits == bias for every obs."""
    p = jax.tree_util.tree_map(lambda x: x, params)
    head = dict(p["params"]["Dense_0"])
    head["kernel"] = jnp.zeros_like(head["kernel"])
    head["bias"] = jnp.asarray(bias, jnp.float32)
    inner = dict(p["params"])
    inner["Dense_0"] = head
    return {**p, "params": inner}


def test_act_valid_new_key_deterministic():
    _, params, act, _ = _act_setup()
    obs = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    actions, new_key = act(params, obs, key)
    actions = np.asarray(actions)
    assert actions.shape == (500,) and actions.dtype == np.int32
    assert actions.min() >= 0 and actions.max() < 3
    assert not np.array_equal(np.asarray(new_key), np.asarray(key))
    again, again_key = act(params, obs, key)
    np.testing.assert_array_equal(again, actions)
    np.testing.assert_array_equal(np.asarray(again_key), np.asarray(new_key))
    # The returned key gives fresh samples.
    other, _ = act(params, obs, new_key)
    assert not np.array_equal(np.asarray(other), actions)


def test_act_frequencies_match_softmax():
    _, params, act, _ = _act_setup()
    bias = np.array([0.5, -1.0, 1.5])
    fixed = _fixed_logit_params(params, bias)
    n = 20_000
    obs = np.random.default_rng(1).normal(size=(n, 4)).astype(np.float32)
    actions, _ = act(fixed, obs, jax.random.PRNGKey(11))
    freq = np.bincount(np.asarray(actions), minlength=3) / n
    p = np.exp(bias) / np.exp(bias).sum()  # [0.2546, 0.0568, 0.6886]
    np.testing.assert_allclose(freq, p, atol=0.02)


def test_greedy_act_is_argmax():
    network, params, _, greedy = _act_setup()
    obs = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    key = jax.random.PRNGKey(5)
    actions, out_key = greedy(params, obs, key)
    logits, _ = network.apply(params, obs)
    want = np.argmax(np.asarray(logits), axis=-1)
    assert len(np.unique(want)) > 1  # a non-trivial check
    np.testing.assert_array_equal(np.asarray(actions), want)
    np.testing.assert_array_equal(np.asarray(out_key), np.asarray(key))
    fixed = _fixed_logit_params(params, [0.1, 2.0, -1.0])
    actions, _ = greedy(fixed, obs, key)
    np.testing.assert_array_equal(np.asarray(actions), np.ones(64, np.int32))
