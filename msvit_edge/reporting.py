"""Progress lines: the standard library's ``logging`` under the ``msvit_edge`` logger, quiet unless asked.

Every module logs to ``logging.getLogger(__name__)``; the package logger holds only a ``NullHandler``, so a Python
user's call prints nothing until they configure logging (or call ``show``). The command line calls ``show``: INFO
lines go to stdout as they are, warnings to stderr as one ``warning: ...`` line. Problems a caller can fix are
``warnings.warn``-ed instead (the Python convention), and errors are raised, never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

ROOT = "msvit_edge"  # its NullHandler is installed by the package's __init__


class _Console(logging.Handler):
    """One line per record: INFO and below to stdout, warnings and above to stderr with their level."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            print(f"{record.levelname.lower()}: {message}", file=sys.stderr, flush=True)
        else:
            print(message, file=sys.stdout, flush=True)


def show(level: int = logging.INFO) -> logging.Handler:
    """Print the package's lines on the console from now on (what the CLI does); returns the handler."""
    logger = logging.getLogger(ROOT)
    handler = next((h for h in logger.handlers if isinstance(h, _Console)), None) or _Console()
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


@contextmanager
def quiet() -> Iterator[None]:
    """Only warnings and errors from the package inside the block (the demo prints one line per stage instead)."""
    logger = logging.getLogger(ROOT)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
