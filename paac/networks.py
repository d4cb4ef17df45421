"""Torsos and the shared-torso actor-critic heads.

Image torsos take EnvPool's uint8 frames ``[..., C, H, W]`` (channels first) and
scale them to ``[0, 1]`` inside the network; the MLP torso takes float vectors.
Initialisation follows the usual A2C/PPO practice: orthogonal weights with gain
``sqrt(2)`` in the torso, ``0.01`` for the policy logits (a near-uniform first
policy) and ``1.0`` for the value head; zero biases.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from paac.config import ARCHS
from paac.layers import Conv

_TORSO_INIT = nn.initializers.orthogonal(np.sqrt(2.0))
_ZEROS = nn.initializers.zeros


def _frames_to_nhwc(x: jnp.ndarray) -> jnp.ndarray:
    """uint8 ``[..., C, H, W]`` -> float32 ``[..., H, W, C]`` in ``[0, 1]``."""
    x = jnp.asarray(x, jnp.float32) / 255.0
    return jnp.moveaxis(x, -3, -1)


class ConvTorso(nn.Module):
    """A stack of VALID convolutions with ReLU, then one dense ReLU layer."""

    convs: Sequence[tuple[int, int, int]]  # (features, kernel, stride)
    hidden: int
    conv_impl: str = "auto"  # see paac.layers: auto | xla | matmul

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = _frames_to_nhwc(obs)
        batch_shape = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for i, (features, kernel, stride) in enumerate(self.convs):
            x = Conv(
                features,
                kernel,
                stride,
                impl=self.conv_impl,
                kernel_init=_TORSO_INIT,
                bias_init=_ZEROS,
                name=f"Conv_{i}",  # the names nn.Conv would get: parameters interchange
            )(x)
            x = nn.relu(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, kernel_init=_TORSO_INIT, bias_init=_ZEROS)(x))
        return x.reshape(batch_shape + (self.hidden,))


class MLPTorso(nn.Module):
    """Fully connected tanh layers for vector observations."""

    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = jnp.asarray(obs, jnp.float32)
        for width in self.hidden:
            x = nn.tanh(nn.Dense(width, kernel_init=_TORSO_INIT, bias_init=_ZEROS)(x))
        return x


def make_torso(arch: str, conv_impl: str = "auto") -> nn.Module:
    """The torso named by ``arch``: ``nips`` | ``nature`` | ``mlp``.

    ``conv_impl`` chooses how convolutions are computed (:mod:`paac.layers`); the
    parameters and the numbers are the same either way.
    """
    if arch == "nips":  # Mnih et al. 2013, PAAC's arch_nips
        return ConvTorso(convs=((16, 8, 4), (32, 4, 2)), hidden=256, conv_impl=conv_impl)
    if arch == "nature":  # Mnih et al. 2015
        return ConvTorso(
            convs=((32, 8, 4), (64, 4, 2), (64, 3, 1)), hidden=512, conv_impl=conv_impl
        )
    if arch == "mlp":
        return MLPTorso()
    raise ValueError(f"arch={arch!r} is not one of {', '.join(ARCHS)}")


class ActorCritic(nn.Module):
    """Shared torso with a policy-logits head and a scalar value head."""

    torso: nn.Module
    num_actions: int
    policy_init_scale: float = 0.01  # gain of the orthogonal policy-head initialisation

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        h = self.torso(obs)
        logits = nn.Dense(
            self.num_actions,
            kernel_init=nn.initializers.orthogonal(self.policy_init_scale),
            bias_init=_ZEROS,
        )(h)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), bias_init=_ZEROS)(h)
        return logits, value[..., 0]


class QNetwork(nn.Module):
    """A torso with one action-value head: ``Q(s, .)`` of shape ``[..., num_actions]``."""

    torso: nn.Module
    num_actions: int

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        h = self.torso(obs)
        return nn.Dense(
            self.num_actions, kernel_init=nn.initializers.orthogonal(1.0), bias_init=_ZEROS
        )(h)


HEADS = ("actor_critic", "q")


def make_network(
    arch: str,
    num_actions: int,
    conv_impl: str = "auto",
    head: str = "actor_critic",
    policy_init_scale: float = 0.01,
) -> nn.Module:
    """The network for ``arch``: policy-logits and value heads, or one Q head (``head="q"``)."""
    torso = make_torso(arch, conv_impl)
    if head == "actor_critic":
        return ActorCritic(torso, num_actions, policy_init_scale)
    if head == "q":
        return QNetwork(torso=torso, num_actions=num_actions)
    raise ValueError(f"head={head!r} is not one of {', '.join(HEADS)}")
