"""Sync PAAC against emulated A3C and GA3C on equal footing.

Every mode trains the same configuration (network, ``n_e``, ``t_max``, learning rate,
environment steps) with the same seeds; only ``--mode`` differs. The comparison writes,
in its directory:

* ``runs/<env>/<mode>-s<seed>/``: each training run (metrics, checkpoints);
* ``comparison.png``: score (mean of the last 20 games) against environment steps, one
  curve per mode: the mean over seeds and a band from the lowest to the highest seed (a
  run that stopped early at ``--target-score`` keeps its last score to the end);
* ``comparison.md``: a Markdown table of final scores and steps/s per mode;
* ``comparison.json``: the same figures per run.

A run already present with the same configuration is read back instead of trained again,
so an interrupted comparison can be run again to complete it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from paac.core.config import MODES, Config, ConfigError
from paac.run.checkpoints import CHECKPOINT_SUBDIR, holds_checkpoint
from paac.run.envs import SCORE_WINDOW
from paac.run.signals import Terminated, caught
from paac.run.train import train
from paac.tools.plot import PlotError, read_metrics

CURVE_POINTS = 200


class RunSummary(NamedTuple):
    """One training run of the comparison."""

    mode: str
    seed: int
    run_dir: str
    steps: int
    final_score: float | None  # mean raw score of the last 20 games at the end
    steps_per_second: float  # environment steps over wall time, compilation included
    curve_steps: np.ndarray  # steps of the rows where score_last20 is known
    curve_scores: np.ndarray  # score_last20 of those rows
    episodes: int = 0  # games finished by the end


def mode_label(config: Config) -> str:
    """``sync``, ``a3c (W=16, round_robin)``, ``ga3c (lag 2)``: the mode and its settings."""
    if config.mode == "a3c":
        stale = config.staleness
        if stale == "uniform":
            stale += f" <= {config.max_staleness}"
        elif stale == "fixed":
            stale += f" {config.max_staleness}"
        return f"a3c (W={config.num_workers}, {stale})"
    if config.mode == "ga3c":
        return f"ga3c (lag {config.policy_lag})"
    return "sync"


def _comparable(config: Config) -> dict:
    """The parts of a config that decide a run's result (not where it is written)."""
    d = config.to_dict()
    for k in (
        "out_dir",
        "run_name",
        "resume",
        "num_threads",
        "vectorization",
        "log_interval",
        "keep",
    ):
        d.pop(k)
    return d


def read_run(run_dir: str, mode: str, seed: int) -> RunSummary:
    """The summary of a finished run from its ``metrics.csv``."""
    path = os.path.join(run_dir, "metrics.csv")
    try:
        rows = read_metrics(path, ("score_last20", "episodes"))
    except PlotError as e:
        raise ConfigError(str(e)) from None
    if rows["step"].size == 0:
        raise ConfigError(f"{path!r} has no rows")
    scores = rows["score_last20"]
    known = ~np.isnan(scores)
    final = None if np.isnan(scores[-1]) else float(scores[-1])
    walltime = float(rows["walltime"][-1])
    total = int(rows["step"][-1])
    sps = total / walltime if walltime > 0 else math.nan
    episodes = 0 if np.isnan(rows["episodes"][-1]) else int(rows["episodes"][-1])
    curve_steps, curve_scores = rows["step"][known], scores[known]
    return RunSummary(mode, seed, run_dir, total, final, sps, curve_steps, curve_scores, episodes)


class ComparisonInterrupted(Exception):
    """A signal (Ctrl-C, SIGTERM) stopped one of the comparison's runs.

    With ``resumable`` running the comparison again goes on (from the run's checkpoint, or
    from its start if it wrote nothing yet); without, the run saved no checkpoint (a second
    Ctrl-C) and its directory must be deleted first.
    """

    def __init__(self, run_dir: str, signum: int, resumable: bool = True):
        super().__init__(f"{run_dir} stopped by signal {signum}")
        self.run_dir = run_dir
        self.signum = signum
        self.resumable = resumable


def run_comparison(
    base: Config,
    out_dir: str,
    modes: Sequence[str] = MODES,
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = False,
) -> list[RunSummary]:
    """Trains ``base`` in each of ``modes`` with each of ``seeds`` under ``out_dir``.

    Runs already finished there are read back; an unfinished one (stopped by a signal) is
    resumed from its checkpoint. A signal that stops a run stops the comparison:
    :class:`ComparisonInterrupted`.

    Args:
      base: the configuration every run trains; ``mode``, ``seed``, ``out_dir``,
        ``run_name`` and ``resume`` are set per run.
      out_dir: the comparison's directory; run ``<mode>-s<seed>`` is written to
        ``<out_dir>/runs/<env>/<mode>-s<seed>/``.
      modes: the modes to compare, each of :data:`paac.core.config.MODES` at most once.
      seeds: the seeds, at least one, none twice.
      progress: passed on to :func:`paac.run.train.train`.

    Returns:
      One :class:`RunSummary` per run, modes in the order given, seeds within each. Bad
      modes or seeds, an impossible run configuration, or a run directory of another
      configuration is a ConfigError, raised before any run trains.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"--modes={list(modes)!r} is invalid: choose from {', '.join(MODES)}")
    if not seeds:
        raise ConfigError("--seeds is empty: give at least one seed")
    for name, values in (("modes", modes), ("seeds", seeds)):
        repeated = sorted({v for v in values if list(values).count(v) > 1})
        if repeated:
            raise ConfigError(
                f"--{name}={list(values)!r} is invalid: {repeated} given more than once "
                "(a run would be counted twice)"
            )
    runs_root = os.path.join(out_dir, "runs")
    # Every run's config and directory are checked before the first one trains: an
    # impossible combination (an async mode with a value-based --algo, say) or a directory
    # of another configuration is found before hours of the other runs.
    plan = []
    for mode in modes:
        for seed in seeds:
            name = f"{mode}-s{seed}"
            config = dataclasses.replace(
                base, mode=mode, seed=seed, out_dir=runs_root, run_name=name, resume=None
            )
            run_dir = os.path.join(runs_root, config.env, name)
            plan.append((mode, seed, name, config, run_dir, _status(run_dir, config)))
    results = []
    for mode, seed, name, config, run_dir, status in plan:
        if status == "finished":
            print(f"paac: {name}: already trained in {run_dir}", flush=True)
        else:
            if status == "unfinished":
                config = dataclasses.replace(config, resume=run_dir)
                print(f"paac: {name}: resuming ({mode_label(config)})", flush=True)
            else:
                print(f"paac: {name}: training ({mode_label(config)})", flush=True)
            try:
                result = train(config, progress=progress)
            except (KeyboardInterrupt, Terminated) as e:  # before its training began
                raise _interrupted(run_dir, config, caught(e)) from None
            if result.interrupted:
                raise _interrupted(run_dir, config, result.signal or signal.SIGINT)
        results.append(read_run(run_dir, mode, seed))
    return results


def _interrupted(run_dir: str, config: Config, signum: int) -> ComparisonInterrupted:
    """The stop of ``run_dir``'s run, resumable if running the comparison again goes on."""
    try:
        _status(run_dir, config)
    except ConfigError:  # no checkpoint to resume, and a run that a new one may not replace
        return ComparisonInterrupted(run_dir, signum, resumable=False)
    return ComparisonInterrupted(run_dir, signum)


def _saved_config(run_dir: str) -> Config | None:
    """The config of the run in ``run_dir``, or None if it has none.

    Read with :meth:`Config.from_dict`; a file that holds no valid config is a ConfigError.
    """
    path = os.path.join(run_dir, "config.json")

    def invalid(why: str) -> ConfigError:
        return ConfigError(
            f"{path!r} holds no valid run config ({why}): delete {run_dir!r} or choose another "
            "--compare-dir"
        )

    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError:
        return None
    except ValueError as e:  # not JSON, or not UTF-8
        raise invalid(f"not JSON: {e}") from None
    if not isinstance(saved, dict):
        raise invalid("not a JSON object")
    try:
        return Config.from_dict(saved)
    except (ConfigError, TypeError, ValueError) as e:
        raise invalid(str(e)) from None


def _status(run_dir: str, config: Config) -> str:
    """What ``run_dir`` holds of ``config``'s run: ``new``, ``finished`` or ``unfinished``.

    ``new``: nothing there; ``finished``: this configuration's run, trained to its end or
    stopped at its target score; ``unfinished``: this configuration's run, stopped with a
    checkpoint to resume. Anything else is a ConfigError.
    """
    saved = _saved_config(run_dir)
    if saved is None:
        return "new"
    if _comparable(saved) != _comparable(config):
        raise ConfigError(
            f"{run_dir!r} holds a run of another configuration: choose another --compare-dir"
        )
    summary = read_run(run_dir, config.mode, config.seed)
    # Training stops at the target once a whole window of games is in the mean.
    reached = (
        config.target_score is not None
        and summary.final_score is not None
        and summary.episodes >= SCORE_WINDOW
        and summary.final_score >= config.target_score
    )
    if summary.steps >= config.last_update * config.batch_size or reached:
        return "finished"
    if holds_checkpoint(os.path.join(run_dir, CHECKPOINT_SUBDIR)):
        return "unfinished"
    raise ConfigError(
        f"{run_dir!r} holds an unfinished run (step {summary.steps}) that saved no "
        "checkpoint: delete it and run the comparison again"
    )


def _curve_grid(results: Sequence[RunSummary]) -> np.ndarray:
    end = max(r.steps for r in results)
    return np.linspace(0.0, float(end), CURVE_POINTS)


def _on_grid(run: RunSummary, grid: np.ndarray) -> np.ndarray:
    """The run's score_last20 at each grid step: the last known value.

    It is held past the run's end (the runs of a comparison share ``total_steps``: one that
    ended sooner reached ``--target-score``, and stays in the mean and the band); NaN
    before its first score.
    """
    out = np.full(grid.shape, np.nan)
    if run.curve_steps.size == 0:
        return out
    idx = np.searchsorted(run.curve_steps, grid, side="right") - 1
    known = idx >= 0
    out[known] = run.curve_scores[idx[known]]
    return out


def plot_comparison(results: Sequence[RunSummary], labels: dict, out_path: str, title: str) -> str:
    """Score vs steps, one curve per mode: mean over seeds, band from min to max seed."""
    # Deferred on purpose: matplotlib is only needed to draw, not to train or compare.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(7.5, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    grid = _curve_grid(results)
    for i, mode in enumerate(dict.fromkeys(r.mode for r in results)):
        runs = [r for r in results if r.mode == mode]
        ys = np.stack([_on_grid(r, grid) for r in runs])
        have = ~np.all(np.isnan(ys), axis=0)
        if not have.any():
            continue
        with warnings.catch_warnings():  # "mean of empty slice" where no seed has a score
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = np.nanmean(ys[:, have], axis=0)
            lo, hi = np.nanmin(ys[:, have], axis=0), np.nanmax(ys[:, have], axis=0)
        color = f"C{i % 10}"
        label = f"{labels[mode]}, {len(runs)} seed" + ("s" if len(runs) > 1 else "")
        ax.plot(grid[have], mean, color=color, linewidth=1.8, label=label)
        ax.fill_between(grid[have], lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("score (mean of the last 20 games)")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.35)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title)
    fig.savefig(out_path)
    return out_path


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def comparison_table(results: Sequence[RunSummary], labels: dict) -> str:
    """A Markdown table: per mode, final score mean +- sd over seeds, per seed, steps/s."""
    lines = [
        "| mode | seeds | final score, mean ± sd | per seed | env steps | steps/s |",
        "|---|---|---|---|---|---|",
    ]
    for mode in dict.fromkeys(r.mode for r in results):
        runs = [r for r in results if r.mode == mode]
        finals = [r.final_score for r in runs if r.final_score is not None]
        mean = float(np.mean(finals)) if finals else None
        sd = float(np.std(finals)) if len(finals) > 1 else None
        score = _fmt(mean) + (f" ± {_fmt(sd)}" if sd is not None else "")
        per_seed = ", ".join(f"s{r.seed}: {_fmt(r.final_score)}" for r in runs)
        steps = sorted({r.steps for r in runs})
        steps_txt = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}-{steps[-1]:,}"
        sps = _fmt(float(np.mean([r.steps_per_second for r in runs])), 0)
        lines.append(
            f"| {labels[mode]} | {len(runs)} | {score} | {per_seed} | {steps_txt} | {sps} |"
        )
    return "\n".join(lines) + "\n"


def write_comparison(
    results: Sequence[RunSummary], base: Config, out_dir: str
) -> tuple[str, str, str]:
    """Writes ``comparison.png``, ``comparison.md`` and ``comparison.json``; their paths."""
    labels = {r.mode: mode_label(dataclasses.replace(base, mode=r.mode)) for r in results}
    png = plot_comparison(
        results,
        labels,
        os.path.join(out_dir, "comparison.png"),
        f"{base.env}: sync PAAC vs emulated A3C and GA3C (n_e={base.n_envs}, t_max={base.t_max})",
    )
    md = os.path.join(out_dir, "comparison.md")
    with open(md, "w") as f:
        f.write(comparison_table(results, labels))
    js = os.path.join(out_dir, "comparison.json")
    with open(js, "w") as f:
        runs = [
            {
                "mode": r.mode,
                "label": labels[r.mode],
                "seed": r.seed,
                "run_dir": r.run_dir,
                "steps": r.steps,
                "final_score": r.final_score,
                "steps_per_second": r.steps_per_second,
            }
            for r in results
        ]
        json.dump({"config": base.to_dict(), "runs": runs}, f, indent=2)
    return png, md, js
