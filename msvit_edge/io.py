"""Atomic outputs: a result appears whole under its final name, or not at all, and never after a stop signal."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError

# Stop signals this process received, oldest first. Process-wide state by nature: a signal is sent to the process.
_received: list[int] = []


class Terminated(BaseException):
    """A stop signal arrived. A ``BaseException``, like ``KeyboardInterrupt``, so that ``except Exception`` lets it
    through and ``finally`` blocks (atomic outputs' clean-up) run as it unwinds."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def stop_on(*signums: int) -> None:
    """Make these signals (SIGTERM: a scheduler's stop, ``kill``) unwind the main thread as Ctrl-C does.

    Raising from a signal handler is not enough on its own: the exception appears inside whatever code runs at that
    moment, and some of it loses it. torch.export imports modules lazily inside ``try``/``except SomeError`` blocks:
    a stop during such an import makes evaluating the ``except`` clause raise an AttributeError (the module is half
    imported), which replaces the stop, and torch.onnx's ``except Exception`` then swallows that and tries its next
    strategy; ``__del__`` methods and weakref callbacks drop exceptions too. So the signal is also recorded: atomic
    outputs refuse to appear once one has arrived, and ``stopped`` tells the entry point to exit with 128 + signum.
    """
    for signum in signums:
        signal.signal(signum, _on_stop)
    default_hook = sys.unraisablehook

    def hook(unraisable) -> None:  # a stop dropped in a __del__: recorded already, no traceback to print
        if not isinstance(unraisable.exc_value, Terminated):
            default_hook(unraisable)

    sys.unraisablehook = hook


def _on_stop(signum: int, frame) -> None:
    _received.append(signum)
    raise Terminated(signum)


def stopped() -> int | None:
    """The first stop signal this process received (see ``stop_on``), or None."""
    return _received[0] if _received else None


def raise_if_stopped() -> None:
    """Raise ``Terminated`` if a stop signal arrived, even if the exception its handler raised was lost."""
    if _received:
        raise Terminated(_received[0])


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        raise_if_stopped()
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are ordinary files
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder this project writes, recognised by its contents: ``--force`` replaces only one of these.

    Args:
        name: What it is, for messages ("an engine folder").
        marker: The JSON file every such folder holds.
        test: Whether the marker's (parsed) content is this kind's.
        entries: Glob patterns of every top-level name this kind writes; anything else in the folder is the user's.
    """

    name: str
    marker: str
    test: Callable[[dict], bool]
    entries: tuple[str, ...]

    def foreign(self, path: Path) -> list[str]:
        """The names in folder ``path`` this kind does not write (all of them when its marker is not this kind's)."""
        names = sorted(p.name for p in path.iterdir())
        try:
            marker = json.loads((path / self.marker).read_text())
        except (OSError, ValueError):
            marker = None
        if not (isinstance(marker, dict) and self.test(marker)):
            return names
        return [n for n in names if not any(fnmatch.fnmatch(n, pattern) for pattern in self.entries)]


@contextmanager
def atomic_dir(path: str | Path, kind: FolderKind, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` that becomes ``path`` only if the block succeeds.

    Args:
        path: The output folder.
        kind: What the folder will be; an existing one is replaced only if it is one (see ``check_output``).
        force: Replace an existing ``path`` of this kind (only once the new one is complete); otherwise refuse up front.
    """
    path = check_output(path, kind, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = path.parent / f".{path.name}.old"
    try:
        yield tmp
        raise_if_stopped()
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if path.exists():
            os.replace(path, old)  # set aside, not deleted, until the new folder is in place
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_output(path: str | Path, kind: FolderKind, force: bool) -> Path:
    """Refuse an output folder that could not be written: called up front, before any long work.

    A missing or empty folder is fine. A non-empty one is replaced with ``force`` when it is ``kind`` and holds
    nothing else; anything else (a user's folder, another kind of result, a result with the user's files added)
    is refused, ``force`` or not. A file is always refused; so is a path whose nearest existing ancestor is a file or
    is read-only.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MsvitEdgeError("output path exists and is not a folder", path)
    if path.is_dir() and any(path.iterdir()):
        foreign = kind.foreign(path)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise MsvitEdgeError(
                f"is not {kind.name} that msvit-edge wrote (it holds {shown}): not replaced, --force or not; "
                "choose another output folder",
                path,
            )
        if not force:
            raise MsvitEdgeError(f"output folder exists and holds {kind.name} (pass --force to replace it)", path)
    _check_writable(path.absolute().parent, path)
    return path


def check_run_folder(path: str | Path) -> Path:
    """Refuse a folder that results could not be written into, up front, before any long work. Unlike
    ``check_output``'s, it may exist: training writes into its run folder as it goes, and resumes in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MsvitEdgeError("output path exists and is not a folder", path)
    _check_writable(path.absolute(), path)
    return path


def _check_writable(start: Path, path: Path) -> None:
    """``start``, or its nearest existing ancestor, must be a folder this process can write into."""
    ancestor = start
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MsvitEdgeError(f"cannot create the output folder {path}: this is a file, not a folder", ancestor)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise MsvitEdgeError(f"cannot write the output folder {path}: no write permission", ancestor)


def write_json(path: str | Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks; hashed once per process while the file is unchanged (bundles
    and engine folders are opened again and again, and check their files each time)."""
    stat = Path(path).stat()
    return _sha256(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class JsonFile:
    """A JSON document as read from one file: what it holds, and the sha256 of the very bytes it was parsed from (a
    manifest's identity without reading it a second time)."""

    path: Path
    content: object
    sha256: str


def load_json(file: Path, missing: str) -> JsonFile:
    """The JSON document in ``file``, read once; ``missing`` is the one-line error when there is no such file."""
    if not file.is_file():
        raise MsvitEdgeError(missing, file.parent)
    data = file.read_bytes()
    try:
        return JsonFile(file, json.loads(data), hashlib.sha256(data).hexdigest())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MsvitEdgeError(f"manifest is not valid JSON ({e})", file) from None
