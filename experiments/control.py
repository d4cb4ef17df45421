"""Train PAAC on a classic-control task (MLP torso) with the task's preset.

python experiments/control.py --env Acrobot-v1
"""

import sys

from paac.tools.cli import main
from paac.tools.presets import CONTROL

if __name__ == "__main__":
    sys.exit(main(CONTROL, description=__doc__, presets=True))
