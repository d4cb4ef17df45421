"""Train PAAC on an Atari game with the published defaults.

python experiments/atari.py --env Pong-v5
"""

import sys

from paac.cli import main
from paac.config import Config

if __name__ == "__main__":
    sys.exit(main(Config(), description=__doc__))
