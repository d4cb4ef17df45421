"""Sync PAAC vs emulated A3C and GA3C: same config, seeds and environment steps.

python experiments/compare_async.py --env CartPole-v1
python experiments/compare_async.py --env Pong-v5 --seeds 0 1 2 --total-steps 20000000

Options of this script: --modes (default: sync a3c ga3c), --seeds (default: 0 1 2),
--compare-dir (default: checkpoints/compare/<env>). Every other flag is a training flag
(see experiments/atari.py --help), applied to all modes: --workers, --staleness,
--max-staleness and --policy-lag set the a3c and ga3c emulations.
"""

import argparse
import dataclasses
import os
import sys

from paac.cli import parse_config
from paac.compare import ComparisonInterrupted, run_comparison, write_comparison
from paac.config import ConfigError
from paac.presets import defaults_for

# CartPole: 300k steps each, and the published A3C/PAAC gradient clip (40) for every mode,
# since a3c clips each worker's own (noisier) gradient; see the README.
COMPARE_CONTROL = dict(total_steps=300_000, clip_norm=40.0)


def main(argv=None) -> int:
    from paac.xla_cpu import enable_ynn

    enable_ynn()
    pre = argparse.ArgumentParser(description=__doc__, add_help=False)
    pre.add_argument("--modes", nargs="+", default=["sync", "a3c", "ga3c"])
    pre.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    pre.add_argument("--compare-dir", default=None)
    pre.add_argument("--env", default="CartPole-v1")
    known, rest = pre.parse_known_args(argv)
    base = defaults_for(known.env)
    if base.arch == "mlp":
        base = dataclasses.replace(base, **COMPARE_CONTROL)
    config = parse_config(base, ["--env", known.env, *rest], description=__doc__)
    out = known.compare_dir or os.path.join(config.out_dir, "compare", config.env)
    try:
        os.makedirs(out, exist_ok=True)
        results = run_comparison(config, out, known.modes, known.seeds)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    except ComparisonInterrupted as e:
        print(
            f"paac: comparison stopped in {e.run_dir}; run the same command again to go on",
            file=sys.stderr,
        )
        return 128 + int(e.signum)
    except KeyboardInterrupt:  # before a run's training started
        print("paac: comparison stopped; run the same command again to go on", file=sys.stderr)
        return 130
    png, md, _ = write_comparison(results, config, out)
    with open(md) as f:
        print(f.read(), end="")
    print(f"paac: comparison written to {png} and {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
