"""Tests for paac.losses against hand computations in NumPy."""

from __future__ import annotations

import chex
import jax
import numpy as np

from paac.ops import losses as L

ENT_COEF = 0.01
VALUE_COEF = 0.5

# A tiny batch: 4 steps, 3 actions.
LOGITS = np.array(
    [[0.5, -1.0, 2.0], [1.5, 0.0, -0.5], [-2.0, 0.3, 0.3], [0.0, 0.0, 0.0]], np.float32
)
VALUES = np.array([1.0, -0.5, 2.0, 0.25], np.float32)
ACTIONS = np.array([2, 0, 1, 1], np.int32)
ADVANTAGES = np.array([0.7, -1.2, 0.4, 2.0], np.float32)
RETURNS = np.array([1.5, -2.0, 1.0, 3.0], np.float32)


# --------------------------------------------------------------------------- #
# NumPy reference (float64), written from the docstring of a2c_loss.
# --------------------------------------------------------------------------- #
def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_a2c(logits, values, actions, adv, ret, mask, ent_coef, value_coef):
    """Returns (loss, policy_loss, value_loss, entropy, dloss/dlogits, dloss/dvalues)."""
    logp = np_log_softmax(logits)
    p = np.exp(logp)
    values, adv, ret, mask = (np.asarray(x, np.float64) for x in (values, adv, ret, mask))
    n = max(mask.sum(), 1.0)
    b = np.arange(len(actions))
    logp_a = logp[b, actions]
    ent = -(p * logp).sum(-1)
    pg = -(mask * logp_a * adv).sum() / n
    vl = (mask * 0.5 * (ret - values) ** 2).sum() / n
    en = (mask * ent).sum() / n
    loss = pg + value_coef * vl - ent_coef * en
    # d(-log p_a)/dz = p - onehot(a); dH/dz_j = -p_j (log p_j + H).
    onehot = np.eye(logits.shape[-1])[actions]
    dz = (adv[:, None] * (p - onehot) + ent_coef * p * (logp + ent[:, None])) * mask[:, None] / n
    dv = value_coef * (values - ret) * mask / n
    return loss, pg, vl, en, dz, dv


def _loss_fn(ent_coef=ENT_COEF, value_coef=VALUE_COEF):
    def f(logits, values, actions, advantages, returns, mask):
        return L.a2c_loss(logits, values, actions, advantages, returns, mask, ent_coef, value_coef)

    return f


def _scalar_loss(logits, values, actions, advantages, returns, mask):
    return L.a2c_loss(logits, values, actions, advantages, returns, mask, ENT_COEF, VALUE_COEF)[0]


class A2CLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_hand_computation(self):
        mask = np.ones(4, np.float32)
        loss, terms = self.variant(L.a2c_loss, static_argnums=(6, 7))(
            LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask, ENT_COEF, VALUE_COEF
        )
        want_loss, pg, vl, en, _, _ = np_a2c(
            LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask, ENT_COEF, VALUE_COEF
        )
        np.testing.assert_allclose(terms.policy_loss, pg, rtol=1e-5)
        np.testing.assert_allclose(terms.value_loss, vl, rtol=1e-5)
        np.testing.assert_allclose(terms.entropy, en, rtol=1e-5)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        np.testing.assert_allclose(loss, pg + VALUE_COEF * vl - ENT_COEF * en, rtol=1e-5)
        # A few numbers by hand: the uniform row has entropy log 3 and log pi = -log 3.
        # value_loss = mean(0.5 * [0.5^2, 1.5^2, 1^2, 2.75^2]) = 0.5 * 11.0625 / 4
        np.testing.assert_allclose(
            terms.value_loss, 0.5 * (0.25 + 2.25 + 1.0 + 7.5625) / 4, rtol=1e-6
        )
        self.assertTrue(np.log(3.0) * 0.25 < float(terms.entropy) < np.log(3.0))

    @chex.variants(with_jit=True, without_jit=True)
    def test_other_coefficients_and_partial_mask(self):
        # Different coefficients (static) and a mask with a zero: means over 3 steps.
        mask = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
        loss, terms = self.variant(L.a2c_loss, static_argnums=(6, 7))(
            LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask, 0.1, 1.0
        )
        want_loss, pg, vl, en, _, _ = np_a2c(
            LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask, 0.1, 1.0
        )
        np.testing.assert_allclose(
            [terms.policy_loss, terms.value_loss, terms.entropy], [pg, vl, en], rtol=1e-5
        )
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        # value_loss by hand over steps 0, 2, 3: 0.5 * (0.25 + 1 + 7.5625) / 3
        np.testing.assert_allclose(terms.value_loss, 0.5 * 8.8125 / 3, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradient_matches_hand_computation(self):
        mask = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
        dz, dv = self.variant(jax.grad(_scalar_loss, argnums=(0, 1)))(
            LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask
        )
        _, _, _, _, want_dz, want_dv = np_a2c(
            LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask, ENT_COEF, VALUE_COEF
        )
        np.testing.assert_allclose(dz, want_dz, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(dv, want_dv, rtol=1e-5, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_masked_reset_steps_change_nothing(self):
        # Insert two masked steps (at indices 2 and 5 of the result) holding huge but
        # finite garbage everywhere: 1e6 in one, 1e30 in the other.
        def ins(x, a, b):
            return np.insert(np.insert(x, 2, a, axis=0), 5, b, axis=0)

        masked, keep = [2, 5], np.array([0, 1, 3, 4])
        # The second masked row spans more than float32's range: log_softmax of it alone
        # would give -inf and 0 * -inf = nan in the entropy.
        logits6 = ins(
            LOGITS,
            np.array([1e6, -1e6, 3e5], np.float32),
            np.array([-3e38, 3e38, 3e29], np.float32),
        )
        values6 = ins(VALUES, -1e6, 1e30)
        actions6 = ins(ACTIONS, 1, 0)
        adv6 = ins(ADVANTAGES, 1e6, -1e30)
        ret6 = ins(RETURNS, 1e6, -1e30)
        mask4 = np.ones(4, np.float32)
        mask6 = ins(mask4, 0.0, 0.0)
        self.assertEqual(logits6.dtype, np.float32)
        np.testing.assert_array_equal(logits6[keep], LOGITS)

        f = self.variant(_loss_fn())
        loss4, terms4 = f(LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask4)
        loss6, terms6 = f(logits6, values6, actions6, adv6, ret6, mask6)
        np.testing.assert_allclose(loss6, loss4, rtol=1e-6)
        for a, b in zip(terms6, terms4, strict=False):
            np.testing.assert_allclose(a, b, rtol=1e-6)

        g = self.variant(jax.grad(_scalar_loss, argnums=(0, 1)))
        dz4, dv4 = g(LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask4)
        dz6, dv6 = g(logits6, values6, actions6, adv6, ret6, mask6)
        self.assertTrue(np.isfinite(dz6).all() and np.isfinite(dv6).all())
        np.testing.assert_allclose(np.asarray(dz6)[keep], dz4, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.asarray(dv6)[keep], dv4, rtol=1e-6, atol=1e-9)
        # Exactly zero at the masked steps.
        np.testing.assert_array_equal(np.asarray(dz6)[masked], np.zeros((2, 3), np.float32))
        np.testing.assert_array_equal(np.asarray(dv6)[masked], np.zeros(2, np.float32))

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_term_is_quarter_squared_error(self):
        # PAAC convention: value_coef = 0.5 -> each sample contributes 0.25 * (G - V)^2.
        # Isolate the value term: zero advantages and no entropy bonus, one sample at a time.
        f = self.variant(_loss_fn(ent_coef=0.0, value_coef=0.5))
        for i in range(4):
            sl = slice(i, i + 1)
            loss, terms = f(
                LOGITS[sl],
                VALUES[sl],
                ACTIONS[sl],
                np.zeros(1, np.float32),
                RETURNS[sl],
                np.ones(1, np.float32),
            )
            err = float(RETURNS[i]) - float(VALUES[i])
            np.testing.assert_allclose(loss, 0.25 * err**2, rtol=1e-6)
            np.testing.assert_allclose(terms.value_loss, 0.5 * err**2, rtol=1e-6)
        # Whole batch: the mean of the per-sample 0.25 * (G - V)^2 = 0.25 * 11.0625 / 4.
        loss, _ = f(
            LOGITS, VALUES, ACTIONS, np.zeros(4, np.float32), RETURNS, np.ones(4, np.float32)
        )
        np.testing.assert_allclose(loss, 0.25 * 11.0625 / 4, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_no_gradient_through_advantages_or_returns(self):
        mask = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
        da, dg = self.variant(jax.grad(_scalar_loss, argnums=(3, 4)))(
            LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask
        )
        np.testing.assert_array_equal(da, np.zeros(4, np.float32))
        np.testing.assert_array_equal(dg, np.zeros(4, np.float32))

    @chex.variants(with_jit=True, without_jit=True)
    def test_leading_batch_shape(self):
        # [T, N, A] logits with [T, N] values etc. equals the flattened [T*N, A] batch.
        mask = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
        f = self.variant(_loss_fn())
        loss_flat, terms_flat = f(LOGITS, VALUES, ACTIONS, ADVANTAGES, RETURNS, mask)
        r = lambda x: x.reshape((2, 2) + x.shape[1:])  # noqa: E731
        loss_tn, terms_tn = f(r(LOGITS), r(VALUES), r(ACTIONS), r(ADVANTAGES), r(RETURNS), r(mask))
        np.testing.assert_allclose(loss_tn, loss_flat, rtol=1e-6)
        np.testing.assert_allclose(terms_tn, terms_flat, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_shape_mismatch_raises(self):
        f = self.variant(_loss_fn())
        mask = np.ones(4, np.float32)
        with self.assertRaises(AssertionError):
            f(LOGITS, VALUES[:3], ACTIONS, ADVANTAGES, RETURNS, mask)
        with self.assertRaises(AssertionError):
            f(LOGITS[:3], VALUES, ACTIONS, ADVANTAGES, RETURNS, mask)


class MaskedMeanTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_masked_mean(self):
        mm = self.variant(L.masked_mean)
        x = np.array([1.0, 2.0, 100.0, 5.0], np.float32)
        # (1 + 2 + 5) / 3
        np.testing.assert_allclose(
            mm(x, np.array([1.0, 1.0, 0.0, 1.0], np.float32)), 8.0 / 3.0, rtol=1e-6
        )
        # No real step at all: 0 (the denominator is clamped to 1).
        np.testing.assert_array_equal(mm(x, np.zeros(4, np.float32)), 0.0)


class ExplainedVarianceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_perfect_and_mean_predictions(self):
        ev = self.variant(L.explained_variance)
        targets = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
        ones = np.ones(4, np.float32)
        np.testing.assert_allclose(ev(targets, targets, ones), 1.0, atol=1e-6)
        np.testing.assert_allclose(ev(np.full(4, 2.5, np.float32), targets, ones), 0.0, atol=1e-6)
        # A constant offset is not penalised: Var[targets - predictions] = 0.
        np.testing.assert_allclose(ev(targets + 7.0, targets, ones), 1.0, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_case(self):
        ev = self.variant(L.explained_variance)
        targets = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
        preds = np.array([1.0, 2.0, 3.0, 3.0], np.float32)
        # Var[targets] = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
        # err = [0, 0, 0, 1], mean 0.25, Var = (3 * 0.0625 + 0.5625) / 4 = 0.1875
        # EV = 1 - 0.1875 / 1.25 = 0.85
        np.testing.assert_allclose(ev(preds, targets, np.ones(4, np.float32)), 0.85, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_masked_entries_ignored(self):
        ev = self.variant(L.explained_variance)
        # The hand case above with two masked entries holding garbage inserted.
        targets = np.array([1.0, 500.0, 2.0, 3.0, 4.0, -300.0], np.float32)
        preds = np.array([1.0, -900.0, 2.0, 3.0, 3.0, 42.0], np.float32)
        mask = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0], np.float32)
        np.testing.assert_allclose(ev(preds, targets, mask), 0.85, rtol=1e-5)
        # Perfect on the real steps, garbage on the masked ones: still 1.
        preds_ok = np.where(mask > 0, targets, 1e3).astype(np.float32)
        np.testing.assert_allclose(ev(preds_ok, targets, mask), 1.0, atol=1e-6)
        # Masked values whose squares overflow float32 are ignored too.
        big_t = np.where(mask > 0, targets, 1e30).astype(np.float32)
        big_p = np.where(mask > 0, preds, -1e30).astype(np.float32)
        np.testing.assert_allclose(ev(big_p, big_t, mask), 0.85, rtol=1e-5)
