"""Probes that fail politely: a command run without a shell, a small file that may be missing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

Run = Callable[[Sequence[str]], tuple[int, str]]

NOT_FOUND = 127  # the shell's status for "no such command"


def run_command(cmd: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
    """Run a command without a shell: (exit status, stdout + stderr); 127 when it is not on PATH."""
    exe = shutil.which(cmd[0])
    if exe is None:
        return NOT_FOUND, f"{cmd[0]}: not found on PATH"
    try:
        done = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]}: no answer within {timeout:g} s"
    except OSError as e:
        return 126, f"{cmd[0]}: {e}"
    return done.returncode, done.stdout + done.stderr


def read_text(path: Path) -> str | None:
    """A small file's text (sysfs, device tree: NULs become newlines), stripped; None when it cannot be read."""
    try:
        return path.read_text(errors="replace").replace("\x00", "\n").strip()
    except OSError:
        return None


def first_line(text: str) -> str:
    """The first non-blank line of a command's output, for a one-line note ("nothing" when there is none)."""
    return next((s.strip() for s in text.splitlines() if s.strip()), "nothing")
