"""Keeping converters' and runtimes' C++ log lines out of the user's terminal."""

from __future__ import annotations

import contextlib
import os
import sys
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
