"""Checkpoints with orbax: everything needed to continue a run, written atomically.

A run directory holds ``checkpoints/<step>/`` (``step`` = environment steps), each an
orbax ``CheckpointManager`` step with two items:

* ``state``: the learner state (parameters, optimiser state, update counter) and the
  action-sampling RNG key, saved with ``ocp.args.StandardSave``;
* ``meta``: JSON with the format version, the resolved config, the step, the episode
  statistics and the wall time so far.

Orbax writes a step into a temporary directory and renames it when complete, so a run
killed in the middle of a save leaves the previous checkpoint readable; half-written
temporary directories are never taken for checkpoints.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import glob
import logging
import os
import re
import shutil
import sys
import threading
import traceback
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging as absl_logging

from paac.core.config import Config, ConfigError, WriteError, first_line, flag

FORMAT_VERSION = 2  # 2: LearnerState.extra (value-based algorithms)
READABLE_VERSIONS = (1, 2)  # 1: a2c only, before LearnerState.extra: restored with extra = {}
CHECKPOINT_SUBDIR = "checkpoints"
# Orbax writes a step into <step>.orbax-checkpoint-tmp... and renames it when complete.
TMP_SUFFIX = ".orbax-checkpoint-tmp"

# Fields a resumed run may change: they do not touch the update's mathematics (with exact
# resume checkpoint_interval places the environments' restarts: train warns of a change).
RESUME_MUTABLE_FIELDS = frozenset(
    {
        "num_threads",
        "vectorization",
        "log_interval",
        "checkpoint_interval",
        "keep",
        "target_score",
        "stop_at",
        "resume",
        "exact_resume",
        "out_dir",
        "run_name",
        "conv_impl",
        # Where the run runs: N devices with n_e / N environments each compute the update
        # of one device with n_e (paac.run.distributed).
        "devices",
        "coordinator_address",
        "num_processes",
        "process_id",
    }
)


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable or does not fit; the message says which and why."""


class Restored(NamedTuple):
    """What :func:`restore` gives back: the learner state, the action key and the meta."""

    state: Any  # LearnerState
    act_key: jax.Array
    meta: dict


def _ocp():
    # Deferred on purpose: orbax takes about 1.5 s to import, and only a run that saves or
    # restores needs it (not `import paac`, nor a command refused at its first check).
    import orbax.checkpoint as ocp

    _ignore_closed_loop_callbacks()
    return ocp


def _closed_loop_callback(unraisable) -> bool:
    """Whether ``unraisable`` is a tensorstore read that outlived orbax's event loop.

    Such a read calls back into the closed loop: raised in asyncio's
    ``call_soon_threadsafe`` called from native code (no Python caller in the traceback),
    unlike any such error of Python code, which its caller would see.
    """
    err = unraisable.exc_value
    if not (isinstance(err, RuntimeError) and str(err) == "Event loop is closed"):
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
    return bool(frames) and all(
        os.path.basename(os.path.dirname(f.filename)) == "asyncio" for f in frames
    )


def _ignore_closed_loop_callbacks() -> None:
    """Drops the "Event loop is closed" errors of reads that outlived orbax's event loop.

    When orbax gives up on a damaged checkpoint, the reads still in flight finish after
    its event loop has closed, and each callback's ``RuntimeError: Event loop is closed``
    (dozens of them) would be printed after paac's one-line error. Those alone are dropped;
    every other unraisable exception goes to the hook that was there before.
    """
    _filter_hook(sys, "unraisablehook", _closed_loop_callback)


def _filter_hook(owner, name: str, drop) -> None:
    """Wraps the hook ``owner.<name>`` (``sys.unraisablehook``, ``threading.excepthook``),
    once per ``drop``, so that the exceptions ``drop(args)`` picks are not printed; every
    other one still reaches the hook that was there before."""
    previous = getattr(owner, name)
    if getattr(previous, "_paac_drop", None) is drop:
        return

    def hook(args):
        if not drop(args):
            previous(args)

    hook._paac_drop = drop
    setattr(owner, name, hook)


@contextlib.contextmanager
def _quiet(level: int = absl_logging.ERROR):
    """Orbax logs routine notes at WARNING through absl; keep them off the console."""
    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(level)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def _manager(directory: str, keep: int | None = None, read_only: bool = False):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        read_only=read_only,
        save_interval_steps=0 if read_only else 1,
    )
    with _quiet():
        return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class Checkpointer:
    """Saves a run's checkpoints under ``<run_dir>/checkpoints``, keeping the last ``keep``."""

    def __init__(self, run_dir: str, keep: int):
        self.directory = os.path.join(run_dir, CHECKPOINT_SUBDIR)
        self._manager = _manager(self.directory, keep=keep)
        self._failed = False
        self._remove_leftovers()  # of a process killed or failed mid-save: the run is ours now

    def save(self, step: int, state, act_key, meta: dict) -> None:
        """Saves ``state``, ``act_key`` and ``meta`` as the checkpoint of ``step``, whole.

        The saved meta also holds the format version and the step. It returns once the
        checkpoint is complete on disk, so that a failed write is met here, at the step it
        belongs to.

        Raises:
          WriteError: the checkpoint could not be written (a full disk, say). Its half-written
            temporary directory is removed; the earlier checkpoints are untouched.
        """
        ocp = _ocp()
        item = {"learner": state, "act_key": act_key}
        meta = {"format_version": FORMAT_VERSION, "step": int(step), **meta}
        # A failed write is told once, by WriteError: orbax's threads would print it too,
        # as absl ERRORs and as their own tracebacks.
        _filter_hook(threading, "excepthook", _thread_write_echo)
        try:
            with _quiet(absl_logging.FATAL):
                self._manager.save(
                    int(step),
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(item), meta=ocp.args.JsonSave(meta)
                    ),
                    force=True,
                )
                self._manager.wait_until_finished()
        except Exception as e:
            error = _write_error(os.path.join(self.directory, str(step)), e)
            if error is None:
                raise
            self._failed = True
            _silence_the_failed_save()
            self._remove_leftovers()
            atexit.register(self._remove_leftovers)  # and what orbax's threads write after
            raise error from None

    def _remove_leftovers(self) -> None:
        """Removes orbax's temporary directories of unfinished saves (never checkpoints)."""
        for leftover in glob.glob(os.path.join(self.directory, f"*{TMP_SUFFIX}*")):
            shutil.rmtree(leftover, ignore_errors=True)

    def wait(self) -> None:
        """Returns once every save started so far is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves in progress, then closes the orbax manager."""
        if self._failed:  # orbax would raise the failed save's error again
            with contextlib.suppress(Exception):
                self._manager.close()
            self._remove_leftovers()  # what its threads wrote after the failure
            return
        self._manager.wait_until_finished()
        self._manager.close()


def _orbax_write_failure(error: BaseException | None) -> bool:
    """Whether ``error`` is one of orbax's echoes of a failed write (or of the shutdown of
    its executors that follows it)."""
    if error is None:
        return False
    text = str(error)
    return (
        _write_error("", error) is not None
        or "RESOURCE_EXHAUSTED" in text
        or "PERMISSION_DENIED" in text
        or "cannot schedule new futures after shutdown" in text
    )


class _AbandonedWriteTasks(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" records of a failed write."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        abandoned = "exception was never retrieved" in str(record.msg)
        return not (abandoned and _orbax_write_failure(error))


def _thread_write_echo(args) -> bool:
    """A thread of orbax's that ended with its echo of a failed write."""
    return _orbax_write_failure(args.exc_value)


def _silence_the_failed_save() -> None:
    """After a failed save, told once by a :class:`WriteError`: orbax's threads and tasks
    still in flight end with the same error, and would print it again and again (absl
    ERRORs, asyncio's never-retrieved tasks) after paac's one line. Those echoes alone are
    dropped, for the rest of the process, which is stopping."""
    absl_logging.set_verbosity(absl_logging.FATAL)
    log = logging.getLogger("asyncio")
    if not any(isinstance(f, _AbandonedWriteTasks) for f in log.filters):
        log.addFilter(_AbandonedWriteTasks())


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _write_error(path: str, error: Exception) -> WriteError | None:
    """The :class:`WriteError` of a failed checkpoint write (an OSError, or orbax's and
    TensorStore's report of one), or None for any other error."""
    if isinstance(error, OSError):
        return WriteError.of(path, error)
    code = _OS_ERROR_CODE.search(str(error))
    if code:
        return WriteError(path, os.strerror(int(code.group(1))))
    return None


def _steps_in(directory: str) -> list[int]:
    """Completed checkpoint steps in an orbax directory (temporary ones are not listed)."""
    if not os.path.isdir(directory):
        return []
    with _quiet():
        return sorted(_manager(directory, read_only=True).all_steps())


def locate(path: str) -> tuple[str, int]:
    """``(checkpoints_dir, step)`` of the checkpoint that ``path`` names.

    ``path`` is a run directory (its latest checkpoint), a ``checkpoints`` directory (its
    latest), or one ``checkpoints/<step>`` directory.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"{path!r}: no such file or directory")
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path!r} is not a directory (give a run or checkpoint directory)")
    # A run directory first: one named like a step (``--run-name 42``) sits in an
    # ``<out>/<env>`` directory that orbax would take for a directory of steps.
    steps = _steps_in(os.path.join(path, CHECKPOINT_SUBDIR))
    if steps:
        return os.path.join(path, CHECKPOINT_SUBDIR), steps[-1]
    name = os.path.basename(path)
    parent = os.path.dirname(path)
    is_run_dir = os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR))
    if name.isdigit() and not is_run_dir and int(name) in _steps_in(parent):
        return parent, int(name)
    steps = [] if is_run_dir else _steps_in(path)
    if steps:
        return path, steps[-1]
    raise CheckpointError(
        f"{path!r} holds no checkpoint (looked in it and in {CHECKPOINT_SUBDIR}/)"
    )


def holds_checkpoint(checkpoints_dir: str) -> bool:
    """Whether a ``checkpoints`` directory holds a completed checkpoint.

    Read from the file system alone: an orbax manager's creation waits for every process
    of a multi-process run, and this is asked by process 0 alone
    (:func:`paac.run.rundir.make_run_dir`).
    """
    if not os.path.isdir(checkpoints_dir):
        return False
    return bool(_ocp().utils.checkpoint_steps(checkpoints_dir))


def latest_step(checkpoints_dir: str) -> int | None:
    """The step of the newest completed checkpoint in ``checkpoints_dir``, or None."""
    steps = _steps_in(checkpoints_dir)
    return steps[-1] if steps else None


def location_of(run_dir: str, env: str) -> dict[str, str]:
    """``out_dir`` and ``run_name`` of the run in ``run_dir``, taken from its real path.

    They are given when it lies at ``<out_dir>/<env>/<run_name>``, as paac makes them;
    ``{}`` when it was moved out of that layout (its config then keeps the names it was
    made with).
    """
    out_dir, name = os.path.split(os.path.realpath(run_dir))
    for part in reversed(env.split("/")):  # an env id may hold a "/" (gfootball/...)
        out_dir, last = os.path.split(out_dir)
        if last != part:
            return {}
    return {"out_dir": out_dir, "run_name": name}


def run_dir_of(checkpoints_dir: str) -> str:
    """The run directory a ``checkpoints`` directory belongs to."""
    return os.path.dirname(os.path.abspath(checkpoints_dir))


def _unreadable(where: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {where!r} is unreadable ({type(err).__name__}: {first_line(err)})"
    )


def read_meta(path: str) -> tuple[dict, str, int]:
    """``(meta, checkpoints_dir, step)`` of the checkpoint at ``path`` (see :func:`locate`)."""
    directory, step = locate(path)
    ocp = _ocp()
    where = os.path.join(directory, str(step))
    try:
        with _quiet():
            restored = _manager(directory, read_only=True).restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        meta = dict(restored["meta"])
    except Exception as e:  # orbax raises many kinds; all mean the same to the user
        raise _unreadable(where, e) from None
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {where!r} has format version {version!r}; this paac reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint {where!r} has no saved config")
    return meta, directory, step


def config_from_meta(meta: dict, where: str = "") -> Config:
    """The :class:`Config` saved in a checkpoint (validated as any config is)."""
    try:
        return Config.from_dict(meta["config"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"checkpoint {where!r} holds an invalid config: {e}") from None


def check_resume_config(saved: Config, given: Config, where: str) -> None:
    """A resumed run must keep the saved run's mathematics; name the first conflict."""
    for field in dataclasses.fields(Config):
        if field.name in RESUME_MUTABLE_FIELDS:
            continue
        old, new = getattr(saved, field.name), getattr(given, field.name)
        if old != new:
            opt = flag(field.name)
            raise CheckpointError(
                f"--resume={where!r} conflicts with {opt}={new!r}: the checkpoint was "
                f"trained with {opt}={old!r} (start a new run to change it)"
            )


def _placed(template, sharding: jax.sharding.Sharding | None = None):
    """Abstract arrays placed with ``sharding`` (default: on this process's first device).

    Without a sharding orbax falls back to the one saved with the checkpoint (e.g.
    ``cuda:0``, or a mesh of other devices), and a checkpoint trained on a GPU would not
    load on a CPU, nor one saved on two devices on one.
    """
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), template
    )


def _saved_learner(where: str):
    """The saved learner state's array metadata (shapes, dtypes), read without restoring."""
    ocp = _ocp()
    try:
        with _quiet():
            metadata = ocp.StandardCheckpointer().metadata(os.path.join(where, "state"))
        tree = getattr(metadata, "item_metadata", metadata)
        if tree is None:  # orbax logs why and returns nothing
            raise ValueError("its arrays' metadata cannot be read (files missing or damaged)")
        learner = tree["learner"]
        learner["params"]  # noqa: B018  (a KeyError here means no parameters were saved)
        return learner
    except Exception as e:
        raise _unreadable(where, e) from None


def restore(
    directory: str, step: int, template, sharding: jax.sharding.Sharding | None = None
) -> Restored:
    """Restores the learner state of a checkpoint into ``template``.

    Every array is placed with ``sharding`` (default: on this process's first device; a
    replicated ``NamedSharding`` for a mesh), whatever devices the checkpoint was saved
    from. A checkpoint saved before ``LearnerState.extra`` or ``LearnerState.norm`` existed
    is restored with ``{}`` for them.

    Args:
      directory: the ``checkpoints`` directory (:func:`locate`, :func:`read_meta`).
      step: the step of the checkpoint in it.
      template: a learner state of the right structure, shapes and dtypes
        (``paac.algorithms.build.state_template``).
      sharding: where to place the arrays; None for this process's first device.

    Returns:
      :class:`Restored`: the learner state, the action-sampling key and the meta. A
      checkpoint whose parameters do not fit ``template``, or that cannot be read, is a
      :class:`CheckpointError`.
    """
    ocp = _ocp()
    where = os.path.join(directory, str(step))
    saved = _saved_learner(where)
    _check_fits(saved["params"], template.params, where)
    # Fields added to LearnerState since a checkpoint was saved (extra, then norm) are
    # restored as {}, told by the saved tree itself, not the version number; a field that
    # the template needs filled is then a mismatch of runs.
    fields = type(template)._fields
    missing = [f for f in fields if f not in saved]
    for field in missing:
        if jax.tree.leaves(getattr(template, field)):
            raise CheckpointError(
                f"checkpoint {where!r} does not fit this run: it holds no {field!r} state "
                "(it was saved by a run without it)"
            )
    if "norm" in saved:
        _check_norm(saved["norm"], template.norm, where)
    learner_template = {f: getattr(template, f) for f in fields if f in saved}
    target = _placed(
        {"learner": learner_template, "act_key": jax.ShapeDtypeStruct((2,), np.uint32)},
        sharding,
    )
    try:
        with _quiet():
            restored = _manager(directory, read_only=True).restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                ),
            )
    except Exception as e:
        raise _unreadable(where, e) from None
    item = restored["state"]
    learner = type(template)(**{f: {} for f in missing}, **item["learner"])
    return Restored(learner, item["act_key"], dict(restored["meta"]))


def _check_norm(saved, template, where: str) -> None:
    """The normalisation statistics saved must be those the run keeps (names both)."""

    def names(norm) -> str:
        kept = [k for k in ("obs", "reward") if k in norm]
        return " and ".join(kept) if kept else "none"

    if set(saved) != set(template):
        raise CheckpointError(
            f"checkpoint {where!r} does not fit this run: it holds normalisation statistics "
            f"of {names(saved)}, and this run normalises {names(template)} "
            "(--normalize-obs, --normalize-reward)"
        )


def _action_kind(shapes: dict) -> str:
    """``continuous`` for parameters with a Gaussian policy's ``mean`` head, else
    ``discrete`` (paac.nets.networks names the heads so)."""
    return "continuous" if any("['mean']" in path for path in shapes) else "discrete"


def _check_fits(tree, template, where: str) -> None:
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    want = jax.tree_util.tree_flatten_with_path(template)[0]
    got_shapes = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in got}
    want_shapes = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in want}
    saved_kind, run_kind = _action_kind(got_shapes), _action_kind(want_shapes)
    if saved_kind != run_kind:
        raise CheckpointError(
            f"checkpoint {where!r} does not fit this run: it holds a policy of {saved_kind} "
            f"actions, and this run's environment has {run_kind} ones"
        )
    if got_shapes != want_shapes:
        diff = sorted(set(got_shapes.items()) ^ set(want_shapes.items()))[:2]
        raise CheckpointError(
            f"checkpoint {where!r} does not fit this network: its arrays differ from the "
            f"architecture's (first differences: {diff})"
        )
