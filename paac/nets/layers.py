"""A convolution whose kernel gradient is one matrix multiply on XLA:CPU.

XLA:CPU runs the forward pass of the Atari convolutions well, but the gradient with
respect to the kernel of a strided convolution badly (docs/performance.md has the
figures). That gradient is a correlation of the input with the output cotangent and can
be written as one matrix multiply:

* space-to-depth by the stride ``s`` (when ``s`` divides the kernel size ``k``):
  ``x[B, H, W, C] -> x2[B, H/s, W/s, s*s*C]``, which turns the convolution into a
  stride-1 one with an ``m x m`` kernel, ``m = k / s``;
* for each of the ``m * m`` kernel offsets, the output cotangent shifted into place
  by zero padding, all of them concatenated along channels;
* ``dK = x2^T @ shifted_dy``: one ``[s*s*C, N] @ [N, m*m*O]`` product, reshaped
  back to ``[k, k, C, O]``.

Same numbers as XLA's gradient up to float32 rounding (a test checks it).
:class:`Conv` keeps exactly the parameters of
``flax.linen.Conv`` (``kernel [k, k, C, O]``, ``bias``). ``impl="xla"`` uses plain
``lax.conv_general_dilated`` throughout; ``impl="matmul"`` swaps in the matmul
kernel gradient where it applies; ``impl="auto"`` picks ``matmul`` on plain XLA:CPU
and ``xla`` on any other backend (cuDNN's gradient is the fast path on a GPU) or
when XLA:CPU's YNN dot fusion is on (see :mod:`paac.core.xla_cpu`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from paac.core.config import CONV_IMPLS
from paac.core.xla_cpu import ynn_enabled


def resolve_conv_impl(impl: str) -> str:
    """``auto`` -> ``matmul`` on the plain CPU path, ``xla`` on any other.

    With XLA:CPU's YNN dot fusion on (:mod:`paac.core.xla_cpu`) plain convolutions are
    faster again (docs/performance.md), so ``auto`` picks ``xla`` there too. An ``impl``
    not in :data:`~paac.core.config.CONV_IMPLS` is a ValueError.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv impl {impl!r} is not one of {', '.join(CONV_IMPLS)}")
    if impl == "auto":
        plain_cpu = jax.default_backend() == "cpu" and not ynn_enabled()
        return "matmul" if plain_cpu else "xla"
    return impl


def conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """VALID convolution of NHWC ``x`` with an HWIO ``kernel``."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def space_to_depth(x: jnp.ndarray, s: int) -> jnp.ndarray:
    """``[B, H, W, C] -> [B, H/s, W/s, s*s*C]`` with channel order ``(row, col, c)``."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // s, s, w // s, s, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // s, w // s, s * s * c)


def conv_kernel_grad(x: jnp.ndarray, dy: jnp.ndarray, k: int, s: int) -> jnp.ndarray:
    """``dL/dK [k, k, C, O]`` of ``conv(x, K, s)`` given ``dy = dL/dy``, as one matmul.

    Needs ``k % s == 0``.
    """
    _, _, _, c = x.shape
    out_h, out_w, o = dy.shape[1:]
    m = k // s
    # Crop to what the convolution reads; fold the stride into channels.
    x = x[:, : (out_h - 1) * s + k, : (out_w - 1) * s + k]
    x2 = space_to_depth(x, s) if s > 1 else x  # [B, out_h + m - 1, out_w + m - 1, s*s*C]
    shifted = [
        jnp.pad(dy, ((0, 0), (i, m - 1 - i), (j, m - 1 - j), (0, 0)))
        for i in range(m)
        for j in range(m)
    ]
    dys = jnp.concatenate(shifted, axis=-1) if len(shifted) > 1 else shifted[0]
    g = jax.lax.dot_general(x2, dys, (((0, 1, 2), (0, 1, 2)), ((), ())))  # [s*s*C, m*m*O]
    g = g.reshape(s, s, c, m, m, o)  # (row in block, col in block, c, block row, block col, o)
    return g.transpose(3, 0, 4, 1, 2, 5).reshape(k, k, c, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_matmul_grad(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """:func:`conv` whose kernel gradient is :func:`conv_kernel_grad`."""
    return conv(x, kernel, stride)


def _fwd(x, kernel, stride):
    return conv(x, kernel, stride), (x, kernel)


def _bwd(stride, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: conv(x_, kernel, stride), x)
    (dx,) = input_vjp(dy)  # XLA removes it where nothing needs it (the first layer)
    return dx, conv_kernel_grad(x, dy, kernel.shape[0], stride)


conv_matmul_grad.defvjp(_fwd, _bwd)


class Conv(nn.Module):
    """A VALID, square-kernel, strided convolution with ``nn.Conv``'s parameters."""

    features: int
    kernel_size: int
    stride: int
    impl: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        # Measured: the matmul gradient wins for strided layers; for stride 1 it ties.
        if resolve_conv_impl(self.impl) == "matmul" and s > 1 and k % s == 0:
            y = conv_matmul_grad(x, kernel, s)
        else:
            y = conv(x, kernel, s)
        return y + bias
