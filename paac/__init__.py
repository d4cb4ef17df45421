"""paac: synchronous parallel advantage actor-critic (PAAC, Clemente et al. 2017) in JAX.

The public API, layer by layer (internals stay importable at their module paths):

Configuration and shared types (``paac.core``)
  ``Config``: the run's frozen, validated configuration; ``ConfigError``: an impossible
  value, named. ``EnvSpec``, ``LearnerState``, ``Batch``: an environment's spec, the
  learner state and a time-major rollout. ``Algorithm``: the contract of the one loop.

Numerics (``paac.ops``)
  ``nstep_returns``, ``gae``: n-step returns and GAE(lambda) of one trajectory ``[T]``;
  ``batched_nstep_returns``, ``batched_gae``: the same over ``[T, N]``; ``valid_mask``:
  0 on EnvPool's reset steps. ``a2c_loss``, ``A2CLossTerms``: the masked-mean A2C loss
  and its terms; ``masked_mean``, ``explained_variance``. ``Distribution``,
  ``CATEGORICAL``, ``GAUSSIAN``: the policies' action distributions (sample, mode,
  log-probability, entropy). ``RunningMoments``,
  ``update_moments``, ``normalize``, ``discounted_returns``: running statistics for
  normalisation.

Networks (``paac.nets``)
  ``make_network``, ``make_torso``: nips, nature or mlp torsos with heads;
  ``ActorCritic``, ``QNetwork``: the two head types.

Algorithms (``paac.algorithms``)
  ``make_algorithm``, ``network_for``, ``init_state``, ``state_template``: the dispatcher
  and the learner state it starts from. ``make_a2c``, ``make_a2c_grad``, ``make_update``:
  PAAC's actor-critic, its gradient and its averaged update. ``make_act``,
  ``make_greedy_act``: acting. ``make_optimizer``, ``make_lr_schedule``: clipped TF1-style
  RMSProp with PAAC's linear anneal. ``make_a3c``, ``make_ga3c``, ``ParamRing``,
  ``ring_init``, ``ring_push``, ``ring_get``, ``ring_gather``: the async emulations and
  their ring of parameter versions. ``make_value_algorithm``, ``q_targets``, ``epsilon``,
  ``draw_final_epsilons``: n-step Q, one-step Q and one-step Sarsa. ``normalized``:
  observation and reward normalisation around any algorithm.

The running system (``paac.run``)
  ``train``, ``TrainResult``: the whole training loop. ``collect_rollout``,
  ``RolloutCarry``: one rollout. ``segment_env_seed``: the environments' seed after each
  interval checkpoint. ``make_env``, ``make_training_env``, ``env_spec``, ``EpisodeStats``:
  EnvPool environments and whole-game scores; ``ActionBounds``: continuous actions made
  the task's (rescaled to its bounds, clipped). ``Checkpointer``, ``read_meta``,
  ``CheckpointError``: orbax checkpoints of a run. ``export_agent``, ``load_agent``,
  ``Agent``: a trained agent as a small folder, without its checkpoints. ``DataParallel``,
  ``make_mesh``: several devices and processes.

Tools (``paac.tools``)
  ``evaluate``: play a checkpoint. ``run_comparison``, ``write_comparison``,
  ``ComparisonInterrupted``: sync vs a3c vs ga3c. ``load_run``, ``plot_runs``, ``smooth``,
  ``RunCurves``, ``PlotError``: learning curves.
"""

from paac.algorithms.a2c import make_a2c, make_a2c_grad, make_update
from paac.algorithms.asynchronous import (
    ParamRing,
    make_a3c,
    make_ga3c,
    ring_gather,
    ring_get,
    ring_init,
    ring_push,
)
from paac.algorithms.build import init_state, make_algorithm, network_for, state_template
from paac.algorithms.common import make_act, make_greedy_act, make_lr_schedule, make_optimizer
from paac.algorithms.normalize import normalized
from paac.algorithms.value import draw_final_epsilons, epsilon, make_value_algorithm, q_targets
from paac.core.config import Config, ConfigError
from paac.core.types import Algorithm, Batch, EnvSpec, LearnerState
from paac.nets.networks import ActorCritic, QNetwork, make_network, make_torso
from paac.ops.distributions import CATEGORICAL, GAUSSIAN, Distribution
from paac.ops.losses import A2CLossTerms, a2c_loss, explained_variance, masked_mean
from paac.ops.normalize import RunningMoments, discounted_returns, normalize, update_moments
from paac.ops.returns import batched_gae, batched_nstep_returns, gae, nstep_returns, valid_mask
from paac.run.agents import Agent, export_agent, load_agent
from paac.run.checkpoints import Checkpointer, CheckpointError, read_meta
from paac.run.distributed import DataParallel, make_mesh
from paac.run.envs import ActionBounds, EpisodeStats, env_spec, make_env, make_training_env
from paac.run.resume import segment_env_seed
from paac.run.rollout import RolloutCarry, collect_rollout
from paac.run.train import TrainResult, train
from paac.tools.compare import ComparisonInterrupted, run_comparison, write_comparison
from paac.tools.evaluate import evaluate
from paac.tools.plot import PlotError, RunCurves, load_run, plot_runs, smooth

__version__ = "0.1.0"

__all__ = [
    # core
    "Config",
    "ConfigError",
    "EnvSpec",
    "LearnerState",
    "Batch",
    "Algorithm",
    # ops
    "nstep_returns",
    "gae",
    "batched_nstep_returns",
    "batched_gae",
    "valid_mask",
    "a2c_loss",
    "A2CLossTerms",
    "masked_mean",
    "explained_variance",
    "Distribution",
    "CATEGORICAL",
    "GAUSSIAN",
    "RunningMoments",
    "update_moments",
    "normalize",
    "discounted_returns",
    # nets
    "make_network",
    "make_torso",
    "ActorCritic",
    "QNetwork",
    # algorithms
    "make_algorithm",
    "network_for",
    "init_state",
    "state_template",
    "make_a2c",
    "make_a2c_grad",
    "make_update",
    "make_act",
    "make_greedy_act",
    "make_optimizer",
    "make_lr_schedule",
    "make_a3c",
    "make_ga3c",
    "ParamRing",
    "ring_init",
    "ring_push",
    "ring_get",
    "ring_gather",
    "make_value_algorithm",
    "q_targets",
    "epsilon",
    "draw_final_epsilons",
    "normalized",
    # run
    "train",
    "TrainResult",
    "collect_rollout",
    "RolloutCarry",
    "segment_env_seed",
    "make_env",
    "make_training_env",
    "env_spec",
    "EpisodeStats",
    "ActionBounds",
    "Checkpointer",
    "read_meta",
    "CheckpointError",
    "export_agent",
    "load_agent",
    "Agent",
    "DataParallel",
    "make_mesh",
    # tools
    "evaluate",
    "run_comparison",
    "write_comparison",
    "ComparisonInterrupted",
    "load_run",
    "plot_runs",
    "smooth",
    "RunCurves",
    "PlotError",
]
