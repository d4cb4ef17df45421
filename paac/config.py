"""The run configuration: one frozen, typed dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from paac.networks import ARCHS

LR_SCHEDULES = ("linear", "constant")


class ConfigError(Exception):
    """A configuration value is impossible; the message names field, value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Config:
    """PAAC: synchronous parallel advantage actor-critic (Clemente et al. 2017).

    Defaults are the published PAAC settings for Atari.
    """

    env: str = "Pong-v5"
    """EnvPool task id, e.g. Pong-v5, Breakout-v5, CartPole-v1."""
    n_envs: int = 32
    """n_e: environments stepped in lock-step."""
    t_max: int = 5
    """Steps per environment in each rollout; one update per n_e x t_max batch."""
    total_steps: int = 80_000_000
    """Environment (agent) steps to train for; each Atari step is 4 frames."""
    seed: int = 0
    """Seed of the environments and of the network and action sampling."""
    arch: str = "nips"
    """Network torso: nips | nature | mlp (mlp for vector observations)."""
    lr: float = 0.0224
    """Initial learning rate (PAAC: 0.0007 x n_e)."""
    lr_schedule: str = "linear"
    """linear (anneal to 0 at total_steps) | constant."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    gae_lambda: float | None = None
    """GAE lambda in [0, 1]; None gives PAAC's pure n-step returns."""
    entropy_coef: float = 0.02
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss 0.5 * (G - V)^2 (0.5 gives PAAC's 0.25 * (G - V)^2)."""
    clip_norm: float = 3.0
    """Global gradient-norm clip (the PAAC paper's own runs used 40)."""
    loss_scale: float | None = None
    """Factor on the batch-mean loss; None = t_max (PAAC tuned lr for a sum over t_max)."""
    rms_decay: float = 0.99
    """RMSProp decay (TF1 flavour: accumulator starts at 1, eps inside the sqrt)."""
    rms_eps: float = 0.1
    """RMSProp epsilon."""
    episodic_life: bool = True
    """Atari training only: a lost life ends the training episode (scores stay whole games)."""
    reward_clip: bool = True
    """Atari training only: clip rewards to [-1, 1] (scores stay raw)."""
    num_threads: int = 0
    """EnvPool worker threads; 0 lets EnvPool choose (one per core)."""
    out_dir: str = "checkpoints"
    """Root of the outputs; a run writes to <out-dir>/<env>/<run-name>/."""
    run_name: str | None = None
    """Name of the run directory; None: <arch>-s<seed>-<date-time>."""
    log_interval: int = 20_000
    """Environment steps between rows of metrics.csv and TensorBoard points."""
    target_score: float | None = None
    """Stop early once the mean raw score of the last 20 finished episodes reaches this."""

    def __post_init__(self) -> None:
        _validate(self)

    # Derived sizes: computed, never stored.
    @property
    def batch_size(self) -> int:
        """Transitions per update: n_envs * t_max."""
        return self.n_envs * self.t_max

    @property
    def num_updates(self) -> int:
        """Updates in the run: total_steps // batch_size."""
        return self.total_steps // self.batch_size

    @property
    def effective_loss_scale(self) -> float:
        return float(self.t_max if self.loss_scale is None else self.loss_scale)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        flag = "--" + field.replace("_", "-")
        raise ConfigError(f"{flag}={value!r} is invalid: {allowed}")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _validate(c: Config) -> None:
    _check(isinstance(c.n_envs, int) and c.n_envs >= 1, "n_envs", c.n_envs, "must be an integer >= 1")
    _check(isinstance(c.t_max, int) and c.t_max >= 1, "t_max", c.t_max, "must be an integer >= 1")
    _check(
        isinstance(c.total_steps, int) and c.total_steps >= c.n_envs * c.t_max,
        "total_steps",
        c.total_steps,
        f"must be at least n_envs * t_max = {c.n_envs * c.t_max} (one update)",
    )
    _check(c.arch in ARCHS, "arch", c.arch, f"must be one of {', '.join(ARCHS)}")
    _check(c.lr_schedule in LR_SCHEDULES, "lr_schedule", c.lr_schedule,
           f"must be one of {', '.join(LR_SCHEDULES)}")
    _check(_finite(c.lr) and c.lr > 0, "lr", c.lr, "must be a finite number > 0")
    _check(_finite(c.gamma) and 0.0 <= c.gamma <= 1.0, "gamma", c.gamma, "must be in [0, 1]")
    _check(
        c.gae_lambda is None or (_finite(c.gae_lambda) and 0.0 <= c.gae_lambda <= 1.0),
        "gae_lambda", c.gae_lambda, "must be in [0, 1], or None for n-step returns",
    )
    _check(_finite(c.entropy_coef) and c.entropy_coef >= 0, "entropy_coef", c.entropy_coef,
           "must be a finite number >= 0")
    _check(_finite(c.value_coef) and c.value_coef >= 0, "value_coef", c.value_coef,
           "must be a finite number >= 0")
    _check(_finite(c.clip_norm) and c.clip_norm > 0, "clip_norm", c.clip_norm,
           "must be a finite number > 0")
    _check(c.loss_scale is None or (_finite(c.loss_scale) and c.loss_scale > 0), "loss_scale",
           c.loss_scale, "must be a finite number > 0, or None for t_max")
    _check(_finite(c.rms_decay) and 0.0 <= c.rms_decay < 1.0, "rms_decay", c.rms_decay,
           "must be in [0, 1)")
    _check(_finite(c.rms_eps) and c.rms_eps > 0, "rms_eps", c.rms_eps, "must be a finite number > 0")
    _check(isinstance(c.num_threads, int) and c.num_threads >= 0, "num_threads", c.num_threads,
           "must be an integer >= 0 (0: EnvPool chooses)")
    _check(isinstance(c.log_interval, int) and c.log_interval >= 1, "log_interval",
           c.log_interval, "must be an integer >= 1")
    _check(isinstance(c.seed, int) and 0 <= c.seed < 2**31, "seed", c.seed,
           "must be an integer in [0, 2**31)")
    _check(bool(c.out_dir), "out_dir", c.out_dir, "must be a non-empty path")
    _check(c.run_name is None or (c.run_name and "/" not in c.run_name), "run_name",
           c.run_name, "must be a non-empty name without '/'")
    _check(c.target_score is None or _finite(c.target_score), "target_score", c.target_score,
           "must be a finite number, or None")
    # Imported here: the environment registry is only needed for this check.
    from paac.envs import known_env_ids

    known = known_env_ids()
    if c.env not in known:
        close = [e for e in known if e.lower().startswith(c.env.lower().split("-")[0][:4])][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"--env={c.env!r} is invalid: not an EnvPool task id{hint}; "
            "see envpool.list_all_envs() for all of them"
        )
