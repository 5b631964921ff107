"""sysfs: INA3221/INA238 power monitors (``HwmonSampler``), their over-current alarms, thermal zones and trips."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from msvit_edge.machine.jetson.commands import read_text
from msvit_edge.machine.jetson.sampler import PollingSampler
from msvit_edge.machine.jetson.tegrastats import OFF

HWMON_DEVICES = "sys/bus/i2c/devices"
THERMAL_ZONES = "sys/class/thermal"
_SKIP_LABELS = {"NC", "sum of shunt voltages"}  # unconnected channels; the INA3221's summing channel (in7)


@dataclass(frozen=True)
class _Channel:
    name: str
    power: Path | None = None  # mW (JetPack 4 iio) or uW (INA238 hwmon), see scale
    volt: Path | None = None  # mV
    curr: Path | None = None  # mA
    scale: float = 1.0  # multiplies the power file's value to mW


def hwmon_channels(root: Path = Path("/")) -> list[_Channel]:
    """Power-monitor channels on the I2C bus: INA3221 (hwmon from JetPack 5, iio before) and Thor's INA238."""
    channels = []
    for dev in sorted((root / HWMON_DEVICES).glob("*")):
        chip = read_text(dev / "name") or ""
        if "ina3221" in chip:
            channels += _ina3221_hwmon(dev) + _ina3221_iio(dev)
        elif "ina238" in chip:
            channels += _ina238(dev)
    return channels


def _ina3221_hwmon(dev: Path) -> list[_Channel]:
    out = []
    for label in sorted(dev.glob("hwmon/hwmon*/in*_label")):
        name, n = read_text(label), label.name[2:-6]
        if name and name not in _SKIP_LABELS:
            out.append(_Channel(name, volt=label.with_name(f"in{n}_input"), curr=label.with_name(f"curr{n}_input")))
    return out


def _ina3221_iio(dev: Path) -> list[_Channel]:
    out = []
    for label in sorted(dev.glob("iio:device*/rail_name_*")):
        name, n = read_text(label), label.name.rsplit("_", 1)[1]
        if name and name not in _SKIP_LABELS:
            out.append(_Channel(name, power=label.with_name(f"in_power{n}_input")))
    return out


def _ina238(dev: Path) -> list[_Channel]:
    # jetson-stats (rbonghi/jetson_stats#900) reads Thor's carrier-board INA238 as the VIN rail, power in uW
    return [_Channel("VIN", power=p, scale=1e-3) for p in sorted(dev.glob("hwmon/hwmon*/power1_input"))][:1]


def _channel_mw(ch: _Channel) -> float | None:
    if ch.power is not None:
        raw = read_text(ch.power)
        return float(raw) * ch.scale if raw else None
    volt, curr = read_text(ch.volt), read_text(ch.curr)
    return float(volt) * float(curr) / 1000 if volt and curr else None


class HwmonSampler(PollingSampler):
    """Power from the INA3221/INA238 sysfs files, polled every ``interval_ms`` (finer than tegrastats allows).

    Args:
        interval_ms: Polling interval.
        root: Filesystem root (tests point it at a fake sysfs tree).
    """

    source = "hwmon"

    def __init__(self, interval_ms: int = 20, root: Path = Path("/")):
        super().__init__(interval_ms)
        self.root = root
        self.channels = hwmon_channels(root)

    def _poll(self) -> tuple[dict[str, float], dict[str, float]]:
        rails = {ch.name: mw for ch in self.channels if (mw := _channel_mw(ch)) is not None}
        return rails, thermal_zones(self.root)

    def alarms(self) -> list[str]:
        return overcurrent_alarms(self.root)


def overcurrent_alarms(root: Path = Path("/")) -> list[str]:
    """INA3221 channels whose over-current alarm (``curr*_crit_alarm``/``curr*_max_alarm``) reads 1."""
    hits = []
    for alarm in sorted((root / HWMON_DEVICES).glob("*/hwmon/hwmon*/curr*_*_alarm")):
        if read_text(alarm) == "1":
            n = alarm.name[4:].split("_", 1)[0]
            hits.append(f"{read_text(alarm.with_name(f'in{n}_label')) or alarm.name} ({alarm.name})")
    return hits


def _zone_name(kind: str) -> str:
    # thermal zone "cpu-thermal" (JetPack 5+) or "CPU-therm" (JetPack 4) is tegrastats' "cpu@"/"CPU@"
    return re.sub(r"-therm(al)?$", "", kind).lower()


def thermal_zones(root: Path = Path("/")) -> dict[str, float]:
    """Current temperature of each thermal zone, degrees C, by tegrastats' (lower-cased) sensor name."""
    temps = {}
    for zone in sorted((root / THERMAL_ZONES).glob("thermal_zone*")):
        kind, milli = read_text(zone / "type"), read_text(zone / "temp")
        if kind and milli and milli.lstrip("-").isdigit() and int(milli) > OFF * 1000:  # sysfs: millidegrees
            temps[_zone_name(kind)] = int(milli) / 1000
    return temps


def passive_trips(root: Path = Path("/")) -> dict[str, float]:
    """The lowest passive (clock-throttling) trip point of each thermal zone, degrees C, by sensor name."""
    trips: dict[str, float] = {}
    for kind_file in sorted((root / THERMAL_ZONES).glob("thermal_zone*/trip_point_*_type")):
        milli = read_text(kind_file.with_name(kind_file.name.replace("_type", "_temp")))
        zone = read_text(kind_file.parent / "type")
        if read_text(kind_file) == "passive" and zone and milli and milli.isdigit():
            name = _zone_name(zone)
            trips[name] = min(trips.get(name, math.inf), int(milli) / 1000)
    return trips
