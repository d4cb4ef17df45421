"""Train each task's preset for several seeds and write a Markdown table of the results.

python experiments/presets_table.py --out-dir checkpoints/presets
python experiments/presets_table.py --tasks Acrobot-v1 --preset control   # another preset

Each run is what `experiments/control.py --env TASK --seed S` trains (the task's preset and
its budget; --preset NAME for all tasks instead, and every other flag is a training flag
applied to all runs), in <out-dir>/<task>/<preset>-s<seed>; a run already there is resumed,
or only read when it has finished. Then its final checkpoint plays --episodes greedy games.
Options of this script: --tasks (default: every task preset), --seeds (default: 0 1 2),
--episodes (default: 20), --table (default: <out-dir>/presets.md).
"""

import argparse
import csv
import os
import sys

from paac.core.config import ConfigError
from paac.core.xla_cpu import enable_ynn
from paac.run.train import train
from paac.tools.cli import exit_status, parse_config
from paac.tools.evaluate import evaluate
from paac.tools.presets import CONTROL, TASK_PRESETS, preset_of

HEADER = (
    "| task | preset | seed | steps | wall time | last-20 mean | greedy mean ± std | greedy min |\n"
    "|---|---|---|---|---|---|---|---|\n"
)


def _parse_own_flags(argv):
    pre = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    pre.add_argument("--tasks", nargs="+", default=list(TASK_PRESETS))
    pre.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    pre.add_argument("--episodes", type=int, default=20)
    pre.add_argument("--table", default=None)
    pre.add_argument("--out-dir", default="checkpoints/presets")
    pre.add_argument("--preset", default=None)
    return pre.parse_known_args(argv)


def run_one(task: str, seed: int, known, rest: list[str]) -> dict | int:
    """Trains (or resumes, or reads) one run and plays its greedy games; the exit status
    when the run stopped short (a signal, a non-finite update, a failed write)."""
    preset = known.preset or preset_of(task)
    name = f"{preset}-s{seed}"
    run_dir = os.path.join(known.out_dir, task, name)
    if os.path.exists(os.path.join(run_dir, "config.json")):
        args = ["--resume", run_dir]
    else:
        args = ["--env", task, "--preset", preset, "--seed", str(seed), *rest]
        args += ["--out-dir", known.out_dir, "--run-name", name]
    config = parse_config(CONTROL, args, presets=True)
    status = exit_status(train(config))
    if status:
        return status
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        last = list(csv.DictReader(f))[-1]
    stats = evaluate(run_dir, episodes=known.episodes, greedy=True)
    return {
        "task": task,
        "preset": preset,
        "seed": seed,
        "steps": int(last["step"]),
        "wall": float(last["walltime"]),
        "last20": float(last["score_last20"]) if last["score_last20"] else float("nan"),
        "greedy": stats["mean"],
        "std": stats["std"],
        "min": stats["min"],
    }


def table_row(r: dict) -> str:
    return (
        f"| {r['task']} | {r['preset']} | {r['seed']} | {r['steps']:,} | {r['wall']:.0f} s | "
        f"{r['last20']:.1f} | {r['greedy']:.1f} ± {r['std']:.1f} | {r['min']:.1f} |"
    )


def main(argv=None) -> int:
    enable_ynn()  # before JAX starts its backends
    known, rest = _parse_own_flags(argv)
    table = known.table or os.path.join(known.out_dir, "presets.md")
    rows = []
    for task in known.tasks:
        for seed in known.seeds:
            try:
                r = run_one(task, seed, known, rest)
            except ConfigError as e:
                print(f"paac: error: {e}", file=sys.stderr)
                return 2
            if isinstance(r, int):
                print("paac: table stopped; run the same command again to go on", file=sys.stderr)
                return r
            rows.append(table_row(r))
            print(rows[-1], file=sys.stderr)
    text = HEADER + "\n".join(rows) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(table)), exist_ok=True)
    with open(table, "w") as f:
        f.write(text)
    print(text, end="")
    print(f"paac: table written to {table}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
