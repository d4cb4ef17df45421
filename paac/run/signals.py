"""SIGINT and SIGTERM: a run stops cleanly, never in the middle of XLA's work.

An exception raised from a signal handler lands wherever Python happens to be: inside a
JAX compilation (the process then crashed at exit with XLA's threads still at work), or
inside a garbage-collection callback, where Python drops it and the run went on as if no
signal had come. So while a run is set up and trained the handlers only record the
signal, and the code acts on it at points where stopping is safe.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(BaseException):
    """SIGTERM before training began.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    swallows it.
    """


_pending: int | None = None  # a signal whose exception may have been dropped


def note(signum: int) -> None:
    """Records ``signum`` for the next :class:`StopSignals` (see :func:`raise_for`)."""
    global _pending
    if _pending is None:
        _pending = signum


def raise_for(signum: int) -> None:
    """Records ``signum`` and raises KeyboardInterrupt (SIGINT) or :class:`Terminated`.

    A signal handler for code that may be stopped anywhere (imports, parsing). Should the
    exception be dropped, the next :class:`StopSignals` still sees the signal.
    """
    note(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


@contextlib.contextmanager
def raising():
    """In the block SIGINT and SIGTERM raise (:func:`raise_for`).

    For a command line's own start-up, until training installs :class:`StopSignals`.
    Main thread only.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: raise_for(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def caught(e: BaseException) -> int:
    """The signal behind a KeyboardInterrupt or :class:`Terminated` being handled.

    The signal is then no longer pending.
    """
    take_pending()
    return signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT


def take_pending() -> int | None:
    """The recorded signal, forgotten (call it where the exception was handled)."""
    global _pending
    signum, _pending = _pending, None
    return signum


class StopSignals:
    """SIGINT and SIGTERM, recorded in ``signum``.

    While the run is set up (until :meth:`started`), :meth:`check_startup` raises for a
    recorded signal at the points where stopping is safe. Afterwards the training loop
    reads ``signum`` and stops after the current update (and checkpoints); a second SIGINT
    then interrupts at once. Handlers are installed only in the main thread.
    """

    def __enter__(self) -> StopSignals:
        self.signum: int | None = take_pending()
        self._starting = True
        self._shielded = self._forced = False
        self._previous: dict = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        second_ctrl_c = self.signum is not None and signum == signal.SIGINT
        if self._shielded:
            self.signum = self.signum if self.signum is not None else signum
            self._forced = self._forced or second_ctrl_c
            return
        if second_ctrl_c and not self._starting:  # in start-up the next check stops anyway
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    def check_startup(self) -> None:
        """Before training: raises KeyboardInterrupt or :class:`Terminated` if a signal came."""
        if self._starting and self.signum is not None:
            raise KeyboardInterrupt if self.signum == signal.SIGINT else Terminated

    def started(self) -> None:
        """Training begins: from now on a signal stops the loop after its update."""
        self._starting = False

    def shield(self) -> None:
        """From now on signals are only recorded: the shutdown (final save) runs to its end."""
        self._shielded = True

    @contextlib.contextmanager
    def deferred(self):
        """Signals in the block are only recorded, so that a checkpoint being saved is finished.

        A second Ctrl-C among them interrupts right after the block.
        """
        self._shielded, self._forced = True, False
        try:
            yield
        finally:
            self._shielded = False
        if self._forced:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
