"""Learning curves from run directories: score against environment steps and wall time.

A run directory is what training writes to ``<out-dir>/<env>/<run-name>/``: ``config.json``
and ``metrics.csv`` (see ``paac.run.metrics.COLUMNS``). Only the rows in which at least one game
finished (a non-empty ``score``) become curve points.

Resumed runs append to the same ``metrics.csv``. ``load_run`` keeps such a file plottable:
a wall-time clock that restarts from zero continues from where the previous process stopped
(one that the trainer carries over is used as it is), rows that a later process logged again
(same or earlier ``step``) replace the earlier ones, and a last row cut short by a killed
process is ignored.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

FIGSIZE = (12.0, 4.5)
"""Figure size in inches; at ``DPI`` the PNG is 1440 x 540 pixels."""
DPI = 120


class PlotError(ValueError):
    """A run directory, metrics file or plot option that cannot be plotted; names the path."""


class RunCurves(NamedTuple):
    """One run's curve points: rows of ``metrics.csv`` in which a game finished."""

    label: str
    steps: np.ndarray
    """Environment steps so far (float64)."""
    walltime: np.ndarray
    """Seconds of training so far, summed over resumed processes (float64)."""
    scores: np.ndarray
    """Mean raw score of the games finished since the previous row (float64)."""


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's ``config.json`` as a dict; ``{}`` if it is missing or unreadable."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def default_label(run_dir: str | os.PathLike) -> str:
    """``"<env> <arch> s<seed>"`` from ``config.json``, else the directory name."""
    config = read_config(run_dir)
    if all(k in config for k in ("env", "arch", "seed")):
        return f"{config['env']} {config['arch']} s{config['seed']}"
    return os.path.basename(os.path.normpath(os.fspath(run_dir)))


def load_run(run_dir: str | os.PathLike, label: str | None = None) -> RunCurves:
    """Reads ``<run_dir>/metrics.csv`` into a ``RunCurves``, skipping rows with no score.

    Raises ``PlotError`` (a ``ValueError``) naming the path when ``run_dir`` is not a
    directory, has no ``metrics.csv``, the file lacks a needed column or holds a value that
    is not a number, or no game finished in the whole run.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        what = "is not a directory" if os.path.exists(run_dir) else "does not exist"
        raise PlotError(f"run directory {run_dir!r} {what}")
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        raise PlotError(f"{run_dir!r} has no metrics.csv (is it a run directory?)")

    metrics = read_metrics(path)
    steps, walltime, scores = metrics["step"], metrics["walltime"], metrics["score"]
    keep = ~np.isnan(scores)
    if not keep.any():
        if scores.size == 0:
            why = "metrics.csv has no rows yet"
        else:
            rows = f"{scores.size} logged row" + ("" if scores.size == 1 else "s")
            why = f"the score of all {rows} is empty"
        raise PlotError(f"no finished episodes in {run_dir!r}: {why}")
    return RunCurves(
        label=default_label(run_dir) if label is None else label,
        steps=steps[keep],
        walltime=walltime[keep],
        scores=scores[keep],
    )


def read_metrics(path: str, columns: Sequence[str] = ("score",)) -> dict[str, np.ndarray]:
    """``step``, cumulative ``walltime`` and ``columns`` of every logged row of a metrics.csv.

    Each is a float64 array with NaN where a value is empty or not finite.

    Resumed runs are stitched as the module says. Raises ``PlotError`` naming the path when
    the file cannot be read, lacks a column or holds a value that is not a number.
    """
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PlotError(f"cannot read {path!r}: {e}") from None
    if not lines:
        raise PlotError(f"{path!r} is empty (no header)")
    header = lines[0]
    names = ["step", "walltime", *columns]
    missing = [c for c in names if c not in header]
    if missing:
        raise PlotError(f"{path!r} has no {', '.join(repr(c) for c in missing)} column")
    index = [header.index(c) for c in names]

    rows: list[list[float]] = []  # step, raw walltime, then the columns (NaN where empty)
    last = len(lines) - 1
    for n, fields in enumerate(lines[1:], start=1):
        if not fields or fields == header:  # blank line, or a header written again
            continue
        if len(fields) != len(header):
            if n == last:  # the final row of a process killed mid-write
                continue
            raise PlotError(
                f"{path!r} line {n + 1} has {len(fields)} fields, expected {len(header)}"
            )
        try:
            step, wall = float(fields[index[0]]), float(fields[index[1]])
            values = [float(fields[i]) if fields[i].strip() else math.nan for i in index[2:]]
        except ValueError:
            raise PlotError(f"{path!r} line {n + 1} has a value that is not a number") from None
        rows.append([step, wall] + [v if math.isfinite(v) else math.nan for v in values])

    # A process whose clock starts again from zero (walltime falls below half the previous
    # row's) continues from where the previous one stopped; a smaller dip (a resumed clock a
    # little behind the last row) is held level. Steps logged again by a later process
    # (same or earlier ``step``) replace the earlier rows.
    kept: list[list[float]] = []
    offset = 0.0
    prev_wall = cum = -math.inf
    for step, wall, *values in rows:
        if wall < 0.5 * prev_wall:
            offset += prev_wall
        prev_wall = wall
        cum = max(cum, wall + offset)
        while kept and kept[-1][0] >= step:
            kept.pop()
        kept.append([step, cum, *values])
    arr = np.asarray(kept, dtype=np.float64).reshape(-1, len(names))
    return {name: arr[:, i] for i, name in enumerate(names)}


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average: point ``i`` is the mean of ``values[max(0, i-window+1):i+1]``.

    The first ``window - 1`` points average over the points there are, so the result has the
    input's length; ``window=1`` returns the values unchanged (as a float array).
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise PlotError(f"smoothing window must be an integer >= 1, got {window!r}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise PlotError(f"smooth expects a 1-D sequence, got shape {x.shape}")
    if window == 1 or x.size == 0:
        return x.copy()
    csum = np.concatenate(([0.0], np.cumsum(x)))
    end = np.arange(1, x.size + 1)
    start = np.maximum(end - window, 0)
    return (csum[end] - csum[start]) / (end - start)


def plot_runs(
    run_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_path: str | os.PathLike,
    smooth_window: int = 1,
    labels: Sequence[str] | None = None,
) -> str:
    """Draws score vs environment steps and score vs wall time, one line per run; saves it.

    The format follows the suffix of ``out_path`` (``.png`` when it has none, which is then
    added); missing parent directories are created. Returns the path written. With
    ``smooth_window > 1`` each run shows its raw points faintly under the trailing moving
    average. Uses matplotlib's Agg canvas without pyplot, so it needs no display and leaves
    the caller's pyplot state and backend alone.

    Args:
      run_dirs: one run directory or several (each with a ``metrics.csv``).
      out_path: the image to write; a directory (or a path ending in ``/``) gets
        ``learning_curves.png`` in it.
      smooth_window: rows in the trailing moving average (:func:`smooth`); 1 for none.
      labels: one legend label per run; None for :func:`default_label`, told apart by
        their paths where two runs share one.

    Returns:
      The path written. A run that cannot be plotted, a wrong number of labels, a bad
      window, an unknown image format or an unwritable path is a :class:`PlotError`.
    """
    if isinstance(run_dirs, str | os.PathLike):
        run_dirs = [run_dirs]
    run_dirs = [os.fspath(d) for d in run_dirs]
    if not run_dirs:
        raise PlotError("no run directories given")
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != len(run_dirs):
            raise PlotError(f"got {len(labels)} labels for {len(run_dirs)} run directories")
    smooth(np.zeros(0), smooth_window)  # validates the window before any work

    if labels is None:
        runs = _disambiguate([load_run(d) for d in run_dirs], run_dirs)
    else:
        runs = [load_run(d, label) for d, label in zip(run_dirs, labels, strict=True)]

    out_path = os.fspath(out_path)
    if os.path.isdir(out_path) or out_path.endswith(("/", os.sep)):  # a directory to write in
        out_path = os.path.join(out_path, "learning_curves.png")
    # Deferred on purpose: matplotlib is only needed to draw, not to read runs.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ext = os.path.splitext(out_path)[1].lower().lstrip(".")
    if not ext:
        ext, out_path = "png", out_path + ".png"
    if ext not in fig.canvas.get_supported_filetypes():
        formats = ", ".join(sorted(fig.canvas.get_supported_filetypes()))
        raise PlotError(f"cannot write {out_path!r}: unknown image format {ext!r} ({formats})")

    ax_steps, ax_time = fig.subplots(1, 2, sharey=True)
    max_wall = max(float(r.walltime.max()) for r in runs)
    if max_wall < 120:
        unit, scale = "s", 1.0
    elif max_wall < 3 * 3600:
        unit, scale = "min", 60.0
    else:
        unit, scale = "h", 3600.0

    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        y = smooth(run.scores, smooth_window)
        marker = "o" if run.scores.size == 1 else None
        for ax, x in ((ax_steps, run.steps), (ax_time, run.walltime / scale)):
            if smooth_window > 1:
                ax.plot(x, run.scores, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, y, color=color, linewidth=1.8, marker=marker, label=run.label)

    ax_steps.set_xlabel("environment steps")
    ax_steps.set_ylabel("episode score (raw)")
    ax_steps.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax_steps.set_title("score vs environment steps")
    ax_time.set_xlabel(f"wall time ({unit})")
    ax_time.set_title("score vs wall time")
    ax_time.tick_params(labelleft=True)
    for ax in (ax_steps, ax_time):
        ax.grid(True, alpha=0.35)
        ax.set_xlim(left=0)
    ax_steps.legend(loc="best", fontsize="small")

    envs = {read_config(d).get("env") for d in run_dirs}
    env = envs.pop() if len(envs) == 1 else None
    title = f"{env} learning curves" if env else "Learning curves"
    if smooth_window > 1:
        title += f" (trailing mean of {smooth_window} log rows)"
    fig.suptitle(title)

    parent = os.path.dirname(out_path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        fig.savefig(out_path, format=ext)
    except OSError as e:
        raise PlotError(f"cannot write {out_path!r}: {e.strerror or e}") from None
    return out_path


def _disambiguate(runs: list[RunCurves], run_dirs: list[str]) -> list[RunCurves]:
    """Tells apart runs whose default labels are the same by a part of their paths.

    Adds to default labels that two or more runs share the part of each run's path that
    tells them apart: the directory name, or more of the path where the names are the same
    too (``cmp1/sync-s0`` and ``cmp2/sync-s0``).
    """
    paths = [os.path.abspath(d) for d in run_dirs]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(r.label, []).append(i)
    out = list(runs)
    for members in groups.values():
        if len(members) < 2:
            continue
        names = [os.path.basename(paths[i]) for i in members]
        distinct = {paths[i] for i in members}
        if len(set(names)) < len(names) and len(distinct) > 1:
            common = os.path.commonpath(sorted(distinct))
            names = [os.path.relpath(paths[i], common) for i in members]
        for i, name in zip(members, names, strict=True):
            out[i] = runs[i]._replace(label=f"{runs[i].label} ({name})")
    return out
