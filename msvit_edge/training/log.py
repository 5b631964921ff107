"""What rank 0 shows and records while training: ``OUT/train.jsonl`` lines and a progress bar per epoch."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RunLog:
    """Rank-0 JSON-lines log and console lines; ``show``: whether progress bars are drawn."""

    def __init__(self, path: Path, active: bool, progress: bool):
        self.path, self.active, self.show = path, active, progress and active
        self.t0 = time.time()

    def write(self, record: dict) -> None:
        if self.active:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"time": round(time.time() - self.t0, 2), **record}) + "\n")

    def say(self, text: str) -> None:
        if self.active:
            print(text, flush=True)


class StepProgress:
    """A rich progress bar showing moving averages of the step statistics; silent when ``show`` is false."""

    def __init__(self, title: str, total: int, show: bool):
        self.title, self.total, self.show = title, total, show
        self.ema: dict[str, float] = {}

    def __enter__(self) -> StepProgress:
        if self.show:
            columns = (
                TextColumn(self.title),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
            )
            self.bar = Progress(*columns).__enter__()
            self.task = self.bar.add_task(self.title, total=self.total, stats="")
        return self

    def __exit__(self, *exc) -> None:
        if self.show:
            self.bar.__exit__(*exc)

    def advance(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self.ema[k] = v if k not in self.ema else 0.9 * self.ema[k] + 0.1 * v
        if self.show:
            self.bar.update(self.task, advance=1, stats=" ".join(f"{k} {v:.3g}" for k, v in self.ema.items()))
