"""The reformulated convolution gradient equals XLA's; the YNN path equals the plain one."""

import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from paac.core.xla_cpu import YNN_FLAG, enable_ynn
from paac.nets import layers
from tests.conftest import ROOT, script_env

# (batch, size, c_in, c_out, kernel, stride): the Atari layers, plus odd shapes.
SHAPES = [
    (3, 84, 4, 16, 8, 4),  # nips / nature first layer
    (3, 20, 16, 32, 4, 2),  # nips second layer
    (2, 20, 32, 64, 4, 2),  # nature second layer
    (2, 9, 8, 5, 3, 1),  # stride 1
    (2, 23, 3, 4, 4, 2),  # input larger than the convolution reads (cropped)
    (1, 10, 2, 3, 6, 3),
]


def _xla_conv(x, kernel, s):
    return jax.lax.conv_general_dilated(
        x, kernel, (s, s), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _inputs(b, h, c, o, k, seed=0):
    kx, kk, kd = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.uniform(kx, (b, h, h, c))
    kernel = jax.random.normal(kk, (k, k, c, o)) / np.sqrt(k * k * c)
    return x, kernel, kd


class ConvGradTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_kernel_grad_equals_xla(self, b, h, c, o, k, s):
        x, kernel, kd = _inputs(b, h, c, o, k)
        y, vjp = jax.vjp(lambda kk: _xla_conv(x, kk, s), kernel)
        dy = jax.random.normal(kd, y.shape)
        (want,) = vjp(dy)
        got = self.variant(layers.conv_kernel_grad, static_argnums=(2, 3))(x, dy, k, s)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES[:3])
    def test_custom_vjp_conv_value_and_grads(self, b, h, c, o, k, s):
        x, kernel, kd = _inputs(b, h, c, o, k, seed=1)

        def loss(fn):
            return lambda x_, k_: jnp.sum(jnp.sin(fn(x_, k_, s)))

        ours = self.variant(jax.value_and_grad(loss(layers.conv_matmul_grad), argnums=(0, 1)))
        ref = jax.value_and_grad(loss(_xla_conv), argnums=(0, 1))
        (v1, (dx1, dk1)), (v2, (dx2, dk2)) = ours(x, kernel), ref(x, kernel)
        np.testing.assert_allclose(v1, v2, rtol=1e-6)
        np.testing.assert_allclose(dx1, dx2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dk1, dk2, rtol=1e-4, atol=1e-5)


def test_conv_module_has_nn_conv_parameters_and_numbers():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 84, 84, 4))
    init = nn.initializers.orthogonal(np.sqrt(2.0))
    ref = nn.Conv(16, (8, 8), (4, 4), padding="VALID", kernel_init=init)
    params = ref.init(jax.random.PRNGKey(1), x)
    for impl in ("xla", "matmul"):
        ours = layers.Conv(16, 8, 4, impl=impl, kernel_init=init)
        own = ours.init(jax.random.PRNGKey(1), x)
        chex.assert_trees_all_equal(own, params)  # same shapes, names and initial values
        np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)


def test_resolve_conv_impl(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert layers.resolve_conv_impl("xla") == "xla"
    assert layers.resolve_conv_impl("matmul") == "matmul"
    assert layers.resolve_conv_impl("auto") == "matmul"  # plain XLA:CPU (the test backend)
    monkeypatch.setenv("XLA_FLAGS", YNN_FLAG)
    assert layers.resolve_conv_impl("auto") == "xla"
    with pytest.raises(ValueError, match="'fft'"):
        layers.resolve_conv_impl("fft")


def test_enable_ynn_never_touches_a_started_backend(monkeypatch):
    jax.numpy.ones(1).block_until_ready()  # the backend is running in this process
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert enable_ynn() is False
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"


def two_updates(conv_impl: str) -> dict:
    """Parameters after two nips and nature updates on a fixed random batch."""
    from paac.algorithms.a2c import make_update
    from paac.algorithms.build import init_state
    from paac.core.config import Config
    from paac.core.types import Batch, EnvSpec
    from paac.nets.networks import make_network

    out = {}
    for arch in ("nips", "nature"):
        T, n = 5, 4
        rng = np.random.default_rng(0)
        batch = Batch(
            rng.integers(0, 255, (T, n, 4, 84, 84), dtype=np.uint8),
            rng.integers(0, 6, (T, n)).astype(np.int32),
            rng.normal(size=(T, n)).astype(np.float32),
            rng.random((T, n)) < 0.1,
            np.zeros((T, n), bool),
            np.ones((T, n), np.float32),
            rng.integers(0, 255, (n, 4, 84, 84), dtype=np.uint8),
        )
        c = Config(arch=arch, n_envs=n, conv_impl=conv_impl, total_steps=10**5)
        net = make_network(arch, 6, conv_impl)
        spec = EnvSpec((4, 84, 84), np.dtype("uint8"), 6, True)
        state = init_state(c, net, spec, jax.random.PRNGKey(0))
        update = jax.jit(make_update(c, net))
        for _ in range(2):
            state, _ = update(state, batch)
        out[arch] = np.concatenate([np.ravel(p) for p in jax.tree.leaves(state.params)])
    return out


_YNN_SCRIPT = """
import sys, numpy as np
from paac.core.xla_cpu import enable_ynn
if not enable_ynn():
    sys.exit(3)
from tests.test_layers import two_updates
np.savez(sys.argv[1], **two_updates("xla"))
"""


@pytest.mark.slow
def test_fast_paths_give_the_plain_updates(tmp_path):
    """Plain XLA:CPU convolutions are the reference (this process runs without YNN); the
    matmul kernel gradient, and XLA's YNN dot fusion (in a fresh process, since XLA reads
    its flags once), must give the same parameters after two updates."""
    assert "ynn" not in os.environ.get("XLA_FLAGS", "")
    ref = two_updates("xla")
    for arch, params in two_updates("matmul").items():
        np.testing.assert_allclose(params, ref[arch], rtol=1e-5, atol=1e-6)
    env = script_env(
        {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PAAC_XLA_CPU_YNN")}
    )
    path = tmp_path / "ynn.npz"
    run = subprocess.run(
        [sys.executable, "-c", _YNN_SCRIPT, str(path)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    if run.returncode == 3:
        pytest.skip("this jaxlib has no YNN fusion")
    assert run.returncode == 0, run.stderr
    ynn = np.load(path)
    for arch in ("nips", "nature"):
        np.testing.assert_allclose(ynn[arch], ref[arch], rtol=1e-5, atol=1e-6)
