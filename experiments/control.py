"""Train PAAC on a classic-control task (MLP torso); the defaults solve CartPole-v1.

python experiments/control.py --env CartPole-v1
"""

import sys

from paac.cli import main
from paac.config import Config

CONTROL_DEFAULTS = Config(
    env="CartPole-v1",
    arch="mlp",
    n_envs=16,
    t_max=5,
    total_steps=500_000,
    lr=0.01,
    entropy_coef=0.01,
    clip_norm=3.0,
    log_interval=5_000,
    checkpoint_interval=100_000,
    target_interval=2_000,  # value-based algos only
    epsilon_anneal_steps=40_000,  # value-based algos only
)

if __name__ == "__main__":
    sys.exit(main(CONTROL_DEFAULTS, description=__doc__))
