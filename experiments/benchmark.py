"""Throughput of PAAC against the raw environment limit, in one process.

    python experiments/benchmark.py --env Pong-v5 --arch nature --n-envs 16 --t-max 5 --seconds 60

Prints a table and one JSON line with every figure.
"""

from paac.tools.benchmark import main

if __name__ == "__main__":
    main()
