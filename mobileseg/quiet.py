"""Taming third-party converters: their C++ log lines kept out of the user's terminal, and Ctrl-C kept
from being swallowed or turned into a kill while they run."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def captured_output(log_path: str | Path) -> Iterator[None]:
    """Send this process's stdout/stderr (Python and C++ alike) to ``log_path`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log, open(log_path, "a") as text:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:  # Python-level streams too: a host (pytest, a notebook) may have replaced sys.stdout
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C while third-party conversion code runs, and raise it (`KeyboardInterrupt`) when that code
    returns. onnx2tf catches every exception around its onnxsim calls, so a Ctrl-C there was swallowed and
    the export went on to exit 0; the TFLite converter's LLVM signal handlers killed the process outright,
    leaving its staging folder. Inside, SIGINT is blocked on this thread and only recorded elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def record(_signum, _frame):
        received.append(True)

    previous = signal.signal(signal.SIGINT, record)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, record)  # a C library may have replaced the process's handler meanwhile
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a held Ctrl-C is recorded now
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt
