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
import jax
import jax.numpy as jnp
import numpy as np

from paac.core.config import ARCHS, POLICY_STDS
from paac.nets.layers import Conv

_ZEROS = nn.initializers.zeros
INITS = ("orthogonal", "paac")


def _uniform(d: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -d, d)

    return init


def layer_init(scheme: str, fan_in: int, gain: float):
    """``(kernel_init, bias_init)`` of a layer with ``fan_in`` inputs.

    ``orthogonal``: orthogonal kernels with ``gain``, zero biases (CleanRL, SB3).
    ``paac``: kernels and biases uniform in ``+-1/sqrt(fan_in)``, the Torch-style
    initialisation of the reference PAAC implementation (``gain`` unused).
    """
    if scheme == "paac":
        d = 1.0 / np.sqrt(fan_in)
        return _uniform(d), _uniform(d)
    if scheme == "orthogonal":
        return nn.initializers.orthogonal(gain), _ZEROS
    raise ValueError(f"init={scheme!r} is not one of {', '.join(INITS)}")


def _frames_to_nhwc(x: jnp.ndarray) -> jnp.ndarray:
    """uint8 ``[..., C, H, W]`` -> float32 ``[..., H, W, C]`` in ``[0, 1]``."""
    x = jnp.asarray(x, jnp.float32) / 255.0
    return jnp.moveaxis(x, -3, -1)


class ConvTorso(nn.Module):
    """A stack of VALID convolutions with ReLU, then one dense ReLU layer."""

    convs: Sequence[tuple[int, int, int]]  # (features, kernel, stride)
    hidden: int
    conv_impl: str = "auto"  # see paac.nets.layers: auto | xla | matmul
    init_scheme: str = "orthogonal"

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = _frames_to_nhwc(obs)
        # A time-major [T, N] batch is merged environment-major (N, T): when the
        # environments are split over devices (paac.distributed) each device's samples
        # then stay a contiguous block, and the partitioned update needs no all-gather.
        env_major = x.ndim == 5
        if env_major:
            x = jnp.swapaxes(x, 0, 1)
        batch_shape = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for i, (features, kernel, stride) in enumerate(self.convs):
            k_init, b_init = layer_init(
                self.init_scheme, kernel * kernel * x.shape[-1], np.sqrt(2.0)
            )
            x = Conv(
                features,
                kernel,
                stride,
                impl=self.conv_impl,
                kernel_init=k_init,
                bias_init=b_init,
                name=f"Conv_{i}",  # the names nn.Conv would get: parameters interchange
            )(x)
            x = nn.relu(x)
        x = x.reshape(x.shape[0], -1)
        k_init, b_init = layer_init(self.init_scheme, x.shape[-1], np.sqrt(2.0))
        x = nn.relu(nn.Dense(self.hidden, kernel_init=k_init, bias_init=b_init)(x))
        x = x.reshape(batch_shape + (self.hidden,))
        return jnp.swapaxes(x, 0, 1) if env_major else x


class MLPTorso(nn.Module):
    """Fully connected tanh layers for vector observations."""

    hidden: Sequence[int] = (64, 64)
    init_scheme: str = "orthogonal"

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = jnp.asarray(obs, jnp.float32)
        for width in self.hidden:
            k_init, b_init = layer_init(self.init_scheme, x.shape[-1], np.sqrt(2.0))
            x = nn.tanh(nn.Dense(width, kernel_init=k_init, bias_init=b_init)(x))
        return x


CONV_STACKS = {
    "nips": ((16, 8, 4), (32, 4, 2)),  # Mnih et al. 2013, PAAC's arch_nips
    "nature": ((32, 8, 4), (64, 4, 2), (64, 3, 1)),  # Mnih et al. 2015
}
CONV_HIDDEN = {"nips": 256, "nature": 512}


def conv_output_size(arch: str, size: int) -> int:
    """Height (or width) left of ``size`` after ``arch``'s VALID convolutions (<= 0: none)."""
    for _, kernel, stride in CONV_STACKS[arch]:
        if size < kernel:
            return 0
        size = (size - kernel) // stride + 1
    return size


def min_frame_size(arch: str) -> int:
    """The smallest frame height and width that ``arch``'s convolutions leave a pixel of."""
    size = 1
    while conv_output_size(arch, size) < 1:
        size += 1
    return size


def make_torso(arch: str, conv_impl: str = "auto", init: str = "orthogonal") -> nn.Module:
    """The torso named by ``arch``: ``nips`` | ``nature`` | ``mlp``.

    ``conv_impl`` chooses how convolutions are computed (:mod:`paac.nets.layers`); the
    parameters and the numbers are the same either way.

    Args:
      arch: ``nips`` or ``nature`` (:class:`ConvTorso` with the stack of
        :data:`CONV_STACKS` and the dense width of :data:`CONV_HIDDEN`) or ``mlp``
        (:class:`MLPTorso`); anything else is a ValueError.
      conv_impl: ``auto`` | ``xla`` | ``matmul`` (:func:`paac.nets.layers.resolve_conv_impl`);
        unused by ``mlp``.
      init: the initialisation scheme, ``orthogonal`` or ``paac`` (:func:`layer_init`).

    Returns:
      A Flax module mapping observations ``[..., *obs_shape]`` to features ``[..., H]``.
    """
    if arch in CONV_STACKS:
        return ConvTorso(CONV_STACKS[arch], CONV_HIDDEN[arch], conv_impl, init)
    if arch == "mlp":
        return MLPTorso(init_scheme=init)
    raise ValueError(f"arch={arch!r} is not one of {', '.join(ARCHS)}")


MIN_VARIANCE = 1e-4
"""The softplus head's least variance (a std of 0.01): the policy never collapses to a point."""


def _policy_head(module: nn.Module, h: jnp.ndarray) -> jnp.ndarray:
    """The policy head of ``module`` on features ``h`` ``[..., F]``, inside its compact call.

    Discrete: logits ``[..., A]`` from a dense layer (auto-named ``Dense_0``, as checkpoints
    of earlier versions have it). Continuous: ``[mean, log_std]`` ``[..., 2 * D]``, the mean
    from a dense layer named ``mean`` initialised as the logits are, and the log-std from a
    parameter ``log_std`` ``[D]`` or, with ``policy_std="softplus"``, a dense layer ``std``
    whose softplus (plus :data:`MIN_VARIANCE`) is the variance; both start at
    ``log_std_init`` (the softplus head through its bias, its kernel at gain 0.01).
    """
    fan_in = h.shape[-1]
    k_init, b_init = layer_init(module.init_scheme, fan_in, module.policy_init_scale)
    if not module.continuous:
        return nn.Dense(module.num_actions, kernel_init=k_init, bias_init=b_init)(h)
    d = module.num_actions
    mean = nn.Dense(d, kernel_init=k_init, bias_init=b_init, name="mean")(h)
    if module.policy_std == "parameter":
        log_std = module.param("log_std", nn.initializers.constant(module.log_std_init), (d,))
        log_std = jnp.broadcast_to(log_std, mean.shape)
    elif module.policy_std == "softplus":
        variance = np.exp(2.0 * module.log_std_init) - MIN_VARIANCE
        if variance <= 0:
            raise ValueError(
                f"log_std_init={module.log_std_init} is below the softplus head's least "
                f"log-std, {0.5 * np.log(MIN_VARIANCE):.3f}"
            )
        bias = float(np.log(np.expm1(variance)))  # softplus(bias) = variance
        k_init, _ = layer_init("orthogonal", fan_in, 0.01)
        x = nn.Dense(d, kernel_init=k_init, bias_init=nn.initializers.constant(bias), name="std")
        log_std = 0.5 * jnp.log(nn.softplus(x(h)) + MIN_VARIANCE)
    else:
        raise ValueError(f"policy_std={module.policy_std!r} is not one of {', '.join(POLICY_STDS)}")
    return jnp.concatenate([mean, log_std], axis=-1)


def _value_head(module: nn.Module, h: jnp.ndarray) -> jnp.ndarray:
    """The scalar value head ``[...]`` (named ``value`` with continuous actions)."""
    k_init, b_init = layer_init(module.init_scheme, h.shape[-1], 1.0)
    name = "value" if module.continuous else None
    return nn.Dense(1, kernel_init=k_init, bias_init=b_init, name=name)(h)[..., 0]


class ActorCritic(nn.Module):
    """A torso with a policy head and a scalar value head (with ``value_torso``, the value
    head has a torso of its own, as SB3's and CleanRL's MuJoCo networks do).

    The policy head gives logits ``[..., A]`` for discrete actions and, with
    ``continuous``, a diagonal Gaussian's ``[mean, log_std]`` ``[..., 2 * D]``
    (:mod:`paac.ops.distributions`, :func:`_policy_head`).
    """

    torso: nn.Module
    num_actions: int
    policy_init_scale: float = 0.01  # gain of the orthogonal policy-head initialisation
    init_scheme: str = "orthogonal"
    continuous: bool = False
    policy_std: str = "parameter"
    log_std_init: float = 0.0
    value_torso: nn.Module | None = None  # a torso of the value head's own; None: shared

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        h = self.torso(obs)
        h_value = h if self.value_torso is None else self.value_torso(obs)
        return _policy_head(self, h), _value_head(self, h_value)


class RecurrentActorCritic(nn.Module):
    """Torso, then an LSTM of ``cells`` cells, then the policy-logits and value heads.

    ``apply(params, obs [T, N, ...], memory, start [T, N])`` runs the torso on every
    observation at once, then the LSTM through time from ``memory`` (``(c, h)``, each
    ``[N, cells]``), zeroing the state before ``obs[t]`` wherever ``start[t]`` (the first
    observation of an episode). It returns ``(logits [T, N, A], values [T, N], memory)``
    with the state after the last step (a Gaussian's ``[T, N, 2 * D]`` with
    ``continuous``, as :class:`ActorCritic`). Kernels are orthogonal (gain 1), biases zero,
    the forget gate's too.
    """

    torso: nn.Module
    num_actions: int
    cells: int
    policy_init_scale: float = 0.01
    init_scheme: str = "orthogonal"
    continuous: bool = False
    policy_std: str = "parameter"
    log_std_init: float = 0.0

    def initial_memory(self, n: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        """The state of ``n`` environments at an episode's start: zeros ``(c, h)``."""
        zeros = jnp.zeros((n, self.cells), jnp.float32)
        return zeros, zeros

    @nn.compact
    def __call__(self, obs, memory, start):
        x = self.torso(obs)  # [T, N, F]
        if self.init_scheme == "paac":
            k_init, _ = layer_init("paac", x.shape[-1], 1.0)
            r_init, b_init = layer_init("paac", self.cells, 1.0)
        else:
            k_init = r_init = nn.initializers.orthogonal(1.0)
            b_init = _ZEROS
        cell = nn.OptimizedLSTMCell(
            self.cells, kernel_init=k_init, recurrent_kernel_init=r_init, bias_init=b_init
        )

        def step(cell, carry, inputs):
            features, first = inputs
            carry = jax.tree.map(lambda m: jnp.where(first[:, None], 0.0, m), carry)
            carry, out = cell(carry, features)
            return carry, out

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        memory, h = scan(cell, memory, (x, jnp.asarray(start, bool)))
        return _policy_head(self, h), _value_head(self, h), memory


class QNetwork(nn.Module):
    """A torso with one action-value head: ``Q(s, .)`` of shape ``[..., num_actions]``."""

    torso: nn.Module
    num_actions: int
    init_scheme: str = "orthogonal"

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        h = self.torso(obs)
        k_init, b_init = layer_init(self.init_scheme, h.shape[-1], 1.0)
        return nn.Dense(self.num_actions, kernel_init=k_init, bias_init=b_init)(h)


HEADS = ("actor_critic", "q")


def make_network(
    arch: str,
    num_actions: int,
    conv_impl: str = "auto",
    head: str = "actor_critic",
    policy_init_scale: float = 0.01,
    init: str = "orthogonal",
    lstm_cells: int = 0,
    continuous: bool = False,
    policy_std: str = "parameter",
    log_std_init: float = 0.0,
    shared_torso: bool = True,
) -> nn.Module:
    """The network for ``arch``: policy-logits and value heads, or one Q head (``head="q"``).

    ``init``: ``orthogonal`` (default) or ``paac`` (see :func:`layer_init`).

    Args:
      arch: the torso, ``nips`` | ``nature`` | ``mlp`` (:func:`make_torso`).
      num_actions: the size of the discrete action space ``A``.
      conv_impl: how convolutions are computed (:func:`make_torso`).
      head: ``actor_critic`` (:class:`ActorCritic`) or ``q`` (:class:`QNetwork`);
        anything else is a ValueError.
      policy_init_scale: gain of the orthogonal initialisation of the policy-logits head
        (``actor_critic`` with ``init="orthogonal"`` only).
      init: the initialisation scheme, ``orthogonal`` or ``paac``.
      lstm_cells: with ``actor_critic``, an LSTM of this many cells between the torso and
        the heads (:class:`RecurrentActorCritic`); 0 for none.
      continuous: with ``actor_critic``, a diagonal Gaussian policy over actions of
        ``num_actions`` dimensions instead of logits (:func:`_policy_head`).
      policy_std: the Gaussian's standard deviation, one of :data:`POLICY_STDS`.
      log_std_init: the Gaussian's initial log standard deviation.
      shared_torso: with a feed-forward ``actor_critic``, whether the value head shares
        the policy's torso (PAAC's) or has a torso of its own (``value_torso``).

    Returns:
      A Flax module: ``apply(params, obs)`` gives ``(logits [..., A], value [...])`` for
      ``actor_critic``, ``Q(s, .) [..., A]`` for ``q``; see :class:`RecurrentActorCritic`
      with ``lstm_cells``.
    """
    torso = make_torso(arch, conv_impl, init)
    if lstm_cells and head != "actor_critic":
        raise ValueError(f"lstm_cells={lstm_cells} is for the actor_critic head, not {head!r}")
    if not shared_torso and (lstm_cells or head != "actor_critic"):
        raise ValueError("a torso of the value's own is for the feed-forward actor_critic head")
    if continuous and head != "actor_critic":
        raise ValueError(f"continuous actions are for the actor_critic head, not {head!r}")
    gaussian = dict(continuous=continuous, policy_std=policy_std, log_std_init=log_std_init)
    if lstm_cells:
        return RecurrentActorCritic(
            torso, num_actions, lstm_cells, policy_init_scale, init, **gaussian
        )
    if head == "actor_critic":
        value_torso = None if shared_torso else make_torso(arch, conv_impl, init)
        return ActorCritic(
            torso, num_actions, policy_init_scale, init, **gaussian, value_torso=value_torso
        )
    if head == "q":
        return QNetwork(torso, num_actions, init)
    raise ValueError(f"head={head!r} is not one of {', '.join(HEADS)}")
