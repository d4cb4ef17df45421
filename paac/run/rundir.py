"""A run's directory: created for a new run, checked writable, and locked while trained."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time

from paac.core.config import Config, ConfigError, flag
from paac.run.checkpoints import CHECKPOINT_SUBDIR, holds_checkpoint


def make_run_dir(config: Config) -> str:
    """Creates the directory of a new run, ``<out_dir>/<env>/<run_name>``, and returns it.

    A clear ConfigError if it cannot be created, or if it already holds a run (which only
    ``--resume`` may continue). Without ``run_name`` the name is
    ``<arch>-s<seed>-<date-time>``, with ``-2``, ``-3``, ... appended while that is taken.
    """
    base = config.run_name or f"{config.arch}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(config.out_dir, config.env, base)
    suffix = 1
    while _holds_run(run_dir):
        if config.run_name is not None:
            if holds_checkpoint(os.path.join(run_dir, CHECKPOINT_SUBDIR)):
                how = f"continue it with --resume {run_dir}"
            else:
                how = "it saved no checkpoint to resume: delete it"
            raise ConfigError(
                f"--run-name={config.run_name!r} is invalid: {run_dir!r} already holds a run; "
                f"{how}, or choose another --run-name"
            )
        suffix += 1  # two automatic names in the same second
        run_dir = os.path.join(config.out_dir, config.env, f"{base}-{suffix}")
    check_writable(run_dir, "out_dir", config.out_dir)
    return run_dir


def _holds_run(run_dir: str) -> bool:
    return any(
        os.path.exists(os.path.join(run_dir, name)) for name in ("metrics.csv", "checkpoints")
    )


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` while a process trains the run.

    The file holds the pid of the process training the run.

    A second process (say, ``--resume`` on a run still going) is refused. The kernel drops
    the lock when its holder ends, however it ends, so a lock left by a killed process is
    no lock: there is no stale file to judge and take over, and two processes starting at
    once cannot both win.
    """

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, ".lock")
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                by = f"process {owner}" if owner else "another process"
                raise ConfigError(
                    f"{os.path.dirname(self.path)!r} is being trained by {by}; "
                    "wait for it or stop it first"
                ) from None
            except OSError as e:  # a file system without locks: train unlocked
                os.close(fd)
                print(
                    f"paac: warning: cannot lock {self.path!r} ({e.strerror}); training unlocked",
                    file=sys.stderr,
                )
                return self
            try:  # the file we locked is still the lock (its holder may have removed it)
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:  # a full disk, say: let go of the lock, or a retry here is refused
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        # While still locked, so that a waiter then sees it is gone; and only our own file
        # (someone may have deleted it by hand, and another process made and locked a new one).
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.remove(self.path)
        os.close(self._fd)  # releases the lock
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def check_writable(run_dir: str, field: str, value: str) -> None:
    """Creates ``run_dir`` if needed and checks that it can be written.

    A ConfigError naming ``field`` (given as ``value``) if it cannot be created or written.
    """
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(
            f"{flag(field)}={value!r} is invalid: cannot write {run_dir!r} ({e.strerror})"
        ) from None
