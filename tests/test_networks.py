"""Tests for paac.networks: sizes, shapes, input scaling and initialisation.

Oracles are independent of the library: parameter counts are worked by hand from
the architectures of the PAAC paper, and a plain NumPy forward pass (float64,
explicit strided convolutions) checks the image network numerically.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paac.algorithms.common import num_params
from paac.nets.networks import make_network, make_torso

FRAME_SHAPE = (4, 84, 84)  # EnvPool Atari: channels-first stack of 4 grey 84x84 frames


def _count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def _abstract_params(arch, num_actions, obs_shape, dtype):
    network = make_network(arch, num_actions)
    dummy = jax.ShapeDtypeStruct((1,) + obs_shape, dtype)
    return network, jax.eval_shape(network.init, jax.random.PRNGKey(0), dummy)


@pytest.fixture(scope="module")
def nips():
    """A real (initialised) nips network with 6 actions; built once for the module."""
    network = make_network("nips", 6)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + FRAME_SHAPE, jnp.uint8))
    return network, params


@pytest.fixture(scope="module")
def mlp():
    network = make_network("mlp", 2)
    params = network.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.float32))
    return network, params


# --------------------------------------------------------------------------- #
# Parameter counts (hand-worked)
# --------------------------------------------------------------------------- #
def _conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def _dense(n_in, n_out):
    return n_in * n_out + n_out


def test_nips_param_count():
    a = 6
    # 84 -(8x8/4, VALID)-> (84-8)/4+1 = 20 -(4x4/2)-> (20-4)/2+1 = 9
    expected = (
        _conv(8, 4, 16)  # 4112
        + _conv(4, 16, 32)  # 8224
        + _dense(9 * 9 * 32, 256)  # 663808
        + _dense(256, a)  # policy 256*A + A = 1542
        + _dense(256, 1)  # value 257
    )
    assert expected == 677_943  # the same sum, added up by hand
    _, params = _abstract_params("nips", a, FRAME_SHAPE, jnp.uint8)
    assert _count(params) == expected
    assert num_params(params) == expected


def test_nature_param_count():
    a = 6
    # 84 -(8x8/4)-> 20 -(4x4/2)-> 9 -(3x3/1)-> 7
    expected = (
        _conv(8, 4, 32)  # 8224
        + _conv(4, 32, 64)  # 32832
        + _conv(3, 64, 64)  # 36928
        + _dense(7 * 7 * 64, 512)  # 1606144
        + _dense(512, a)  # 3078
        + _dense(512, 1)  # 513
    )
    assert expected == 1_687_719
    _, params = _abstract_params("nature", a, FRAME_SHAPE, jnp.uint8)
    assert _count(params) == expected


def test_mlp_param_count():
    expected = (4 * 64 + 64) + (64 * 64 + 64) + (64 * 2 + 2) + (64 + 1)
    assert expected == 4_675  # 320 + 4160 + 130 + 65
    _, params = _abstract_params("mlp", 2, (4,), jnp.float32)
    assert _count(params) == expected


def test_nips_layer_shapes():
    _, params = _abstract_params("nips", 6, FRAME_SHAPE, jnp.uint8)
    torso = params["params"]["torso"]
    kernels = sorted(tuple(x.shape) for x in jax.tree_util.tree_leaves(torso) if x.ndim > 1)
    assert kernels == sorted([(8, 8, 4, 16), (4, 4, 16, 32), (2592, 256)])


# --------------------------------------------------------------------------- #
# Output shapes and leading dimensions
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("arch,hidden", [("nips", 256), ("nature", 512)])
def test_image_output_shapes_abstract(arch, hidden):
    network, params = _abstract_params(arch, 6, FRAME_SHAPE, jnp.uint8)
    for lead in [(2,), (3, 2)]:
        obs = jax.ShapeDtypeStruct(lead + FRAME_SHAPE, jnp.uint8)
        logits, value = jax.eval_shape(network.apply, params, obs)
        assert logits.shape == lead + (6,)
        assert value.shape == lead
        assert logits.dtype == jnp.float32 and value.dtype == jnp.float32
    torso = make_torso(arch)
    tparams = jax.eval_shape(
        torso.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1,) + FRAME_SHAPE, jnp.uint8)
    )
    h = jax.eval_shape(torso.apply, tparams, jax.ShapeDtypeStruct((2,) + FRAME_SHAPE, jnp.uint8))
    assert h.shape == (2, hidden)


def test_mlp_output_shapes_and_leading_dims(mlp):
    network, params = mlp
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 3, 4)).astype(np.float32)  # [T, B, 4]
    logits, value = network.apply(params, obs)
    assert logits.shape == (5, 3, 2) and value.shape == (5, 3)
    flat_logits, flat_value = network.apply(params, obs.reshape(15, 4))
    assert flat_logits.shape == (15, 2) and flat_value.shape == (15,)
    np.testing.assert_allclose(np.asarray(logits).reshape(15, 2), flat_logits, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(value).reshape(15), flat_value, rtol=1e-6, atol=1e-7)
    # Rows are independent: the first row alone gives the same outputs.
    one_logits, one_value = network.apply(params, obs[0, 0])
    assert one_logits.shape == (2,) and one_value.shape == ()
    np.testing.assert_allclose(one_logits, logits[0, 0], rtol=1e-6, atol=1e-7)


def test_nips_leading_dims_equal_flat_batch(nips):
    network, params = nips
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 256, size=(2, 3) + FRAME_SHAPE, dtype=np.uint8)  # [T=2, B=3, ...]
    logits, value = network.apply(params, obs)
    assert logits.shape == (2, 3, 6) and value.shape == (2, 3)
    flat_logits, flat_value = network.apply(params, obs.reshape((6,) + FRAME_SHAPE))
    assert flat_logits.shape == (6, 6) and flat_value.shape == (6,)
    np.testing.assert_allclose(np.reshape(logits, (6, 6)), flat_logits, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.reshape(value, (6,)), flat_value, rtol=1e-5, atol=1e-7)
    # The frames differ, so the rows must differ (no accidental broadcasting or mixing).
    assert len(np.unique(np.round(np.asarray(flat_value), 6))) == 6


# --------------------------------------------------------------------------- #
# Frame scaling, checked against a NumPy forward pass
# --------------------------------------------------------------------------- #
def _np_conv_valid(x, kernel, bias, stride):
    """x [B, H, W, C] float64, kernel [k, k, C, O]: VALID strided cross-correlation."""
    k = kernel.shape[0]
    h_out = (x.shape[1] - k) // stride + 1
    w_out = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h_out, w_out, kernel.shape[-1]))
    for di in range(k):
        for dj in range(k):
            patch = x[
                :,
                di : di + stride * (h_out - 1) + 1 : stride,
                dj : dj + stride * (w_out - 1) + 1 : stride,
                :,
            ]
            out += patch @ kernel[di, dj]
    return out + bias


def _np_nips_forward(params, frames_uint8):
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)["params"]
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    x = frames_uint8.astype(np.float64) / 255.0  # [B, C, H, W] in [0, 1]
    x = x.transpose(0, 2, 3, 1)  # channels last
    t = p["torso"]
    x = relu(_np_conv_valid(x, t["Conv_0"]["kernel"], t["Conv_0"]["bias"], 4))
    assert x.shape[1:] == (20, 20, 16)
    x = relu(_np_conv_valid(x, t["Conv_1"]["kernel"], t["Conv_1"]["bias"], 2))
    assert x.shape[1:] == (9, 9, 32)
    h = relu(x.reshape(x.shape[0], -1) @ t["Dense_0"]["kernel"] + t["Dense_0"]["bias"])
    logits = h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    value = h @ p["Dense_1"]["kernel"][:, 0] + p["Dense_1"]["bias"][0]
    return logits, value


def _with_random_biases(params, seed):
    rng = np.random.default_rng(seed)

    def f(path, x):
        if path[-1].key == "bias":
            return jnp.asarray(rng.normal(scale=0.1, size=x.shape), jnp.float32)
        return x

    return jax.tree_util.tree_map_with_path(f, params)


def test_nips_matches_numpy_forward_with_scaling(nips):
    network, params = nips
    params = _with_random_biases(params, 0)  # biases matter too, not just the kernels
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(2,) + FRAME_SHAPE, dtype=np.uint8)
    logits, value = network.apply(params, frames)
    want_logits, want_value = _np_nips_forward(params, frames)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(value, want_value, rtol=1e-4, atol=1e-5)


def test_mlp_matches_numpy_forward(mlp):
    """Two tanh layers of 64, then the policy and value heads, in float64 NumPy."""
    network, params = mlp
    params = _with_random_biases(params, 1)
    obs = np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)["params"]
    h = obs.astype(np.float64)
    for layer in ("Dense_0", "Dense_1"):
        h = np.tanh(h @ p["torso"][layer]["kernel"] + p["torso"][layer]["bias"])
    want_logits = h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    want_value = h @ p["Dense_1"]["kernel"][:, 0] + p["Dense_1"]["bias"][0]
    logits, value = network.apply(params, obs)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)


def test_uint8_and_float_frames_agree(nips):
    network, params = nips
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(2,) + FRAME_SHAPE, dtype=np.uint8)
    logits_u8, value_u8 = network.apply(params, frames)
    logits_f, value_f = network.apply(params, frames.astype(np.float32))
    np.testing.assert_allclose(logits_u8, logits_f, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(value_u8, value_f, rtol=1e-6, atol=1e-8)
    # Scaling happens inside: pre-scaling by 1/255 outside is NOT the same input.
    _, value_pre = network.apply(params, frames.astype(np.float32) / 255.0)
    assert not np.allclose(value_pre, value_u8, rtol=1e-2, atol=0)


def test_zero_frames_give_zero_outputs_at_init(nips):
    network, params = nips
    logits, value = network.apply(params, np.zeros((2,) + FRAME_SHAPE, np.uint8))
    np.testing.assert_allclose(logits, np.zeros((2, 6)), rtol=0, atol=0)
    np.testing.assert_allclose(value, np.zeros(2), rtol=0, atol=0)


# --------------------------------------------------------------------------- #
# Initialisation
# --------------------------------------------------------------------------- #
def test_initial_policy_is_near_uniform(nips):
    network, params = nips
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, size=(2,) + FRAME_SHAPE, dtype=np.uint8)
    logits, _ = network.apply(params, frames)
    logits = np.asarray(logits, np.float64)
    assert np.all(np.abs(logits) < 0.1)
    assert np.any(np.abs(logits) > 0)  # not degenerate
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    entropy = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(entropy, np.log(6), rtol=0, atol=1e-2)


def _gram_cols(kernel):
    """K reshaped to (fan_in, fan_out); returns K^T K."""
    k = np.asarray(kernel, np.float64)
    k = k.reshape(-1, k.shape[-1])
    assert k.shape[0] >= k.shape[1]
    return k.T @ k


def test_nips_orthogonal_init(nips):
    _, params = nips
    p = params["params"]
    t = p["torso"]
    # Torso: orthonormal columns scaled by sqrt(2) -> K^T K = 2 I (fan_in >= fan_out here).
    for name, n_out in [("Conv_0", 16), ("Conv_1", 32), ("Dense_0", 256)]:
        np.testing.assert_allclose(
            _gram_cols(t[name]["kernel"]), 2.0 * np.eye(n_out), rtol=0, atol=1e-4, err_msg=name
        )
    # Policy head gain 0.01, value head gain 1.
    np.testing.assert_allclose(_gram_cols(p["Dense_0"]["kernel"]), 1e-4 * np.eye(6), atol=1e-8)
    np.testing.assert_allclose(_gram_cols(p["Dense_1"]["kernel"]), [[1.0]], atol=1e-5)


def test_mlp_orthogonal_init(mlp):
    _, params = mlp
    t = params["params"]["torso"]
    k0 = np.asarray(t["Dense_0"]["kernel"], np.float64)  # 4 x 64: rows orthonormal * sqrt 2
    np.testing.assert_allclose(k0 @ k0.T, 2.0 * np.eye(4), atol=1e-4)
    k1 = np.asarray(t["Dense_1"]["kernel"], np.float64)  # 64 x 64: both ways
    np.testing.assert_allclose(k1.T @ k1, 2.0 * np.eye(64), atol=1e-4)
    np.testing.assert_allclose(k1 @ k1.T, 2.0 * np.eye(64), atol=1e-4)


@pytest.mark.parametrize("fixture_name", ["nips", "mlp"])
def test_biases_are_zero(fixture_name, request):
    _, params = request.getfixturevalue(fixture_name)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    biases = [leaf for path, leaf in flat if path[-1].key == "bias"]
    assert len(biases) == (5 if fixture_name == "nips" else 4)
    for b in biases:
        np.testing.assert_allclose(b, np.zeros(b.shape), rtol=0, atol=0)


def test_init_depends_on_key():
    network = make_network("mlp", 2)
    dummy = jnp.zeros((1, 4), jnp.float32)
    a = network.init(jax.random.PRNGKey(0), dummy)["params"]["torso"]["Dense_0"]["kernel"]
    b = network.init(jax.random.PRNGKey(0), dummy)["params"]["torso"]["Dense_0"]["kernel"]
    c = network.init(jax.random.PRNGKey(1), dummy)["params"]["torso"]["Dense_0"]["kernel"]
    np.testing.assert_allclose(a, b, rtol=0, atol=0)
    assert not np.allclose(a, c)


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def test_unknown_arch_raises():
    with pytest.raises(ValueError, match="resnet"):
        make_torso("resnet")
    with pytest.raises(ValueError, match="resnet"):
        make_network("resnet", 4)


def test_policy_init_scale_sets_the_policy_head_gain():
    net = make_network("mlp", 3, policy_init_scale=2.0)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
    np.testing.assert_allclose(_gram_cols(params["Dense_0"]["kernel"]), 4.0 * np.eye(3), atol=1e-4)


@pytest.mark.slow  # initialises the nips torso op by op, for seconds
def test_paac_init_is_uniform_in_inverse_sqrt_fan_in():
    """--init paac: every kernel and bias uniform in +-1/sqrt(fan_in) (std d/sqrt(3))."""
    net = make_network("nips", 6, init="paac")
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + FRAME_SHAPE, jnp.uint8))["params"]
    fan_ins = {
        ("torso", "Conv_0"): 8 * 8 * 4,
        ("torso", "Conv_1"): 4 * 4 * 16,
        ("torso", "Dense_0"): 9 * 9 * 32,
        ("Dense_0",): 256,  # policy head
        ("Dense_1",): 256,  # value head
    }
    for path, fan_in in fan_ins.items():
        layer = params
        for key in path:
            layer = layer[key]
        d = 1.0 / np.sqrt(fan_in)
        for name in ("kernel", "bias"):
            x = np.asarray(layer[name])
            assert np.abs(x).max() <= d and np.abs(x).max() > 0.5 * d, (path, name)
        assert abs(np.std(layer["kernel"]) / (d / np.sqrt(3)) - 1) < 0.1, path
    with pytest.raises(ValueError, match="'xavier'"):
        make_network("mlp", 2, init="xavier").init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
