"""paac: synchronous parallel advantage actor-critic (PAAC) in JAX."""

from paac.checkpoints import Checkpointer, CheckpointError, read_meta
from paac.config import Config, ConfigError
from paac.envs import EnvSpec, EpisodeStats, env_spec, make_env, make_training_env
from paac.evaluate import evaluate
from paac.learner import (
    Batch,
    LearnerState,
    init_state,
    make_act,
    make_greedy_act,
    make_lr_schedule,
    make_optimizer,
    make_update,
    state_template,
)
from paac.losses import A2CLossTerms, a2c_loss, explained_variance, masked_mean
from paac.networks import ActorCritic, make_network, make_torso
from paac.plot import PlotError, RunCurves, load_run, plot_runs, smooth
from paac.returns import batched_gae, batched_nstep_returns, gae, nstep_returns, valid_mask
from paac.train import TrainResult, collect_rollout, segment_env_seed, train

__version__ = "0.1.0"

__all__ = [
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
    "Batch",
    "Config",
    "ConfigError",
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
