"""Train PAAC on a task with continuous actions (a Gaussian policy, MLP torso) with the task's
preset: EnvPool's MuJoCo tasks, Box2D's continuous ones and classic control's.

python experiments/mujoco.py --env HalfCheetah-v4
"""

import sys

from paac.tools.cli import main
from paac.tools.presets import CONTINUOUS

if __name__ == "__main__":
    sys.exit(main(CONTINUOUS, description=__doc__, presets=True))
