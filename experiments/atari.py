"""Train PAAC on an Atari game with the published defaults.

python experiments/atari.py --env Pong-v5
"""

import sys

from paac.core.config import Config
from paac.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(Config(), description=__doc__))
