"""How the board is set up: its power mode (``nvpmodel``) and whether ``jetson_clocks`` pinned the clocks."""

from __future__ import annotations

import re
from pathlib import Path

from msvit_edge.machine.jetson.commands import Run, first_line, read_text


def read_power_mode(run: Run, notes: list[str]) -> tuple[str | None, int | None]:
    """(name, id) of the current power mode from ``nvpmodel -q``; (None, None) and a note when it fails."""
    status, out = run(["nvpmodel", "-q"])
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", out)
    if status != 0 or m is None:
        notes.append(f"power mode unknown: `nvpmodel -q` said {first_line(out)!r}")
        return None, None
    return m.group(1), int(m.group(2))


def max_power_mode(conf: str | None) -> str | None:
    """The board's highest power mode in an nvpmodel config: the MAXN* mode, else the one with the most watts."""
    names = re.findall(r"<\s*POWER_MODEL\s+ID=\d+\s+NAME=(\S+?)\s*>", conf or "")
    if not names:
        return None
    maxn = sorted((n for n in names if n.upper().startswith("MAXN")), key=lambda n: "SUPER" not in n.upper())
    if maxn:
        return maxn[0]  # JetPack 6.2's MAXN_SUPER (Orin Nano/NX) outranks a plain MAXN
    watts = {n: float(m.group(1)) for n in names if (m := re.search(r"(\d+(?:\.\d+)?)W", n))}
    return max(watts, key=watts.__getitem__) if watts else None


def read_clocks(run: Run, root: Path, notes: list[str]) -> str:
    """``JetsonInfo.clocks``: from ``jetson_clocks --show``, else from the cpufreq limits, else "unknown"."""
    status, out = run(["jetson_clocks", "--show"])
    state = jetson_clocks_state(out) if status == 0 else None
    if state is not None:
        return state
    # jetson_clocks --show needs root; the CPU governors' limits in sysfs do not, and jetson_clocks pins them
    state = _cpufreq_pinned(root)
    if state is None:
        notes.append(f"jetson_clocks state unknown: `jetson_clocks --show` said {first_line(out)!r}")
        return "unknown"
    notes.append("jetson_clocks state read from cpufreq limits (`jetson_clocks --show` needs root)")
    return state


def jetson_clocks_state(show: str) -> str | None:
    """ "on" when every online CPU and the GPU run pinned (MinFreq == MaxFreq) in ``jetson_clocks --show``.

    That is what ``jetson_clocks`` does: it raises each minimum to the maximum. None when the text has no such
    lines (another tool's output, an error message). Offline cores are left out: their limits are not pinned.
    """
    lines = [s for s in show.splitlines() if re.match(r"(cpu\d+|GPU)\b", s) and "Online=0" not in s]
    pairs = [m.groups() for s in lines if (m := re.search(r"MinFreq=(\d+)\s+MaxFreq=(\d+)", s))]
    if not pairs:
        return None
    return "on" if all(lo == hi for lo, hi in pairs) else "off"


def _cpufreq_pinned(root: Path) -> str | None:
    pairs = []
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        lo, hi = read_text(cpu / "scaling_min_freq"), read_text(cpu / "scaling_max_freq")
        if lo and hi:
            pairs.append((lo, hi))
    if not pairs:
        return None
    return "on" if all(lo == hi for lo, hi in pairs) else "off"
