"""One tegrastats line, any generation, as a ``TegrastatsSample``; which rails add up to the board's total."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TegrastatsSample:
    """One tegrastats line. Fields a board or release does not print are empty or None."""

    rails: dict[str, tuple[float, float]]  # name -> (current, average) mW
    temperatures: dict[str, float]  # sensor -> degrees C; powered-off sensors (printed as -256C) left out
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    gpu_load: float | None = None  # GR3D_FREQ percent; Thor's JetPack 7 prints none
    gpu_freq_mhz: tuple[int, ...] = ()  # one per GPC from JetPack 6 on ("@[1300,1300]")
    cpu_loads: tuple[float | None, ...] = ()  # percent per core, None for an offline core
    timestamp: str | None = None  # "MM-DD-YYYY HH:MM:SS", printed from JetPack 5 on


# Rails: "VDD_IN 4824mW/4824mW" (JetPack 5+), "VDD_GPU 37528mW/37528mW/37528mW" (JetPack 7: cur/avg/max) and
# "POM_5V_IN 4122/3107" (JetPack 4 and older: no unit, still mW). RAM/SWAP/IRAM end in MB/kB and never match.
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (-?\d+)(?:mW)?/(-?\d+)(?:mW)?(?:/-?\d+(?:mW)?)?(?=\s|$)")
_TEMP = re.compile(r"(?<![\w%@])([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
_UNCONNECTED = {"NC"}  # an INA3221 channel with nothing on it (AGX Orin prints two)
OFF = -256.0  # what a powered-down thermal sensor reads, in C (tegrastats prints Orin's idle CV0@-256C)


def parse_tegrastats(line: str) -> TegrastatsSample:
    """Parse one line of tegrastats output, from any JetPack (4 to 7) and board (Nano/TX2 to Thor)."""
    ram = re.search(r"\bRAM (\d+)/(\d+)MB", line)
    gpu = re.search(r"\bGR3D(?:_FREQ)? (\d+)%", line)  # "GR3D 3%@76" on L4T 28 (TX1)
    freqs = re.search(r"\bGR3D(?:_FREQ)? \d*%?@\[?([\d,]+)", line)
    cpus = re.search(r"\b(?i:cpu) \[([^\]]*)\]", line)
    stamp = re.match(r"\s*(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)", line)
    return TegrastatsSample(
        rails={n: (float(c), float(a)) for n, c, a in _RAIL.findall(line) if n not in _UNCONNECTED},
        temperatures={n: float(t) for n, t in _TEMP.findall(line) if float(t) > OFF},
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        gpu_load=float(gpu.group(1)) if gpu else None,
        gpu_freq_mhz=tuple(int(f) for f in freqs.group(1).split(",") if f) if freqs else (),
        cpu_loads=tuple(_cpu_load(c) for c in cpus.group(1).split(",")) if cpus else (),
        timestamp=stamp.group(1) if stamp else None,
    )


def _cpu_load(entry: str) -> float | None:
    m = re.match(r"\s*(\d+)%", entry)
    return float(m.group(1)) if m else None  # "off": the core is powered down


# Which rail is the board's total input, in order of preference. The first present wins:
#   VIN        Jetson AGX Thor developer kit: INA238 on the carrier board, the whole board's input
#   VDD_IN     Orin NX, Orin Nano, Xavier NX, TX2, TX1: the module's input rail
#   POM_5V_IN  Jetson Nano: the module's 5 V input (POM_5V_GPU/CPU are parts of it)
# Boards without an input rail print module rails only, and their total is the sum of a known set:
#   AGX Orin     VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (the carrier board is not measured)
#   AGX Xavier   GPU + CPU + SOC + CV + VDDRQ + SYS5V (the JetPack 4 names)
# Anything else: the sum of every rail printed, named so in the result.
INPUT_RAILS = ("VIN", "VDD_IN", "POM_5V_IN")
SUMMED_RAILS = (("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"), ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"))


def total_rails(names: Iterable[str]) -> tuple[str, ...]:
    """The rails whose sum is the board's total power, given the rails a board reports (see ``INPUT_RAILS``)."""
    names = set(names)
    for rail in INPUT_RAILS:
        if rail in names:
            return (rail,)
    for group in SUMMED_RAILS:
        if set(group) <= names:
            return group
    return tuple(sorted(names))


def total_rail(sample: TegrastatsSample) -> tuple[str, float, float] | None:
    """(name, current mW, average mW) of the board's total power in a tegrastats sample; None without rails.

    The name is the rail's, or the summed rails joined by "+".
    """
    rails = total_rails(sample.rails)
    if not rails:
        return None
    return "+".join(rails), sum(sample.rails[r][0] for r in rails), sum(sample.rails[r][1] for r in rails)
