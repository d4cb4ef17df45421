"""Train PAAC on a classic-control task (MLP torso); the defaults solve CartPole-v1.

python experiments/control.py --env CartPole-v1
"""

import sys

from paac.tools.cli import main
from paac.tools.presets import CONTROL

if __name__ == "__main__":
    sys.exit(main(CONTROL, description=__doc__))
