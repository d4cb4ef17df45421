"""Run outputs: metrics.csv (one row per log interval) and TensorBoard scalars."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import socket
import time
from collections.abc import Mapping

from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import RecordWriter

from paac.core.config import WriteError

COLUMNS = (
    "step",
    "update",
    "walltime",
    "sps",
    "score",
    "score_last20",
    "episodes",
    "episode_length",
    "policy_loss",
    "value_loss",
    "entropy",
    "grad_norm",
    "lr",
    "explained_variance",
    "q_mean",
    "epsilon",
    "staleness",
)
"""``step``: environment steps so far; ``score``: mean raw score of the games finished
since the previous row (empty when none finished); ``score_last20``: mean raw score of
the last 20 finished games; ``walltime``: seconds since the run started."""


class MetricsWriter:
    """Appends rows to ``<run_dir>/metrics.csv`` and the same scalars to TensorBoard."""

    def __init__(self, run_dir: str, tensorboard: bool = True, purge_step: int | None = None):
        """``purge_step``: on resume, TensorBoard drops the events logged at or after it."""
        path = os.path.join(run_dir, "metrics.csv")
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        if not new:
            upgrade_header(path)
        self._file = open(path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            self._csv.writeheader()
            self._file.flush()
        self._tb = TensorBoardWriter(run_dir, purge_step) if tensorboard else None

    def write(self, row: Mapping[str, float | int | None]) -> None:
        """Appends ``row`` to metrics.csv (flushed) and to TensorBoard.

        Raises:
          WriteError: a file could not be written (a full disk, say).
        """
        try:
            self._csv.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
            self._file.flush()
        except OSError as e:
            raise WriteError.of(self._file.name, e) from None
        if self._tb is not None:
            self._tb.write(row)

    def close(self) -> None:
        """Closes metrics.csv and the TensorBoard file (what a failed write left unwritten
        in their buffers is dropped: a resume drops a cut row)."""
        with contextlib.suppress(OSError):
            self._file.close()
        if self._tb is not None:
            with contextlib.suppress(OSError):
                self._tb.close()


class TensorBoardWriter:
    """A row's scalars as one TensorBoard event, written in the calling thread.

    tensorboardX's ``SummaryWriter`` hands events to a thread that writes them when it gets
    to them, and its ``flush`` does not wait for that thread, so nothing it holds is sure to
    be on disk before a checkpoint; it also names its file by the second, so a process
    started in the same second as the last one would overwrite that one's file. Here each
    process start gets its own file, named by the microsecond (TensorBoard reads a run's
    files in name order) and pid.
    """

    def __init__(self, run_dir: str, purge_step: int | None = None):
        now = time.time()
        seconds, micros = divmod(int(now * 1e6), 10**6)
        name = f"events.out.tfevents.{seconds:010d}.{micros:06d}.{socket.gethostname()}"
        self.path = os.path.join(run_dir, f"{name}.{os.getpid()}")
        self._file = RecordWriter(self.path)
        self._write(Event(wall_time=now, file_version="brain.Event:2"))
        if purge_step is not None:  # TensorBoard drops the points of earlier files from here
            start = SessionLog(status=SessionLog.START)
            self._write(Event(wall_time=now, step=purge_step, session_log=start))

    def _write(self, event, flush: bool = False) -> None:
        try:
            self._file.write(event.SerializeToString())
            if flush:
                self._file.flush()
        except OSError as e:
            raise WriteError.of(self.path, e) from None

    def write(self, row: Mapping[str, float | int | None]) -> None:
        """Writes the finite scalars of ``row`` at its ``step`` as ``paac/<name>``, flushed."""
        values = [
            Summary.Value(tag=f"paac/{k}", simple_value=float(v))
            for k, v in row.items()
            if k != "step" and v is not None and math.isfinite(float(v))
        ]
        summary = Summary(value=values)
        # On disk at once (flushed): TensorBoard shows the row, and a checkpoint saved after
        # it never gets ahead of it (a resume keeps the logs up to its step).
        event = Event(wall_time=time.time(), step=int(row["step"]), summary=summary)
        self._write(event, flush=True)

    def close(self) -> None:
        """Closes the event file."""
        self._file.close()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    v = float(v)
    return "" if math.isnan(v) else f"{v:.6g}"


def truncate_metrics(run_dir: str, step: int) -> int:
    """Drops the rows of ``metrics.csv`` logged after ``step`` (a resumed run rewrites them).

    Returns how many rows were dropped. The file is replaced atomically.
    """
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(path):
        return 0
    cut = _drop_unfinished_line(path)
    upgrade_header(path)  # read the rows under the right column names
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(keep) < len(rows):
        _rewrite(path, keep)
    return len(rows) - len(keep) + cut


def _drop_unfinished_line(path: str) -> int:
    """Removes a last line without its newline; returns the lines removed (0 or 1).

    Such a line is a row (or header) cut short when the process was killed while writing
    it. Its values cannot be trusted (a step "2800" cut to "28"), and the next row
    appended would continue that line.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data or data.endswith(b"\n"):
        return 0
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
    return 1


def _rewrite(path: str, rows: list[dict]) -> None:
    """Replaces ``path`` atomically with today's header and ``rows``."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, text.getvalue())


def write_atomic(path: str, text: str) -> None:
    """Writes ``path`` whole or not at all.

    The text goes to a temporary file renamed over ``path``; a failed write leaves no
    temporary file behind.
    """
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError.of(path, e) from None
    finally:
        if os.path.isfile(tmp):
            os.remove(tmp)


def upgrade_header(path: str) -> bool:
    """Rewrites ``metrics.csv`` under today's :data:`COLUMNS` if its header differs.

    That is a run logged by an older paac, resumed by this one; new columns stay empty in
    old rows. Rows written under the old header with today's column count are read as
    today's. Returns whether the file was rewritten.
    """
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or tuple(lines[0]) == COLUMNS:
        return False
    old = lines[0]
    rows = []
    for line in lines[1:]:
        names = COLUMNS if len(line) == len(COLUMNS) else old
        rows.append(dict(zip(names, line, strict=False)))
    _rewrite(path, rows)
    return True
