"""The results table's rows as commands, and the figures read back from their runs.

Every row of docs/results.md is a list of commands (training, then evaluation) that
``experiments/reproduce.py ROW`` runs in turn; a training run that exists is resumed, so a
row interrupted at any point continues where it stopped. ``--report`` reads each row's run
back: the steps and wall time at which the last-20 mean score first reached each mark, and
the evaluations written next to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
from typing import NamedTuple

from paac.core.config import ConfigError


class Row(NamedTuple):
    """One row of the results table: a training run, its evaluations and its marks."""

    script: str  # the training script, e.g. experiments/atari.py
    env: str
    seed: int
    args: tuple[str, ...]  # more flags of the training run
    marks: tuple[float, ...]  # last-20 mean scores whose first crossing is reported
    episodes: int = 20  # whole games of each evaluation, greedy and sampled

    @property
    def run_name(self) -> str:
        return f"{self.env.split('-')[0].lower()}-s{self.seed}"

    def run_dir(self, out_dir: str) -> str:
        return os.path.join(out_dir, self.env, self.run_name)

    def train_command(self, out_dir: str) -> list[str]:
        base = [sys.executable, self.script]
        if os.path.isdir(os.path.join(self.run_dir(out_dir), "checkpoints")):
            return base + ["--resume", self.run_dir(out_dir), *self.args]
        return base + [
            "--env",
            self.env,
            "--seed",
            str(self.seed),
            "--out-dir",
            out_dir,
            "--run-name",
            self.run_name,
            *self.args,
        ]

    def eval_commands(self, out_dir: str) -> list[list[str]]:
        base = [
            sys.executable,
            "experiments/evaluate.py",
            self.run_dir(out_dir),
            "--episodes",
            str(self.episodes),
        ]
        return [base + ["--greedy"], base]


PONG = ("experiments/atari.py", "Pong-v5")
ROWS: dict[str, Row] = {
    # The defaults (nips, n_e 32, t_max 5, the 80M-step schedule), stopped at 18M steps.
    "pong-s0": Row(*PONG, 0, ("--stop-at", "18000000"), (0.0, 10.0, 18.0)),
    "pong-s1": Row(*PONG, 1, ("--stop-at", "18000000"), (0.0, 10.0, 18.0)),
    "breakout-s0": Row(
        "experiments/atari.py", "Breakout-v5", 0, ("--stop-at", "10000000"), (50.0, 100.0, 200.0)
    ),
}
"""The rows of docs/results.md that a command retrains."""

FIGURES = {
    "docs/pong-learning-curve.png": ("pong-s0", "pong-s1"),
}
"""The figures of docs/results.md and the rows they plot."""


def marks_reached(run_dir: str, marks: tuple[float, ...]) -> dict[float, tuple[int, float] | None]:
    """``{mark: (step, wall seconds)}`` of the first metrics row whose last-20 mean is at or
    above each mark (None: not reached). Only rows with a whole window of 20 games count."""
    path = os.path.join(run_dir, "metrics.csv")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError(f"{path!r} cannot be read ({e.strerror or e})") from None
    reached: dict[float, tuple[int, float] | None] = dict.fromkeys(marks)
    for row in rows:
        if not row.get("score_last20") or int(row.get("episodes") or 0) < 20:
            continue
        score = float(row["score_last20"])
        for mark in marks:
            if reached[mark] is None and score >= mark:
                reached[mark] = (int(row["step"]), float(row["walltime"]))
    return reached


def evaluations(run_dir: str) -> list[dict]:
    """The evaluations written next to a run (``eval-<step>-<policy>.json``), newest step
    first."""
    found = []
    for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
        if name.startswith("eval-") and name.endswith(".json"):
            with open(os.path.join(run_dir, name)) as f:
                found.append(json.load(f))
    return sorted(found, key=lambda s: -s["step"])


def machine() -> str:
    """This machine in a line: CPU count, platform, and JAX's devices."""
    # Deferred on purpose: --list answers without loading JAX.
    import jax

    kinds = sorted({d.device_kind for d in jax.devices()})
    return f"{os.cpu_count()} CPU cores, {platform.platform()}, JAX on {', '.join(kinds)}"


def commit() -> str:
    """paac's commit (``git describe --always --dirty``), or ``unknown`` outside a clone."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(__file__),
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def report(names: list[str], out_dir: str) -> str:
    """The rows' figures as a markdown table."""
    lines = [
        f"paac {commit()}; {machine()}",
        "",
        "| row | steps | marks (last-20 mean: step, wall time) | greedy | sampled |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        row = ROWS[name]
        run_dir = row.run_dir(out_dir)
        reached = marks_reached(run_dir, row.marks)
        marks = ", ".join(
            f"{m:+g}: {r[0] / 1e6:.2f}M, {r[1] / 60:.0f} min" if r else f"{m:+g}: not reached"
            for m, r in reached.items()
        )
        evals = evaluations(run_dir)
        by_policy = {}
        for e in evals:
            by_policy.setdefault(e["policy"], e)
        cells = [
            f"{e['mean']:+.1f} ± {e['std']:.1f} ({e['episodes']} games, step {e['step']:,})"
            if (e := by_policy.get(p))
            else "-"
            for p in ("greedy", "sampled")
        ]
        steps = evals[0]["step"] if evals else "-"
        lines.append(f"| {name} | {steps} | {marks} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def commands(name: str, out_dir: str) -> list[list[str]]:
    """Everything ``name`` runs: its training (resumed if it exists), then evaluations; for a
    figure, the plot."""
    if name in FIGURES:
        dirs = [ROWS[r].run_dir(out_dir) for r in FIGURES[name]]
        return [[sys.executable, "experiments/plot.py", *dirs, "--out", name]]
    row = ROWS[name]
    return [row.train_command(out_dir), *row.eval_commands(out_dir)]


def main(argv: list[str] | None = None) -> int:
    """``reproduce.py [ROW|FIGURE ...] [--list] [--report] [--out-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="experiments/reproduce.py", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="ROW",
        help=f"rows: {', '.join(ROWS)}; "
        f"figures: {', '.join(FIGURES)} (default: all rows, then figures)",
    )
    parser.add_argument("--out-dir", default="checkpoints", help="where the runs are written")
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--report", action="store_true", help="print the rows' figures")
    args = parser.parse_args(argv)
    names = args.names or [*ROWS, *FIGURES]
    unknown = [n for n in names if n not in ROWS and n not in FIGURES]
    if unknown:
        allowed = ", ".join([*ROWS, *FIGURES])
        print(
            f"paac: error: {unknown[0]!r} is not a row or figure; allowed: {allowed}",
            file=sys.stderr,
        )
        return 2
    if args.report:
        print(report([n for n in names if n in ROWS], args.out_dir))
        return 0
    for name in names:
        for command in commands(name, args.out_dir):
            shown = shlex.join(["python", *command[1:]])
            print(shown if args.list else f"paac: {name}: {shown}", flush=True)
            if not args.list:
                done = subprocess.run(command)
                if done.returncode:
                    print(f"paac: error: {name}: exit {done.returncode}: {shown}", file=sys.stderr)
                    return done.returncode
    return 0
