"""NVIDIA Jetson: what board this is, how it is set up, and what it draws while a benchmark runs.

Torch-free and import-light: a Jetson may have no PyTorch, and every probe here must also run (and fail politely)
on a workstation. Three nouns, Polygraphy-style:

- ``detect()`` reads the board (``/etc/nv_tegra_release``, the device tree, ``nvpmodel -q``, ``jetson_clocks
  --show``) into a ``JetsonInfo``; ``require_jetson()`` turns "not a Jetson" into a one-line error that says where
  it looked. The filesystem root and the command runner are parameters, so tests feed real file contents and
  command outputs without a board.
- ``parse_tegrastats()`` reads one line of any tegrastats generation into a ``TegrastatsSample``; ``total_rail()``
  says which rail (or sum of rails) is the board's total, by ``total_rails`` (``INPUT_RAILS``).
- Power samplers are context managers with one interface (``PowerSampler``): ``JtopSampler`` (the jetson-stats
  service), ``TegrastatsSampler`` (``tegrastats --interval``), ``HwmonSampler`` (INA3221/INA238 sysfs files).
  ``open_power_sampler()`` picks the first that works, in that order, and says why through ``log``.
  ``PowerSampler.summary()`` turns the samples of a timed run into a ``PowerSummary``: average total and per-rail
  power, idle power, energy per inference, peak temperatures and the warnings that make a result not comparable.

All times are ``time.monotonic()`` seconds: the caller marks its idle and timed windows with the same clock.
"""

from __future__ import annotations

import importlib.util
import math
import platform
import re
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError

Run = Callable[[Sequence[str]], tuple[int, str]]
Log = Callable[[str], None]
Sample = tuple[float, dict[str, float]]  # (time.monotonic() s, {name: value}); mW for rails, degrees C for temps

NOT_FOUND = 127  # the shell's status for "no such command"


def run_command(cmd: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
    """Run a command without a shell: (exit status, stdout + stderr); 127 when it is not on PATH."""
    exe = shutil.which(cmd[0])
    if exe is None:
        return NOT_FOUND, f"{cmd[0]}: not found on PATH"
    try:
        done = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]}: no answer within {timeout:g} s"
    except OSError as e:
        return 126, f"{cmd[0]}: {e}"
    return done.returncode, done.stdout + done.stderr


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").replace("\x00", "\n").strip()
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Board detection
# ---------------------------------------------------------------------------------------------------------------

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
    compatible = _read(root / COMPATIBLE_FILE) or ""
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
    l4t = _l4t_release(_read(root / RELEASE_FILE), notes)
    mode, mode_id = _power_mode(run, notes)
    return JetsonInfo(
        model=next((m for f in MODEL_FILES if (m := _read(root / f))), "NVIDIA Jetson (model unknown)"),
        l4t=l4t,
        jetpack=JETPACK.get(l4t) if l4t else None,
        soc=_soc(_read(root / COMPATIBLE_FILE)),
        power_mode=mode,
        power_mode_id=mode_id,
        max_power_mode=max_power_mode(_read(root / NVPMODEL_CONF)),
        clocks=_clocks(run, root, notes),
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


def _power_mode(run: Run, notes: list[str]) -> tuple[str | None, int | None]:
    status, out = run(["nvpmodel", "-q"])
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", out)
    if status != 0 or m is None:
        notes.append(f"power mode unknown: `nvpmodel -q` said {_first_line(out)!r}")
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


def _clocks(run: Run, root: Path, notes: list[str]) -> str:
    status, out = run(["jetson_clocks", "--show"])
    state = jetson_clocks_state(out) if status == 0 else None
    if state is not None:
        return state
    # jetson_clocks --show needs root; the CPU governors' limits in sysfs do not, and jetson_clocks pins them
    state = _cpufreq_pinned(root)
    if state is None:
        notes.append(f"jetson_clocks state unknown: `jetson_clocks --show` said {_first_line(out)!r}")
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
        lo, hi = _read(cpu / "scaling_min_freq"), _read(cpu / "scaling_max_freq")
        if lo and hi:
            pairs.append((lo, hi))
    if not pairs:
        return None
    return "on" if all(lo == hi for lo, hi in pairs) else "off"


def _first_line(text: str) -> str:
    return next((s.strip() for s in text.splitlines() if s.strip()), "nothing")


# ---------------------------------------------------------------------------------------------------------------
# tegrastats
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# Power samplers
# ---------------------------------------------------------------------------------------------------------------


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


class _PollingSampler(PowerSampler):
    """Reads a source every ``interval_ms`` in a thread: ``_poll()`` returns (rails mW, temperatures C)."""

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._add(*self._poll())
            self._stop.wait(self.interval_ms / 1000)

    @abstractmethod
    def _poll(self) -> tuple[dict[str, float], dict[str, float]]:
        """One reading: rails in mW, temperatures in C."""


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
        chip = _read(dev / "name") or ""
        if "ina3221" in chip:
            channels += _ina3221_hwmon(dev) + _ina3221_iio(dev)
        elif "ina238" in chip:
            channels += _ina238(dev)
    return channels


def _ina3221_hwmon(dev: Path) -> list[_Channel]:
    out = []
    for label in sorted(dev.glob("hwmon/hwmon*/in*_label")):
        name, n = _read(label), label.name[2:-6]
        if name and name not in _SKIP_LABELS:
            out.append(_Channel(name, volt=label.with_name(f"in{n}_input"), curr=label.with_name(f"curr{n}_input")))
    return out


def _ina3221_iio(dev: Path) -> list[_Channel]:
    out = []
    for label in sorted(dev.glob("iio:device*/rail_name_*")):
        name, n = _read(label), label.name.rsplit("_", 1)[1]
        if name and name not in _SKIP_LABELS:
            out.append(_Channel(name, power=label.with_name(f"in_power{n}_input")))
    return out


def _ina238(dev: Path) -> list[_Channel]:
    # jetson-stats (rbonghi/jetson_stats#900) reads Thor's carrier-board INA238 as the VIN rail, power in uW
    return [_Channel("VIN", power=p, scale=1e-3) for p in sorted(dev.glob("hwmon/hwmon*/power1_input"))][:1]


def _channel_mw(ch: _Channel) -> float | None:
    if ch.power is not None:
        raw = _read(ch.power)
        return float(raw) * ch.scale if raw else None
    volt, curr = _read(ch.volt), _read(ch.curr)
    return float(volt) * float(curr) / 1000 if volt and curr else None


class HwmonSampler(_PollingSampler):
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
        if _read(alarm) == "1":
            n = alarm.name[4:].split("_", 1)[0]
            hits.append(f"{_read(alarm.with_name(f'in{n}_label')) or alarm.name} ({alarm.name})")
    return hits


def _zone_name(kind: str) -> str:
    # thermal zone "cpu-thermal" (JetPack 5+) or "CPU-therm" (JetPack 4) is tegrastats' "cpu@"/"CPU@"
    return re.sub(r"-therm(al)?$", "", kind).lower()


def thermal_zones(root: Path = Path("/")) -> dict[str, float]:
    """Current temperature of each thermal zone, degrees C, by tegrastats' (lower-cased) sensor name."""
    temps = {}
    for zone in sorted((root / THERMAL_ZONES).glob("thermal_zone*")):
        kind, milli = _read(zone / "type"), _read(zone / "temp")
        if kind and milli and milli.lstrip("-").isdigit() and int(milli) > OFF * 1000:  # sysfs: millidegrees
            temps[_zone_name(kind)] = int(milli) / 1000
    return temps


def passive_trips(root: Path = Path("/")) -> dict[str, float]:
    """The lowest passive (clock-throttling) trip point of each thermal zone, degrees C, by sensor name."""
    trips: dict[str, float] = {}
    for kind_file in sorted((root / THERMAL_ZONES).glob("thermal_zone*/trip_point_*_type")):
        milli = _read(kind_file.with_name(kind_file.name.replace("_type", "_temp")))
        zone = _read(kind_file.parent / "type")
        if _read(kind_file) == "passive" and zone and milli and milli.isdigit():
            name = _zone_name(zone)
            trips[name] = min(trips.get(name, math.inf), int(milli) / 1000)
    return trips


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


# ---------------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------------

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
