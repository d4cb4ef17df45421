"""The dispatcher: the network and the :class:`Algorithm` a config asks for, and its state.

It sits above the algorithms it chooses between (a2c, the a3c and ga3c emulations, the
value-based methods); the training loop, evaluation and the benchmark build through it.
"""

from __future__ import annotations

import chex
import jax

# Loaded at import so that the BLAS thread limit in init_state covers SciPy's LAPACK,
# which runs the QR decompositions of orthogonal initialisation on a CPU.
import scipy.linalg.cython_lapack  # noqa: F401
from threadpoolctl import threadpool_limits

from paac.algorithms.a2c import make_a2c
from paac.algorithms.asynchronous import make_a3c, make_ga3c
from paac.algorithms.normalize import normalized
from paac.algorithms.value import make_value_algorithm
from paac.core.config import VALUE_ALGOS, Config
from paac.core.types import Algorithm, EnvSpec, LearnerState
from paac.nets.networks import make_network


def network_for(config: Config, spec: EnvSpec):
    """The network ``config.algo`` needs: actor-critic heads (after an LSTM with
    ``--lstm-cells``; a Gaussian policy for continuous actions), or a Q head."""
    head = "q" if config.algo in VALUE_ALGOS else "actor_critic"
    return make_network(
        config.arch,
        spec.num_actions,
        config.conv_impl,
        head,
        config.policy_init_scale,
        config.init,
        config.lstm_cells,
        continuous=spec.continuous,
        policy_std=config.policy_std,
        log_std_init=config.log_std_init,
        shared_torso=config.shared_torso,
    )


def make_algorithm(config: Config, network, spec: EnvSpec) -> Algorithm:
    """The :class:`Algorithm` of ``config.algo`` in ``config.mode``.

    Args:
      config: the run's configuration; ``algo`` is a2c, nstep_q, q or sarsa, and ``mode``
        is sync, or for a2c the a3c and ga3c emulations.
      network: the network from :func:`network_for`.
      spec: the environment's spec.

    Returns:
      The algorithm's pure ``init``, ``act``, ``update`` and ``policy`` functions, with
      ``config``'s observation and reward normalisation (:mod:`paac.algorithms.normalize`).
    """
    if config.algo in VALUE_ALGOS:
        algorithm = make_value_algorithm(config, network, spec)
    elif config.mode == "a3c":
        algorithm = make_a3c(config, network, spec)
    elif config.mode == "ga3c":
        algorithm = make_ga3c(config, network, spec)
    else:
        algorithm = make_a2c(config, network, spec)
    return normalized(algorithm, config, spec)


def init_state(config: Config, network, spec: EnvSpec, key: chex.PRNGKey) -> LearnerState:
    """Fresh learner state of ``config.algo`` for ``network`` on observations of ``spec``.

    Jitted, under single-threaded host BLAS: the QR decompositions of orthogonal
    initialisation run on the host's BLAS, whose threads would compete with XLA's
    (docs/performance.md). The values are the same either way.
    """
    with threadpool_limits(1, user_api="blas"):
        fresh = jax.jit(make_algorithm(config, network, spec).init)
        return jax.block_until_ready(fresh(key))


def state_template(config: Config, network, spec: EnvSpec) -> LearnerState:
    """The shapes and dtypes of :func:`init_state`'s result, computing nothing."""
    return jax.eval_shape(make_algorithm(config, network, spec).init, jax.random.PRNGKey(0))
