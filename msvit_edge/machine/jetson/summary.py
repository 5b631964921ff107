"""The samples of a timed run as a ``PowerSummary``: power, energy per inference, peak temperatures, warnings."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine.jetson.board import JetsonInfo
from msvit_edge.machine.jetson.tegrastats import total_rails

Sample = tuple[float, dict[str, float]]  # (time.monotonic() s, {name: value}); mW for rails, degrees C for temps

FEW_SAMPLES = 5  # below this many samples in the timed window, the average is called rough
NOT_MEASURED = {"PMIC"}  # tegrastats prints a fixed PMIC@100C (Nano, TX2, Xavier): a limit, not a reading


@dataclass(frozen=True)
class PowerSummary:
    """Power during a timed run. Energy is mW x s = mJ per inference; "above idle" subtracts the idle power."""

    source: str  # "jtop", "tegrastats" or "hwmon"
    total_rail: str  # "VDD_IN", or the summed rails joined by "+"
    avg_mw: float  # mean total power over the timed window
    rails_avg_mw: dict[str, float]
    idle_mw: float | None  # mean total power over the idle window before the run
    duration_s: float
    inferences: int
    energy_mj: float  # avg_mw * duration_s / inferences
    energy_above_idle_mj: float | None  # (avg_mw - idle_mw) * duration_s / inferences
    samples: int
    idle_samples: int
    max_temperatures: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self) | {"warnings": list(self.warnings)}


def _in(samples: Sequence[Sample], window: tuple[float, float]) -> list[dict[str, float]]:
    return [values for t, values in samples if window[0] <= t <= window[1]]


def _mean_total(rows: Sequence[Mapping[str, float]], rails: Sequence[str]) -> float:
    return sum(sum(row[r] for r in rails) for row in rows) / len(rows)


def summarize(
    samples: Sequence[Sample],
    window: tuple[float, float],
    inferences: int,
    idle_window: tuple[float, float] | None = None,
    temperatures: Sequence[Sample] = (),
    source: str = "",
    jetson: JetsonInfo | None = None,
    trips: Mapping[str, float] | None = None,
    alarms: Sequence[str] = (),
) -> PowerSummary:
    """Average power, energy per inference and warnings for the timed run ``window`` (monotonic seconds).

    Args:
        samples: ``(t, {rail: mW})`` from a ``PowerSampler``.
        window: Start and end of the timed run.
        inferences: Inferences completed in the window (images, not batches, for energy per image).
        idle_window: A window before the run with the model loaded and idle.
        temperatures: ``(t, {sensor: C})``; their peak over the run is reported.
        source: Where the samples came from.
        jetson: Adds warnings for jetson_clocks off or unknown and a power mode below the maximum.
        trips: Passive trip points by sensor (``passive_trips()``); a peak at or above one is reported as
            thermal throttling.
        alarms: Over-current alarms latched during the run (``PowerSampler.alarms()``).
    """
    run, duration = _in(samples, window), window[1] - window[0]
    if inferences <= 0 or duration <= 0:
        raise MsvitEdgeError(f"cannot summarise power over {inferences} inferences in {duration:.3f} s")
    if not run:
        raise MsvitEdgeError(
            f"no power samples in the {duration:.2f} s timed run ({len(samples)} in all): run longer or sample faster"
        )
    common = sorted(set.intersection(*(set(row) for row in run)))  # rails present in every sample
    rails = total_rails(common)
    idle = _in(samples, idle_window) if idle_window else []
    avg, idle_mw = _mean_total(run, rails), (_mean_total(idle, rails) if idle else None)
    peaks = _peaks(_in(temperatures, window))
    return PowerSummary(
        source=source,
        total_rail="+".join(rails),
        avg_mw=avg,
        rails_avg_mw={r: _mean_total(run, [r]) for r in common},
        idle_mw=idle_mw,
        duration_s=duration,
        inferences=inferences,
        energy_mj=avg * duration / inferences,
        energy_above_idle_mj=None if idle_mw is None else (avg - idle_mw) * duration / inferences,
        samples=len(run),
        idle_samples=len(idle),
        max_temperatures=peaks,
        warnings=tuple(_warnings(rails, len(run), peaks, jetson, trips or {}, alarms)),
    )


def _peaks(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for row in rows:
        for name, value in row.items():
            if name not in NOT_MEASURED:
                peaks[name] = max(peaks.get(name, -math.inf), value)
    return peaks


def _warnings(
    rails: tuple[str, ...],
    n: int,
    peaks: Mapping[str, float],
    jetson: JetsonInfo | None,
    trips: Mapping[str, float],
    alarms: Sequence[str],
) -> list[str]:
    out = []
    if len(rails) > 1:
        out.append(f"no input rail on this board: total = {' + '.join(rails)} (module rails; carrier not measured)")
    if n < FEW_SAMPLES:
        out.append(f"only {n} power samples in the timed run: the average is rough (run longer)")
    hot = [f"{s} reached {t:g} C (trip {trip:g})" for s, t in peaks.items() if t >= (trip := trips.get(s.lower(), 1e9))]
    if hot:
        out.append("thermal throttling: " + ", ".join(hot))
    if alarms:
        out.append("over-current throttling: alarm on " + ", ".join(alarms))
    if jetson is not None:
        out += _setup_warnings(jetson)
    return out


def _setup_warnings(jetson: JetsonInfo) -> list[str]:
    out = []
    if jetson.clocks == "off":
        out.append("jetson_clocks is off: clocks follow the load, so runs vary (sudo jetson_clocks)")
    elif jetson.clocks == "unknown":
        out.append("jetson_clocks state unknown (run as root to read it): results may not be comparable")
    if jetson.power_mode_is_max is False:
        out.append(f"power mode {jetson.power_mode} is not the maximum ({jetson.max_power_mode}): not comparable")
    elif jetson.power_mode is None:
        out.append("power mode unknown (`nvpmodel -q` failed): results may not be comparable")
    return out
