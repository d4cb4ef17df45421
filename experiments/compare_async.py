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

from paac.core.config import ConfigError
from paac.core.xla_cpu import enable_ynn
from paac.run.rundir import check_writable
from paac.run.signals import Terminated, caught, raising
from paac.tools.cli import parse_config
from paac.tools.compare import ComparisonInterrupted, run_comparison, write_comparison
from paac.tools.presets import defaults_for

# CartPole: 300k steps each, and the published A3C/PAAC gradient clip (40) for every mode,
# since a3c clips each worker's own (noisier) gradient; see docs/algorithms.md.
COMPARE_CONTROL = dict(total_steps=300_000, clip_norm=40.0)


def main(argv=None) -> int:
    try:
        with raising():  # training installs its own handlers while it runs
            return _main(argv)
    except (KeyboardInterrupt, Terminated) as e:  # between runs
        print("paac: comparison stopped; run the same command again to go on", file=sys.stderr)
        return 128 + caught(e)


def _main(argv) -> int:
    enable_ynn()
    try:
        known, rest = _parse_own_flags(argv)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    base = defaults_for(known.env)
    if base.arch == "mlp":
        base = dataclasses.replace(base, **COMPARE_CONTROL)
    config = parse_config(base, ["--env", known.env, *rest], description=__doc__)
    out = known.compare_dir or os.path.join(config.out_dir, "compare", config.env)
    try:
        check_writable(out, "compare_dir", out)
        results = run_comparison(config, out, known.modes, known.seeds)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    except ComparisonInterrupted as e:
        if e.resumable:
            how = "; run the same command again to go on"
        else:  # a second Ctrl-C: the run saved no checkpoint, and a rerun would refuse it
            how = (
                f" before it saved a checkpoint: delete {e.run_dir} and run the same command again"
            )
        print(f"paac: comparison stopped in {e.run_dir}{how}", file=sys.stderr)
        return 128 + int(e.signum)
    png, md, _ = write_comparison(results, config, out)
    with open(md) as f:
        print(f.read(), end="")
    print(f"paac: comparison written to {png} and {md}", file=sys.stderr)
    return 0


def _parse_own_flags(argv) -> tuple[argparse.Namespace, list[str]]:
    """This script's flags (the rest are training flags); bad values are a ConfigError,
    reported in one line as paac.cli reports the training flags."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
    pre.add_argument("--modes", nargs="+", default=["sync", "a3c", "ga3c"])
    pre.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    pre.add_argument("--compare-dir", default=None)
    pre.add_argument("--env", default="CartPole-v1")
    try:
        known, rest = pre.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(f"{e}") from None
    seeds = []
    for seed in known.seeds:
        try:
            seeds.append(int(seed))
        except ValueError:
            raise ConfigError(
                f"--seeds={known.seeds!r} is invalid: {seed!r} is not an integer"
            ) from None
    known.seeds = seeds
    given = [a.split("=")[0].replace("_", "-") for a in rest if a.startswith("--")]
    for training, how in (
        ("--seed", "the comparison sets it for each run; use --seeds"),
        ("--mode", "the comparison sets it for each run; use --modes"),
        ("--run-name", "the comparison names its runs <mode>-s<seed>"),
        ("--resume", "the same command again resumes the comparison's own runs"),
        (
            "--preset",
            "the comparison trains --env's preset (classic control: with 300k steps "
            "and clip 40); give its flags to change it",
        ),
    ):
        if training in given:
            raise ConfigError(f"{training} is invalid here: {how}")
    return known, rest


if __name__ == "__main__":
    sys.exit(main())
