"""Process concerns: exit, SIGTERM and fork, each handled once per process.

Kept apart from provider assembly so the rules are in one place:

- exit: flush (bounded), once;
- SIGTERM: the handler only starts a flush thread and returns, because it runs between two
  bytecodes of whatever the main thread was doing, possibly inside a lock the flush needs
  (the SDK's exemplar or aggregation locks): flushing in the handler deadlocked until the
  timeout and delivered nothing. The thread flushes (bounded), then the process dies of
  SIGTERM as it would have without us. A second SIGTERM kills at once. An application with
  a SIGTERM handler of its own is left alone (it calls ``shutdown()`` itself);
- fork: the child must not export the parent's data again, nor wait on threads or locks
  that did not survive the fork; it gets a set-up of its own (see ``lifecycle``).
"""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

_sigterm_installed = False
_atexit_installed = False
_fork_installed = False
_sigterm_flushing = False
_sigterm_done = threading.Event()


def on_exit(stop: Callable[[], None], wait_s: Callable[[], float] = lambda: 5.0) -> None:
    """Run ``stop`` at interpreter exit (once, however often this is called).

    If a SIGTERM flush is under way when the main thread ends, exit waits for it (up to
    ``wait_s()`` seconds) instead of cutting it short.
    """
    global _atexit_installed
    if _atexit_installed:
        return
    _atexit_installed = True

    def _at_exit() -> None:
        if _sigterm_flushing:
            _sigterm_done.wait(wait_s())
        stop()

    atexit.register(_at_exit)


def on_sigterm(stop: Callable[[], None]) -> None:
    """On SIGTERM, run ``stop`` in a thread of its own, then die as SIGTERM would.

    Does nothing when the application has a SIGTERM handler of its own, or off the main thread.
    """
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the application handles SIGTERM; it should call shutdown() itself

    def _on_sigterm(signum: int, _frame: Any) -> None:
        # No locks here: the interrupted code may hold any of them. A second SIGTERM kills at once.
        global _sigterm_flushing
        signal.signal(signum, signal.SIG_DFL)
        if _sigterm_flushing:
            return
        _sigterm_flushing = True
        # _thread, not threading.Thread: Thread.start() takes threading's module lock, which
        # the interrupted main thread may be holding.
        _thread.start_new_thread(_flush_then_die, (stop, signum))

    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def _flush_then_die(stop: Callable[[], None], signum: int) -> None:
    try:
        stop()
    except BaseException:  # never keep the process alive because the flush failed
        pass
    finally:
        try:
            os.kill(os.getpid(), signum)  # the disposition is SIG_DFL again: the process ends
        finally:
            _sigterm_done.set()  # (only if it did not: an exit waiting for us goes on)


def on_fork(before: Callable[[], None], after_in_child: Callable[[], None]) -> None:
    """Register the fork hooks once. Registered at import, so they run before the SDK's own
    after-fork hooks of any provider built later (after-fork hooks run in registration order)."""
    global _fork_installed
    if _fork_installed or not hasattr(os, "register_at_fork"):
        return
    _fork_installed = True

    def _child() -> None:
        global _sigterm_flushing, _sigterm_done
        _sigterm_flushing = False  # a flush of the parent's is not this process's
        _sigterm_done = threading.Event()
        after_in_child()

    os.register_at_fork(before=before, after_in_child=_child)


def run_at_multiprocessing_exit(stop: Callable[[], None]) -> None:
    """A ``multiprocessing`` fork child ends with ``os._exit()``, which skips atexit; its own
    finalizers still run, so flush there too (a no-op when the child is not one)."""
    import sys

    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, stop, exitpriority=0)
