"""The power-sampler interface: a context manager that samples in a thread, and its polling variant."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping

from msvit_edge.machine.jetson.board import JetsonInfo
from msvit_edge.machine.jetson.summary import PowerSummary, Sample, summarize


class PowerSampler(ABC):
    """Samples rail power (and temperatures where the source has them) from ``__enter__`` to ``__exit__``.

    ``samples`` and ``temperatures`` are lists of ``(time.monotonic(), {name: value})``, appended from a
    background thread; read them after the ``with`` block or through ``summary()``.
    """

    source = "none"

    def __init__(self, interval_ms: int = 100):
        self.interval_ms = interval_ms
        self.samples: list[Sample] = []
        self.temperatures: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()

    def __enter__(self) -> PowerSampler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"{self.source}-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 3 * self.interval_ms / 1000))

    @abstractmethod
    def _loop(self) -> None:
        """Sample until ``self._stop`` is set, handing each reading to ``_add``."""

    def _add(self, rails: dict[str, float], temps: Mapping[str, float] = ()) -> None:
        if not rails:
            return
        t = time.monotonic()
        with self._cond:
            self.samples.append((t, rails))
            if temps:
                self.temperatures.append((t, dict(temps)))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until ``count`` power samples exist or ``timeout`` seconds pass; whether they do."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.samples) >= count, timeout)

    def alarms(self) -> list[str]:
        """Over-current alarms the source latched during sampling (only the INA3221 hwmon files have them)."""
        return []

    def summary(
        self,
        window: tuple[float, float],
        inferences: int,
        idle_window: tuple[float, float] | None = None,
        jetson: JetsonInfo | None = None,
        trips: Mapping[str, float] | None = None,
    ) -> PowerSummary:
        """``summarize()`` this sampler's samples; see there."""
        return summarize(
            self.samples, window, inferences, idle_window, self.temperatures, self.source, jetson, trips, self.alarms()
        )


class PollingSampler(PowerSampler):
    """Reads a source every ``interval_ms`` in a thread: ``_poll()`` returns (rails mW, temperatures C)."""

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._add(*self._poll())
            self._stop.wait(self.interval_ms / 1000)

    @abstractmethod
    def _poll(self) -> tuple[dict[str, float], dict[str, float]]:
        """One reading: rails in mW, temperatures in C."""
