"""The jtop and tegrastats samplers, and ``open_power_sampler()``, which picks the best source that works."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine.jetson.hwmon import HWMON_DEVICES, HwmonSampler
from msvit_edge.machine.jetson.sampler import PowerSampler
from msvit_edge.machine.jetson.summary import PowerSummary
from msvit_edge.machine.jetson.tegrastats import OFF, parse_tegrastats

Log = Callable[[str], None]


class JtopSampler(PowerSampler):
    """Power and temperatures from the jetson-stats service (``jtop``), at its own update interval.

    Args:
        interval_ms: Requested update interval.
        client: Makes the jtop client from an interval in seconds; by default ``jtop.jtop``, imported here so
            that nothing needs jetson-stats until this sampler is used.
    """

    source = "jtop"

    def __init__(self, interval_ms: int = 100, client: Callable[[float], object] | None = None):
        super().__init__(interval_ms)
        self._client_factory = client
        self._jetson = None

    def start(self) -> None:
        factory = self._client_factory
        if factory is None:
            from jtop import jtop as factory  # jetson-stats; lazy: only Jetsons with its service have it
        self._jetson = factory(self.interval_ms / 1000)
        self._jetson.start()
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._jetson is not None:
            self._jetson.close()

    def _loop(self) -> None:
        while not self._stop.is_set() and self._jetson.ok():  # ok() waits for the service's next update
            rails = self._jetson.power.get("rail", {})
            temps = self._jetson.temperature
            self._add(
                {n: float(r["power"]) for n, r in rails.items() if r.get("online", True) and "power" in r},
                {n: float(t["temp"]) for n, t in temps.items() if t.get("online", True) and t.get("temp", OFF) > OFF},
            )


class TegrastatsSampler(PowerSampler):
    """Power and temperatures from ``tegrastats --interval MS``, read line by line from its stdout.

    Args:
        interval_ms: tegrastats' interval.
        executable: The program to run (``tegrastats`` on PATH by default).
    """

    source = "tegrastats"

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats"):
        super().__init__(interval_ms)
        self.executable = executable
        self.lines_without_rails = 0
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [self.executable, "--interval", str(self.interval_ms)]
        if shutil.which("stdbuf"):
            # stdout is a pipe here, which C stdio block-buffers: line buffering makes each sample arrive, and be
            # timestamped, when tegrastats prints it rather than when a buffer fills
            cmd = ["stdbuf", "-oL", *cmd]
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, bufsize=1
            )
        except OSError as e:
            raise MsvitEdgeError(f"cannot run {' '.join(cmd)}: {e}") from e
        super().start()

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        super().stop()  # the reader sees EOF once the process is gone
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    def _loop(self) -> None:
        for line in self._proc.stdout:
            sample = parse_tegrastats(line)
            self.lines_without_rails += not sample.rails
            self._add({n: cur for n, (cur, _avg) in sample.rails.items()}, sample.temperatures)

    def summary(self, *args, **kwargs) -> PowerSummary:
        if not self.samples and self.lines_without_rails:
            raise MsvitEdgeError(
                f"tegrastats printed {self.lines_without_rails} lines without power rails (some boards show them to "
                "root only): run as root or start the jtop service"
            )
        return super().summary(*args, **kwargs)


def open_power_sampler(interval_ms: int = 100, log: Log | None = None, root: Path = Path("/")) -> PowerSampler:
    """The best power source on this Jetson: jtop when its service runs, else tegrastats, else hwmon sysfs.

    Args:
        interval_ms: Sampling interval (jtop and tegrastats may be slower than asked).
        log: Told which source was picked and why the better ones were not.
        root: Filesystem root for the jtop socket and sysfs.
    """
    say = log or (lambda _msg: None)
    if importlib.util.find_spec("jtop") is None:
        say("power: not using jtop (jetson-stats is not installed in this Python)")
    elif not (root / "run/jtop.sock").exists():
        say("power: not using jtop (its service is not running: no /run/jtop.sock)")
    else:
        say("power: jtop (jetson-stats service)")
        return JtopSampler(interval_ms)
    if shutil.which("tegrastats"):
        say(f"power: tegrastats --interval {interval_ms}")
        return TegrastatsSampler(interval_ms)
    say("power: not using tegrastats (not on PATH)")
    sampler = HwmonSampler(interval_ms, root)
    if not sampler.channels:
        raise MsvitEdgeError(
            f"no power source: no jtop service, no tegrastats on PATH, no INA3221/INA238 under /{HWMON_DEVICES}"
        )
    say(f"power: hwmon sysfs ({', '.join(ch.name for ch in sampler.channels)})")
    return sampler
