"""paac: synchronous parallel advantage actor-critic (PAAC) in JAX."""

from paac.asynchronous import (
    ParamRing,
    make_a3c,
    make_ga3c,
    ring_gather,
    ring_get,
    ring_init,
    ring_push,
)
from paac.checkpoints import Checkpointer, CheckpointError, read_meta
from paac.compare import ComparisonInterrupted, run_comparison, write_comparison
from paac.config import Config, ConfigError
from paac.distributed import DataParallel, make_mesh
from paac.envs import EnvSpec, EpisodeStats, env_spec, make_env, make_training_env
from paac.evaluate import evaluate
from paac.learner import (
    Algorithm,
    Batch,
    LearnerState,
    init_state,
    make_a2c,
    make_a2c_grad,
    make_act,
    make_algorithm,
    make_greedy_act,
    make_lr_schedule,
    make_optimizer,
    make_update,
    network_for,
    state_template,
)
from paac.losses import A2CLossTerms, a2c_loss, explained_variance, masked_mean
from paac.networks import ActorCritic, QNetwork, make_network, make_torso
from paac.plot import PlotError, RunCurves, load_run, plot_runs, smooth
from paac.returns import batched_gae, batched_nstep_returns, gae, nstep_returns, valid_mask
from paac.train import RolloutCarry, TrainResult, collect_rollout, segment_env_seed, train
from paac.value import draw_final_epsilons, epsilon, make_value_algorithm, q_targets

__version__ = "0.1.0"

__all__ = [
    "ParamRing",
    "make_a2c_grad",
    "make_a3c",
    "make_ga3c",
    "ring_gather",
    "ring_get",
    "ring_init",
    "ring_push",
    "ComparisonInterrupted",
    "run_comparison",
    "write_comparison",
    "Algorithm",
    "RolloutCarry",
    "draw_final_epsilons",
    "epsilon",
    "make_a2c",
    "make_algorithm",
    "make_value_algorithm",
    "network_for",
    "q_targets",
    "CheckpointError",
    "Checkpointer",
    "PlotError",
    "RunCurves",
    "evaluate",
    "load_run",
    "plot_runs",
    "read_meta",
    "segment_env_seed",
    "smooth",
    "state_template",
    "A2CLossTerms",
    "ActorCritic",
    "QNetwork",
    "Batch",
    "Config",
    "ConfigError",
    "DataParallel",
    "EnvSpec",
    "EpisodeStats",
    "LearnerState",
    "TrainResult",
    "a2c_loss",
    "batched_gae",
    "batched_nstep_returns",
    "collect_rollout",
    "env_spec",
    "explained_variance",
    "gae",
    "init_state",
    "make_act",
    "make_env",
    "make_greedy_act",
    "make_lr_schedule",
    "make_mesh",
    "make_network",
    "make_optimizer",
    "make_torso",
    "make_training_env",
    "make_update",
    "masked_mean",
    "nstep_returns",
    "train",
    "valid_mask",
]
