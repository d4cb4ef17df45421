"""Value-based methods: targets against a NumPy oracle, epsilons, the target network."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paac.algorithms.build import init_state, make_algorithm, network_for
from paac.algorithms.value import draw_final_epsilons, epsilon, q_targets
from paac.core.config import Config
from paac.core.types import Batch, EnvSpec
from tests.test_learner import _leaves, assert_one_tf_rmsprop_step

GAMMA = 0.9


def oracle_targets(algo, q_next, next_action, r, terminated, truncated):
    """Plain loops from the definitions (Mnih et al. 2016), per environment."""
    T, N, _ = q_next.shape
    g = np.zeros((T, N))
    for i in range(N):
        for t in reversed(range(T)):
            disc = GAMMA * (1.0 - terminated[t, i])
            if algo == "sarsa":
                boot = q_next[t, i, next_action[t, i]]
            else:
                boot = q_next[t, i].max()
            done = terminated[t, i] or truncated[t, i]
            if algo == "nstep_q" and not done and t < T - 1:
                g[t, i] = r[t, i] + disc * g[t + 1, i]  # carry on through the rollout
            else:
                g[t, i] = r[t, i] + disc * boot  # one-step, or the n-step bootstrap
    return g


def random_batch(seed, T=6, N=5, A=3):
    rng = np.random.default_rng(seed)
    terminated = rng.random((T, N)) < 0.15
    truncated = (rng.random((T, N)) < 0.15) & ~terminated
    r = rng.normal(size=(T, N))
    done_before = np.concatenate([np.zeros((1, N), bool), (terminated | truncated)[:-1]])
    r[done_before] = 0.0  # reset steps: reward 0
    q_next = rng.normal(size=(T, N, A)) * 3
    next_action = rng.integers(0, A, size=(T, N))
    return q_next, next_action, r, terminated, truncated


class TargetsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_targets_match_the_oracle(self):
        for algo in ("nstep_q", "q", "sarsa"):
            for seed in range(4):
                q_next, a_next, r, term, trunc = random_batch(seed)
                f = self.variant(lambda *x, algo=algo: q_targets(algo, *x))
                got = f(
                    q_next.astype(np.float32), a_next.astype(np.int32), r.astype(np.float32),
                    (GAMMA * (1.0 - term)).astype(np.float32), term | trunc,
                )  # fmt: skip
                want = oracle_targets(algo, q_next, a_next, r, term, trunc)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=algo)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_case(self):
        # One env, T=3, gamma 0.9. Step 0 truncated (bootstrap from the final observation,
        # q_next[0]), step 1 is the reset step, step 2 the last step.
        q_next = np.array([[[1.0, 4.0]], [[100.0, -100.0]], [[2.0, 0.0]]], np.float32)
        a_next = np.array([[0], [1], [1]], np.int32)
        r = np.array([[1.0], [0.0], [3.0]], np.float32)
        trunc = np.array([[True], [False], [False]])
        disc = np.full((3, 1), GAMMA, np.float32)
        f = self.variant(lambda algo, *x: q_targets(algo, *x), static_argnums=0)
        # Q: 1 + .9*4 = 4.6 (final obs), reset step 0 + .9*100, 3 + .9*2 = 4.8
        np.testing.assert_allclose(f("q", q_next, a_next, r, disc, trunc), [[4.6], [90], [4.8]])
        # Sarsa bootstraps on the action actually taken next: q_next[0, 0, 0] = 1 -> 1.9.
        np.testing.assert_allclose(
            f("sarsa", q_next, a_next, r, disc, trunc), [[1.9], [-90], [3.0]], rtol=1e-6
        )
        # n-step Q: step 0 is done (truncated): 4.6; step 1 carries step 2's return:
        # 0 + .9 * 4.8 = 4.32; step 2 bootstraps: 4.8.
        np.testing.assert_allclose(
            f("nstep_q", q_next, a_next, r, disc, trunc), [[4.6], [4.32], [4.8]], rtol=1e-6
        )
        # Terminated instead: no bootstrap at step 0.
        disc_t = np.array([[0.0], [GAMMA], [GAMMA]], np.float32)
        np.testing.assert_allclose(
            f("nstep_q", q_next, a_next, r, disc_t, trunc), [[1.0], [4.32], [4.8]], rtol=1e-6
        )


def test_final_epsilon_frequencies():
    config = Config(env="CartPole-v1", arch="mlp", algo="nstep_q")
    eps = np.asarray(draw_final_epsilons(config, jax.random.PRNGKey(0), 200_000))
    for value, prob in zip(config.final_epsilons, config.final_epsilon_probs, strict=True):
        assert abs(np.mean(np.isclose(eps, value)) - prob) < 0.005, (value, prob)
    np.testing.assert_allclose(np.unique(eps), [0.01, 0.1, 0.5], rtol=1e-6)


def test_epsilon_anneals_linearly_from_one():
    config = Config(env="CartPole-v1", arch="mlp", algo="q", epsilon_anneal_steps=1000)
    final = np.array([0.1, 0.5], np.float32)
    np.testing.assert_allclose(epsilon(config, final, 0), [1.0, 1.0])
    np.testing.assert_allclose(epsilon(config, final, 500), [0.55, 0.75], rtol=1e-6)
    np.testing.assert_allclose(epsilon(config, final, 1000), final, rtol=1e-6)
    np.testing.assert_allclose(epsilon(config, final, 10**6), final, rtol=1e-6)
    flat = Config(env="CartPole-v1", arch="mlp", algo="q", epsilon_anneal_steps=0)
    np.testing.assert_allclose(epsilon(flat, final, 0), final)  # no annealing at all


SPEC = EnvSpec((4,), np.dtype("float32"), 2, False)
ATARI_SPEC = EnvSpec((4, 84, 84), np.dtype("uint8"), 2, True)


def _setup(algo, arch="mlp", **kw):
    spec = SPEC if arch == "mlp" else ATARI_SPEC
    env = "CartPole-v1" if arch == "mlp" else "Pong-v5"
    config = Config(env=env, arch=arch, algo=algo, n_envs=4, t_max=5, total_steps=10**5, **kw)
    network = network_for(config, spec)
    algorithm = make_algorithm(config, network, spec)
    state = init_state(config, network, spec, jax.random.PRNGKey(0))
    return config, algorithm, state


def _obs(rng, shape):
    if len(shape) == 1:
        return rng.normal(size=shape).astype(np.float32)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _batch(seed, T=5, N=4, obs_shape=(4,)):
    rng = np.random.default_rng(seed)
    return Batch(
        _obs(rng, (T, N, *obs_shape)),
        rng.integers(0, 2, (T, N)).astype(np.int32),
        rng.normal(size=(T, N)).astype(np.float32),
        np.zeros((T, N), bool),
        np.zeros((T, N), bool),
        np.ones((T, N), np.float32),
        _obs(rng, (N, *obs_shape)),
        rng.integers(0, 2, N).astype(np.int32),
    )


@pytest.mark.parametrize(
    "algo",  # one algorithm in the fast tier; each compiles its own updates
    [
        "nstep_q",
        pytest.param("q", marks=pytest.mark.slow),
        pytest.param("sarsa", marks=pytest.mark.slow),
    ],
)
def test_target_network_changes_only_at_its_interval(algo):
    """Batch of 20 steps, target_interval 50: refreshed after updates 3 (60) and 5 (100)."""
    config, algorithm, state = _setup(algo, target_interval=50)
    update = jax.jit(algorithm.update)
    initial = state.extra["target_params"]
    chex.assert_trees_all_equal(initial, state.params)
    refreshed_after = []
    for k in range(1, 7):
        before = state.extra["target_params"]
        state, metrics = update(state, _batch(k))
        target = state.extra["target_params"]
        if jax.tree.leaves(jax.tree.map(lambda a, b: bool((a != b).any()), before, target))[0]:
            refreshed_after.append(k)
            chex.assert_trees_all_equal(target, state.params)
        else:
            chex.assert_trees_all_equal(target, before)
        assert np.isfinite(float(metrics["value_loss"]))
    assert refreshed_after == [3, 5]


def test_act_is_epsilon_greedy():
    _, algorithm, state = _setup("q", final_epsilons=(0.0,), final_epsilon_probs=(1.0,),
                                 epsilon_anneal_steps=0)  # fmt: skip
    obs = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    act = jax.jit(algorithm.act)
    greedy, _ = algorithm.policy(True)(state.params, obs, None)
    actions, key = act(state, obs, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(actions, greedy)  # epsilon 0: always greedy
    _, algorithm, state = _setup("q", final_epsilons=(1.0,), final_epsilon_probs=(1.0,))
    act = jax.jit(algorithm.act)
    obs = np.repeat(obs[:1], 4, 0)
    key, counts = jax.random.PRNGKey(2), np.zeros(2)
    for _ in range(500):  # epsilon 1: uniform, whatever the Q values say
        actions, key = act(state, obs, key)
        counts += np.bincount(np.asarray(actions), minlength=2)
    assert abs(counts[0] / counts.sum() - 0.5) < 0.03


@pytest.mark.parametrize(
    "algo,arch",
    [
        ("nstep_q", "mlp"),
        ("q", "mlp"),
        ("sarsa", "mlp"),
        pytest.param("nstep_q", "nips", marks=pytest.mark.slow),  # CNN updates compile for
        pytest.param("sarsa", "nature", marks=pytest.mark.slow),  # seconds: the slow tier
    ],
)
def test_update_wiring_against_the_oracle(algo, arch):
    """The update's loss equals 0.5 (y - Q(s, a))^2 averaged over real steps, with y from the
    NumPy oracle on the TARGET network's values of the next observations (target network
    made different from the online one), next actions shifted by one, reset steps masked;
    and the new parameters equal one TF1 RMSProp step on t_max times that loss, unclipped
    (MLP) and clipped (CNN). The Q head on the CNN torsos too, on uint8 frames."""
    clip = 1e3 if arch == "mlp" else 3.0  # the gradient's scale shows only unclipped
    config, algorithm, state = _setup(algo, arch, gamma=GAMMA, clip_norm=clip)
    spec = SPEC if arch == "mlp" else ATARI_SPEC
    network = network_for(config, spec)
    scale = 0.3 if arch == "mlp" else 0.01
    noisy = jax.tree.map(lambda p: p + scale, state.params)
    state = state._replace(extra={**state.extra, "target_params": noisy})
    b = _batch(7, obs_shape=spec.obs_shape)
    term = np.zeros((5, 4), bool)
    trunc = np.zeros((5, 4), bool)
    term[1, 0], trunc[2, 1], term[4, 2] = True, True, True
    mask = np.ones((5, 4), np.float32)
    mask[2, 0], mask[3, 1] = 0.0, 0.0  # reset steps after the done steps
    b = b._replace(terminated=term, truncated=trunc, mask=mask)
    new_state, metrics = jax.jit(algorithm.update)(state, b)
    next_obs = np.concatenate([b.obs[1:], b.bootstrap_obs[None]])
    q_next = np.asarray(network.apply(noisy, next_obs), np.float64)
    a_next = np.concatenate([b.action[1:], b.next_action[None]])
    y = oracle_targets(algo, q_next, a_next, b.reward, term, trunc)
    q = np.asarray(network.apply(state.params, b.obs), np.float64)
    q_a = np.take_along_axis(q, b.action[..., None], -1)[..., 0]
    want = np.sum(mask * 0.5 * (y - q_a) ** 2) / mask.sum()
    rtol = 1e-5 if arch == "mlp" else 1e-4
    np.testing.assert_allclose(metrics["value_loss"], want, rtol=rtol)
    np.testing.assert_allclose(metrics["q_mean"], np.sum(mask * q_a) / mask.sum(), rtol=rtol)
    assert q.shape == (5, 4, spec.num_actions)

    # The parameter step: t_max times that loss (y held fixed), its gradient clipped to
    # the global norm and applied by TF1 RMSProp at the first update's learning rate.
    def loss(params):
        q = network.apply(params, b.obs)
        q_a = jnp.take_along_axis(q, jnp.asarray(b.action)[..., None], -1)[..., 0]
        return config.t_max * jnp.sum(mask * 0.5 * (y - q_a) ** 2) / mask.sum()

    grads = _leaves(jax.grad(loss)(state.params))
    norm = np.sqrt(sum(np.sum(g**2) for g in grads))
    assert (norm < config.clip_norm) == (arch == "mlp")  # the CNN cases are clipped
    assert_one_tf_rmsprop_step(config, state.params, new_state.params, grads, atol=1e-7)


@pytest.mark.parametrize(
    "update_count,eps", [pytest.param(2, 0.5, marks=pytest.mark.slow), (3, 0.25)]
)
def test_act_anneals_epsilon_over_all_environments_steps(update_count, eps):
    """Mid-anneal: epsilon falls from 1 to its final value (0 here) over agent steps summed
    over the environments (update_count x n_e x t_max = 20 per update, over 80 steps). A
    random action is the greedy one half the time with 2 actions: eps / 2 differ."""
    _, algorithm, state = _setup(
        "q", final_epsilons=(0.0,), final_epsilon_probs=(1.0,), epsilon_anneal_steps=80
    )
    state = state._replace(update_count=np.int32(update_count))
    obs = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    greedy, _ = algorithm.policy(True)(state.params, obs, None)
    act = jax.jit(algorithm.act)
    key, differs = jax.random.PRNGKey(4), 0
    for _ in range(1000):
        actions, key = act(state, obs, key)
        differs += int(np.sum(np.asarray(actions) != np.asarray(greedy)))
    assert abs(differs / 4000 - eps / 2) < 0.03


def test_each_environment_gets_its_final_epsilon():
    _, algorithm, state = _setup("q", epsilon_anneal_steps=20)
    final = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    state = state._replace(update_count=np.int32(10), extra={**state.extra, "final_epsilon": final})
    obs = np.repeat(np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32), 4, 0)
    greedy, _ = algorithm.policy(True)(state.params, obs, None)
    act = jax.jit(algorithm.act)
    key, differs = jax.random.PRNGKey(3), np.zeros(4)
    for _ in range(400):
        actions, key = act(state, obs, key)
        differs += np.asarray(actions) != np.asarray(greedy)
    assert differs[0] == differs[2] == 0  # epsilon 0: always greedy
    assert 150 < differs[1] < 250 and 150 < differs[3] < 250  # epsilon 1: uniform over 2
