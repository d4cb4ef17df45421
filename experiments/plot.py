"""Plot learning curves of runs: episode score vs environment steps and vs wall time.

python experiments/plot.py checkpoints/CartPole-v1/s0 checkpoints/CartPole-v1/s1 --smooth 3
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from paac.tools.plot import PlotError, plot_runs


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input in one line, like the training scripts."""

    def error(self, message: str):
        print(f"paac: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(args: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="experiments/plot.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories (<out-dir>/<env>/<run-name>) holding metrics.csv",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="image to write, format from the suffix (default: learning_curves.png in the "
        "first RUN_DIR)",
    )
    parser.add_argument(
        "--smooth",
        type=int,
        default=1,
        metavar="N",
        help="trailing moving average over the last N logged scores (default: 1, raw)",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="legend labels, one per RUN_DIR (default: '<env> <arch> s<seed>' from config.json)",
    )
    ns = parser.parse_args(args)
    if ns.smooth < 1:
        parser.error(f"--smooth must be an integer >= 1, got {ns.smooth}")
    out = ns.out or os.path.join(ns.run_dirs[0], "learning_curves.png")
    try:
        path = plot_runs(ns.run_dirs, out, smooth_window=ns.smooth, labels=ns.labels)
    except PlotError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
