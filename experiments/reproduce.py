"""Retrain the rows of docs/results.md and regenerate its figures (runs resume if they exist).

python experiments/reproduce.py --list          # the commands of every row
python experiments/reproduce.py pong-s0         # train (or resume) a row, then evaluate it
python experiments/reproduce.py --report        # the figures of every row's run
"""

import sys

from paac.tools.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
