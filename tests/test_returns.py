"""Tests for paac.returns against an independent NumPy oracle and hand-worked cases.

Semantics (see the module docstring of paac.returns):
  * step t: (s_t, a_t) -> (r_t, s_{t+1}); v_tm1[t] = V(s_t), v_t[t] = V(s_{t+1}).
  * discount_t = gamma * (1 - terminated_t); done_t = terminated_t or truncated_t.
  * G_t = r_t + discount_t * (v_t[t] if done_t or t == T-1 else G_{t+1}).
  * delta_t = r_t + discount_t * v_t[t] - v_tm1[t];
    A_t = delta_t + discount_t * lambda * (1 - done_t) * A_{t+1}, A_T = 0.
  * The step after a done step is a reset step (reward 0, not experience).
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from paac.ops import returns as R

GAMMA = 0.9
N_ENVS = 7
SEEDS = (0, 1, 2)
LENGTHS = (1, 5, 20)
LAMBDAS = (0.0, 0.5, 0.95, 1.0)


# --------------------------------------------------------------------------- #
# Independent NumPy oracle (float64, plain backwards loops, written from the math).
# --------------------------------------------------------------------------- #
def oracle_nstep(r, discount, v_t, done):
    """G_t = r_t + discount_t * (v_t[t] if done_t or last step else G_{t+1})."""
    r, discount, v_t = (np.asarray(x, np.float64) for x in (r, discount, v_t))
    done = np.asarray(done).astype(bool)
    T = r.shape[0]
    g = np.zeros(T, np.float64)
    for t in range(T - 1, -1, -1):
        if done[t] or t == T - 1:
            follow = v_t[t]
        else:
            follow = g[t + 1]
        g[t] = r[t] + discount[t] * follow
    return g


def oracle_gae(r, discount, v_tm1, v_t, done, lam):
    """A_t = delta_t + discount_t * lam * (1 - done_t) * A_{t+1}, with A_T = 0."""
    r, discount, v_tm1, v_t = (np.asarray(x, np.float64) for x in (r, discount, v_tm1, v_t))
    done = np.asarray(done).astype(bool)
    T = r.shape[0]
    adv = np.zeros(T, np.float64)
    a_next = 0.0  # A_T = 0
    for t in range(T - 1, -1, -1):
        delta = r[t] + discount[t] * v_t[t] - v_tm1[t]
        cont = 0.0 if done[t] else discount[t] * lam * a_next
        adv[t] = delta + cont
        a_next = adv[t]
    return adv


def oracle_batched(fn, *cols, **kw):
    """Apply a per-trajectory oracle to each column of time-major [T, N] arrays."""
    n = np.asarray(cols[0]).shape[1]
    return np.stack([fn(*(np.asarray(c)[:, i] for c in cols), **kw) for i in range(n)], axis=1)


# --------------------------------------------------------------------------- #
# Random EnvPool-like batches.
# --------------------------------------------------------------------------- #
def make_batch(seed, T, N=N_ENVS, gamma=GAMMA, garbage=1e3, p_term=0.2, p_trunc=0.15):
    """Time-major [T, N] batch with terminations, truncations and reset steps.

    A reset step follows every done step (and step 0 if ``done_before``): it has
    reward 0, is neither terminated nor truncated, and carries garbage values.
    """
    rng = np.random.default_rng(seed)
    done_before = rng.random(N) < 0.3
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    is_reset = np.zeros((T, N), bool)
    r = rng.normal(size=(T, N))
    v_tm1 = 3.0 * rng.normal(size=(T, N))
    v_t = 3.0 * rng.normal(size=(T, N))
    for n in range(N):
        prev_done = done_before[n]
        for t in range(T):
            if prev_done:
                is_reset[t, n] = True
                r[t, n] = 0.0
                v_tm1[t, n] = rng.uniform(-garbage, garbage)
                v_t[t, n] = rng.uniform(-garbage, garbage)
                prev_done = False
            else:
                u = rng.random()
                terminated[t, n] = u < p_term
                truncated[t, n] = p_term <= u < p_term + p_trunc
                prev_done = terminated[t, n] or truncated[t, n]
    done = terminated | truncated
    discount = gamma * (1.0 - terminated)
    return dict(
        r=r.astype(np.float32),
        discount=discount.astype(np.float32),
        v_tm1=v_tm1.astype(np.float32),
        v_t=v_t.astype(np.float32),
        done=done,
        terminated=terminated,
        truncated=truncated,
        is_reset=is_reset,
        done_before=done_before,
    )


def make_consistent(b):
    """Make v_t[t] == v_tm1[t+1] wherever the episode continues (not done at t).

    This is what a real rollout satisfies, and what the lambda=1 identity needs.
    Reset steps keep their garbage v_tm1 (they follow a done step).
    """
    b = dict(b)
    v_t = b["v_t"].copy()
    cont = ~b["done"][:-1]
    v_t[:-1] = np.where(cont, b["v_tm1"][1:], v_t[:-1])
    b["v_t"] = v_t
    return b


def make_multi_seed_batch(T, seeds=SEEDS, n=N_ENVS, consistent=False):
    """Several seeds' [T, n] batches side by side: one [T, len(seeds) * n] batch.

    Environments are independent, so this is the same test as one call per seed
    while keeping the number of (slow, un-jitted) calls small. Without
    ``consistent`` the reset steps hold garbage in both v_tm1 and v_t.
    """
    parts = [make_batch(s, T, n) for s in seeds]
    if consistent:
        parts = [make_consistent(p) for p in parts]
    return {k: np.concatenate([p[k] for p in parts], axis=-1) for k in parts[0]}


def _columns(b, k=3):
    """A few environments to check the unbatched functions on, busiest first."""
    busy = b["done"].sum(0) + b["is_reset"].sum(0)
    return list(np.argsort(-busy, kind="stable")[:k])


T_PARAMS = [dict(testcase_name=f"T{T}", T=T) for T in LENGTHS]


def _assert_vs_oracle(got, want, is_reset):
    got = np.asarray(got)
    # Real experience: tight tolerances.
    np.testing.assert_allclose(got[~is_reset], want[~is_reset], rtol=1e-5, atol=1e-5)
    # Reset steps: the oracle defines them too, but they hold ~1e3 garbage values,
    # so allow float32 rounding at that scale.
    np.testing.assert_allclose(got[is_reset], want[is_reset], rtol=1e-5, atol=1e-2)


class RandomBatchTest(chex.TestCase):
    def test_generator_covers_all_cases(self):
        # The random batches must actually contain every kind of step.
        b = make_multi_seed_batch(20)
        self.assertTrue((np.abs(b["v_t"][b["is_reset"]]) > 10).any())  # garbage present
        b = make_multi_seed_batch(20, consistent=True)
        self.assertTrue(b["terminated"].any())
        self.assertTrue((b["truncated"] & ~b["terminated"]).any())
        self.assertTrue(b["is_reset"].any())
        self.assertTrue(b["done_before"].any())
        self.assertTrue((~b["done"] & ~b["is_reset"]).any())
        self.assertTrue((np.abs(b["v_tm1"][b["is_reset"]]) > 10).any())  # garbage present
        # Reset steps are exactly the steps after a done step.
        prev = np.concatenate([b["done_before"][None], b["done"][:-1]], axis=0)
        np.testing.assert_array_equal(prev, b["is_reset"])
        self.assertTrue((b["r"][b["is_reset"]] == 0).all())
        self.assertFalse((b["done"] & b["is_reset"]).any())
        # Consistency: the observation after a non-done step is the next step's observation.
        np.testing.assert_array_equal(
            b["v_t"][:-1][~b["done"][:-1]], b["v_tm1"][1:][~b["done"][:-1]]
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*T_PARAMS)
    def test_nstep_returns_vs_oracle(self, T):
        b = make_multi_seed_batch(T)
        want = oracle_batched(oracle_nstep, b["r"], b["discount"], b["v_t"], b["done"])
        # Batched, time-major.
        got_b = self.variant(R.batched_nstep_returns)(b["r"], b["discount"], b["v_t"], b["done"])
        chex.assert_shape(got_b, b["r"].shape)
        _assert_vs_oracle(got_b, want, b["is_reset"])
        # Unbatched, one environment at a time.
        fn = self.variant(R.nstep_returns)
        for i in _columns(b, 2):
            got = fn(b["r"][:, i], b["discount"][:, i], b["v_t"][:, i], b["done"][:, i])
            chex.assert_shape(got, (T,))
            _assert_vs_oracle(got, want[:, i], b["is_reset"][:, i])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*T_PARAMS)
    def test_gae_vs_oracle(self, T):
        b = make_multi_seed_batch(T)
        args = (b["r"], b["discount"], b["v_tm1"], b["v_t"], b["done"])
        # lambda_ is documented as ``float | Array``: pass it as a traced scalar here
        # (one compilation for all lambdas); the hand-worked, identity and analytic
        # tests pass it as a static Python float.
        fn = self.variant(R.gae)
        fn_b = self.variant(R.batched_gae)
        cols = _columns(b, 2)
        for lam in LAMBDAS:
            want = oracle_batched(oracle_gae, *args, lam=lam)
            got_b = fn_b(*args, jnp.float32(lam))
            chex.assert_shape(got_b, b["r"].shape)
            _assert_vs_oracle(got_b, want, b["is_reset"])
            if lam in (0.5, 0.95):  # unbatched on the busiest environments (eager calls are slow)
                i = cols[lam == 0.95]
                got = fn(*(x[:, i] for x in args), jnp.float32(lam))
                chex.assert_shape(got, (T,))
                _assert_vs_oracle(got, want[:, i], b["is_reset"][:, i])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*T_PARAMS[1:])  # T = 1 has no earlier step to leak into
    def test_reset_steps_do_not_leak(self, T):
        """Replacing everything in the reset steps changes no other step's output."""
        b = make_multi_seed_batch(T)
        rng = np.random.default_rng(1000 + T)
        m = b["is_reset"]
        b2 = dict(b)
        for k in ("r", "v_tm1", "v_t"):
            x = b[k].copy()
            x[m] = rng.uniform(-1e4, 1e4, size=m.sum()).astype(np.float32)
            b2[k] = x
        ret = self.variant(R.batched_nstep_returns)
        g1 = np.asarray(ret(b["r"], b["discount"], b["v_t"], b["done"]))
        g2 = np.asarray(ret(b2["r"], b2["discount"], b2["v_t"], b2["done"]))
        np.testing.assert_allclose(g2[~m], g1[~m], rtol=1e-6, atol=1e-6)
        adv = self.variant(R.batched_gae, static_argnums=5)
        a1 = np.asarray(adv(b["r"], b["discount"], b["v_tm1"], b["v_t"], b["done"], 0.95))
        a2 = np.asarray(adv(b2["r"], b2["discount"], b2["v_tm1"], b2["v_t"], b2["done"], 0.95))
        np.testing.assert_allclose(a2[~m], a1[~m], rtol=1e-6, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gae_identities(self):
        """gae(lambda=1) == nstep_returns - v_tm1 and gae(lambda=0) == TD error."""
        b = make_multi_seed_batch(
            20, consistent=True
        )  # consistent: v_t[t] == v_tm1[t+1] unless done_t
        ret = self.variant(R.batched_nstep_returns)(b["r"], b["discount"], b["v_t"], b["done"])
        adv = self.variant(R.batched_gae, static_argnums=5)
        a1 = adv(b["r"], b["discount"], b["v_tm1"], b["v_t"], b["done"], 1.0)
        # Reset steps have ~1e3 garbage v_tm1 on both sides: atol for float32 rounding.
        np.testing.assert_allclose(a1, np.asarray(ret) - b["v_tm1"], rtol=1e-5, atol=1e-3)
        a0 = adv(b["r"], b["discount"], b["v_tm1"], b["v_t"], b["done"], 0.0)
        td = b["r"].astype(np.float64) + b["discount"] * b["v_t"].astype(np.float64) - b["v_tm1"]
        np.testing.assert_allclose(a0, td, rtol=1e-5, atol=1e-3)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*T_PARAMS)
    def test_valid_mask_marks_reset_steps(self, T):
        b = make_multi_seed_batch(T)
        mask = self.variant(R.valid_mask)(b["done"], b["done_before"])
        chex.assert_shape(mask, b["r"].shape)
        np.testing.assert_array_equal(np.asarray(mask), (~b["is_reset"]).astype(np.float32))


class HandWorkedTest(chex.TestCase):
    """T = 3, gamma = 0.5, numbers computed by hand in the comments."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_termination_in_middle(self):
        # Step 1 terminates, step 2 is the reset step (reward 0).
        r = np.array([1.0, 2.0, 0.0], np.float32)
        terminated = np.array([0, 1, 0], bool)
        discount = 0.5 * (1.0 - terminated.astype(np.float32))  # [0.5, 0, 0.5]
        done = terminated
        v_t = np.array([10.0, 20.0, 30.0], np.float32)
        v_tm1 = np.array([4.0, 10.0, 99.0], np.float32)  # 99: garbage at the reset step
        # G2 = 0 + 0.5 * 30        = 15   (last step bootstraps from v_t[2])
        # G1 = 2 + 0   * 20        = 2    (terminated: no bootstrap)
        # G0 = 1 + 0.5 * G1        = 2
        g = self.variant(R.nstep_returns)(r, discount, v_t, done)
        np.testing.assert_allclose(g, [2.0, 2.0, 15.0], rtol=1e-6)
        # delta = [1 + 0.5*10 - 4, 2 + 0 - 10, 0 + 0.5*30 - 99] = [2, -8, -84]
        # lambda = 0.5: A2 = -84; A1 = -8 (done); A0 = 2 + 0.5*0.5*(-8) = 0
        gae = self.variant(R.gae, static_argnums=5)
        np.testing.assert_allclose(
            gae(r, discount, v_tm1, v_t, done, 0.5), [0.0, -8.0, -84.0], atol=1e-5
        )
        # lambda = 1: A0 = 2 + 0.5*(-8) = -2 = G0 - v_tm1[0] = 2 - 4
        np.testing.assert_allclose(
            gae(r, discount, v_tm1, v_t, done, 1.0), [-2.0, -8.0, -84.0], atol=1e-5
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_truncation_in_middle(self):
        # Step 1 is truncated (not terminated): it bootstraps from v_t[1] = V(final obs) = 20
        # with the full discount 0.5, and not from G2 (the next episode).
        r = np.array([1.0, 2.0, 0.0], np.float32)
        truncated = np.array([0, 1, 0], bool)
        discount = np.full(3, 0.5, np.float32)  # nothing terminated
        done = truncated
        v_t = np.array([10.0, 20.0, 30.0], np.float32)
        v_tm1 = np.array([4.0, 10.0, 99.0], np.float32)
        # G2 = 0 + 0.5 * 30 = 15
        # G1 = 2 + 0.5 * 20 = 12   (would be 2 + 0.5*15 = 9.5 if it leaked into step 2)
        # G0 = 1 + 0.5 * 12 = 7
        g = self.variant(R.nstep_returns)(r, discount, v_t, done)
        np.testing.assert_allclose(g, [7.0, 12.0, 15.0], rtol=1e-6)
        # delta = [1 + 5 - 4, 2 + 10 - 10, 0 + 15 - 99] = [2, 2, -84]
        # lambda = 0.5: A2 = -84; A1 = 2 (done); A0 = 2 + 0.25 * 2 = 2.5
        gae = self.variant(R.gae, static_argnums=5)
        np.testing.assert_allclose(
            gae(r, discount, v_tm1, v_t, done, 0.5), [2.5, 2.0, -84.0], atol=1e-5
        )
        # lambda = 1: A0 = 2 + 0.5 * 2 = 3 = G0 - v_tm1[0] = 7 - 4
        np.testing.assert_allclose(
            gae(r, discount, v_tm1, v_t, done, 1.0), [3.0, 2.0, -84.0], atol=1e-5
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_reset_step(self):
        # Step 0 is truncated (V(final obs) = 6), step 1 is the reset step holding
        # garbage (its reward is garbage too here, to show it cannot leak), step 2 real.
        discount = np.full(3, 0.5, np.float32)
        done = np.array([1, 0, 0], bool)
        v_t = np.array([6.0, 7.0, 4.0], np.float32)
        r = np.array([1.0, 0.0, 2.0], np.float32)
        v_tm1 = np.array([3.0, 500.0, 7.0], np.float32)
        # G2 = 2 + 0.5 * 4 = 4; G1 = 0 + 0.5 * G2 = 2; G0 = 1 + 0.5 * 6 = 4
        ret = self.variant(R.nstep_returns)
        np.testing.assert_allclose(ret(r, discount, v_t, done), [4.0, 2.0, 4.0], rtol=1e-6)
        # delta = [1 + 3 - 3, 0 + 3.5 - 500, 2 + 2 - 7] = [1, -496.5, -3]
        # lambda = 1: A2 = -3; A1 = -496.5 + 0.5*(-3) = -498; A0 = 1 (done)
        gae = self.variant(R.gae, static_argnums=5)
        np.testing.assert_allclose(
            gae(r, discount, v_tm1, v_t, done, 1.0), [1.0, -498.0, -3.0], rtol=1e-6
        )
        # Garbage in the reset step: G0 and A0 stay, G2 and A2 stay.
        r_bad = np.array([1.0, 1e4, 2.0], np.float32)
        v_t_bad = np.array([6.0, -1e4, 4.0], np.float32)
        v_tm1_bad = np.array([3.0, 3e4, 7.0], np.float32)
        g_bad = np.asarray(ret(r_bad, discount, v_t_bad, done))
        np.testing.assert_allclose(g_bad[[0, 2]], [4.0, 4.0], rtol=1e-6)
        a_bad = np.asarray(gae(r_bad, discount, v_tm1_bad, v_t_bad, done, 1.0))
        np.testing.assert_allclose(a_bad[[0, 2]], [1.0, -3.0], rtol=1e-6)
        # The mask drops the reset step: done_before = False, done = [1, 0, 0] -> [1, 0, 1].
        np.testing.assert_array_equal(
            self.variant(R.valid_mask)(done, np.array(False)), [1.0, 0.0, 1.0]
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_last_step_bootstraps(self):
        # No done at all: G2 = 3 + 0.5 * v_t[2] = 3 + 0.5*8 = 7;
        # G1 = 2 + 3.5 = 5.5; G0 = 1 + 2.75 = 3.75.
        # v_t[0], v_t[1] are not read (only done and last steps bootstrap).
        r = np.array([1.0, 2.0, 3.0], np.float32)
        discount = np.full(3, 0.5, np.float32)
        done = np.zeros(3, bool)
        v_t = np.array([-1e3, 1e3, 8.0], np.float32)
        np.testing.assert_allclose(
            self.variant(R.nstep_returns)(r, discount, v_t, done), [3.75, 5.5, 7.0], rtol=1e-6
        )
        # Terminated last step: no bootstrap, G2 = 3, G1 = 2 + 1.5 = 3.5, G0 = 1 + 1.75 = 2.75.
        discount_term = np.array([0.5, 0.5, 0.0], np.float32)
        done_term = np.array([0, 0, 1], bool)
        np.testing.assert_allclose(
            self.variant(R.nstep_returns)(r, discount_term, v_t, done_term),
            [2.75, 3.5, 3.0],
            rtol=1e-6,
        )


class AnalyticTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_constant_reward_fixed_point(self):
        # r forever, V = r / (1 - gamma): every return is r / (1 - gamma) and every
        # advantage is 0 -- also across truncations (they bootstrap from the same V).
        gamma, rew, T, N = 0.9, 2.0, 20, 3 * N_ENVS  # the random tests' shape: no new compilations
        v = rew / (1.0 - gamma)  # 20
        r = np.full((T, N), rew, np.float32)
        discount = np.full((T, N), gamma, np.float32)
        done = np.zeros((T, N), bool)
        done[[3, 11], 1] = True  # truncations in env 1
        done[-1, 2] = True  # truncation on the last step of env 2
        vs = np.full((T, N), v, np.float32)
        g = self.variant(R.batched_nstep_returns)(r, discount, vs, done)
        np.testing.assert_allclose(g, np.full((T, N), v), rtol=1e-5)
        adv = self.variant(R.batched_gae, static_argnums=5)
        for lam in LAMBDAS:
            np.testing.assert_allclose(
                adv(r, discount, vs, vs, done, lam), np.zeros((T, N)), atol=1e-4
            )


class ValidMaskTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_case_1d(self):
        done = np.array([0, 1, 0, 1, 1, 0], bool)
        # prev done = [done_before, 0, 1, 0, 1, 1] -> mask = 1 - prev
        vm = self.variant(R.valid_mask)
        np.testing.assert_array_equal(vm(done, np.array(True)), [0, 1, 0, 1, 0, 0])
        np.testing.assert_array_equal(vm(done, np.array(False)), [1, 1, 0, 1, 0, 0])
        out = vm(done, np.array(False))
        self.assertEqual(out.dtype, jnp.float32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_case_2d(self):
        done = np.array([[1, 0], [0, 0], [0, 1]], bool)  # [T=3, N=2]
        done_before = np.array([0, 1], bool)
        # env 0: prev = [0, 1, 0] -> [1, 0, 1]; env 1: prev = [1, 0, 0] -> [0, 1, 1]
        np.testing.assert_array_equal(
            self.variant(R.valid_mask)(done, done_before), [[1, 0], [0, 1], [1, 1]]
        )


class ShapeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_wrong_rank_raises(self):
        x2 = np.zeros((4, 2), np.float32)
        x1 = np.zeros((4,), np.float32)
        with self.assertRaises(AssertionError):
            self.variant(R.nstep_returns)(x2, x2, x2, x2)
        with self.assertRaises(AssertionError):
            self.variant(R.gae, static_argnums=5)(x2, x2, x2, x2, x2, 0.5)
        # Mismatched lengths also raise.
        with self.assertRaises(AssertionError):
            self.variant(R.nstep_returns)(x1, x1, np.zeros((5,), np.float32), x1)
        with self.assertRaises(AssertionError):
            self.variant(R.gae, static_argnums=5)(x1, x1, x1, np.zeros((3,), np.float32), x1, 0.5)
        # Batched versions need [T, N]: a [T] input is the wrong rank.
        with self.assertRaises((AssertionError, ValueError)):
            self.variant(R.batched_nstep_returns)(x1, x1, x1, x1)
