"""What more than one command shares: options (train and eval) and parsing of comma-separated lists."""

from __future__ import annotations

import typer

from msvit_edge.errors import UsageError

DATA = typer.Option(
    "fashion-mnist-scenes",
    help="fashion-mnist-scenes, an IDX folder, an ImageFolder or .npz; segmentation: images/ + masks/ folders.",
)
SKIP_CORRUPT = typer.Option(False, "--skip-corrupt", help="Report and skip unreadable images and non-image files.")


def numbers(text: str, kind: type, option: str) -> tuple:
    """``"1,32"`` as ``(1, 32)``; a usage error (exit 2) naming ``option`` for anything else."""
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None
