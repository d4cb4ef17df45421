"""Train PAAC on an Atari game with the published defaults.

python experiments/atari.py --env Pong-v5
"""

import sys

from paac.tools.cli import main
from paac.tools.presets import ATARI

if __name__ == "__main__":
    sys.exit(main(ATARI, description=__doc__, presets=True))
