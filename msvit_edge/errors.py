"""The one exception type that the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class MsvitEdgeError(Exception):
    """A problem with the user's input or environment, worded for the user.

    Args:
        message: What is wrong, in one line.
        path: The file or folder it concerns, put in front of the message.
    """

    exit_code = 1  # the work failed

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class UsageError(MsvitEdgeError):
    """Options that cannot work together or values out of range: nothing was attempted."""

    exit_code = 2  # as for the command line's own usage errors


def require(checks: dict[str, bool], prefix: str = "") -> None:
    """Raise ``UsageError`` with the first message whose condition is false (option validation)."""
    for message, ok in checks.items():
        if not ok:
            raise UsageError(prefix + message)


def first_line(e: BaseException) -> str:
    """``Type: first line of the message``: how a report or a one-line error names an exception it caught."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
