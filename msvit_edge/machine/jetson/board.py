"""What board this is: ``detect()`` reads the release file, the device tree and the setup into a ``JetsonInfo``."""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine.jetson.clocks import max_power_mode, read_clocks, read_power_mode
from msvit_edge.machine.jetson.commands import Run, read_text, run_command

# L4T release -> JetPack: NVIDIA's JetPack archive (developer.nvidia.com/embedded/jetpack-archive), cross-checked
# with jetson-stats' table. An L4T release not listed reports no JetPack rather than a guess.
JETPACK = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5",
    "32.7.6": "4.6.6", "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
    "36.4.4": "6.2.1", "38.2.0": "7.0", "38.2.1": "7.0", "38.4.0": "7.1", "39.2.0": "7.2",
}  # fmt: skip

RELEASE_FILE = "etc/nv_tegra_release"
MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
COMPATIBLE_FILE = "proc/device-tree/compatible"
NVPMODEL_CONF = "etc/nvpmodel.conf"


@dataclass(frozen=True)
class JetsonInfo:
    """What ``detect()`` found. Unknown fields are None, with the reason in ``notes``."""

    model: str  # device-tree model, e.g. "NVIDIA Jetson AGX Orin Developer Kit"
    l4t: str | None  # "36.4.3", from /etc/nv_tegra_release
    jetpack: str | None  # from the L4T release by ``JETPACK``
    soc: str | None  # "tegra234", from the device tree's compatible list
    power_mode: str | None  # nvpmodel's name, e.g. "MAXN"
    power_mode_id: int | None
    max_power_mode: str | None  # the board's highest mode, from /etc/nvpmodel.conf
    clocks: str  # jetson_clocks: "on" (min = max frequency everywhere), "off" or "unknown"
    notes: tuple[str, ...] = ()

    @property
    def power_mode_is_max(self) -> bool | None:
        """Whether the current power mode is the board's maximum (None when either is unknown)."""
        if self.power_mode is None or self.max_power_mode is None:
            return None
        return self.power_mode == self.max_power_mode

    def to_dict(self) -> dict:
        return asdict(self) | {"notes": list(self.notes), "power_mode_is_max": self.power_mode_is_max}

    @classmethod
    def from_dict(cls, d: Mapping) -> JetsonInfo:
        """The inverse of ``to_dict`` (derived keys ignored), e.g. for a report read back from JSON."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names} | {"notes": tuple(d.get("notes", ()))})

    def describe(self) -> str:
        """One line for reports: model, L4T/JetPack, power mode, clocks."""
        jp = f" (JetPack {self.jetpack})" if self.jetpack else ""
        mode = self.power_mode or "power mode unknown"
        return f"{self.model}, L4T {self.l4t or '?'}{jp}, {mode}, jetson_clocks {self.clocks}"


def _looks_like_jetson(root: Path) -> bool:
    compatible = read_text(root / COMPATIBLE_FILE) or ""
    return (root / RELEASE_FILE).exists() or "nvidia,tegra" in compatible


def detect(root: Path = Path("/"), run: Run = run_command) -> JetsonInfo | None:
    """Describe this Jetson, or None on anything else.

    Args:
        root: Filesystem root to read (tests point it at a fake tree).
        run: Command runner (tests feed recorded ``nvpmodel``/``jetson_clocks`` output).
    """
    if not _looks_like_jetson(root):
        return None
    notes: list[str] = []
    l4t = _l4t_release(read_text(root / RELEASE_FILE), notes)
    mode, mode_id = read_power_mode(run, notes)
    return JetsonInfo(
        model=next((m for f in MODEL_FILES if (m := read_text(root / f))), "NVIDIA Jetson (model unknown)"),
        l4t=l4t,
        jetpack=JETPACK.get(l4t) if l4t else None,
        soc=_soc(read_text(root / COMPATIBLE_FILE)),
        power_mode=mode,
        power_mode_id=mode_id,
        max_power_mode=max_power_mode(read_text(root / NVPMODEL_CONF)),
        clocks=read_clocks(run, root, notes),
        notes=tuple(notes),
    )


def require_jetson(root: Path = Path("/"), run: Run = run_command) -> JetsonInfo:
    """``detect()``, or a one-line ``MsvitEdgeError`` saying how a Jetson was looked for."""
    info = detect(root, run)
    if info is None:
        raise MsvitEdgeError(
            f"not an NVIDIA Jetson: looked for /{RELEASE_FILE} and for nvidia,tegra in /{COMPATIBLE_FILE} and "
            f"found neither (this is {platform.system()} on {platform.machine()})"
        )
    return info


def _l4t_release(text: str | None, notes: list[str]) -> str | None:
    # "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ..." -> "36.4.3"
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text or "")
    if m is None:
        notes.append(f"L4T release unknown: /{RELEASE_FILE} is missing or unreadable")
        return None
    return ".".join(m.groups())


def _soc(compatible: str | None) -> str | None:
    socs = re.findall(r"nvidia,(tegra\w+)", compatible or "")
    return socs[-1] if socs else None
