"""Process concerns: exit, SIGTERM and fork, each handled once per process.

Kept apart from provider assembly so the rules are in one place: flush at exit; on SIGTERM
flush the last interval, then die as SIGTERM would (unless the application handles SIGTERM
itself).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

_sigterm_installed = False
_atexit_installed = False


def on_exit(stop: Callable[[], None]) -> None:
    """Run ``stop`` at interpreter exit (once, however often this is called)."""
    global _atexit_installed
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(stop)


def on_sigterm(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM, then die as SIGTERM would, unless the app has a handler of its own."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the application handles SIGTERM; it should call shutdown() itself

    def _on_sigterm(signum: int, _frame: Any) -> None:
        stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True
