"""msvit_edge.machine.jetson without a Jetson: real tegrastats lines (tests/data/tegrastats, sources in SOURCES.md),
real file contents and command outputs fed through the injectable root and runner, a fake sysfs tree, and a tiny fake
``tegrastats`` executable that prints the real lines (it stands in for the hardware binary only)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine.jetson import (
    HwmonSampler,
    JetsonInfo,
    JtopSampler,
    TegrastatsSampler,
    detect,
    hwmon_channels,
    jetson_clocks_state,
    max_power_mode,
    open_power_sampler,
    parse_tegrastats,
    passive_trips,
    require_jetson,
    summarize,
    total_rail,
)

DATA = Path(__file__).parent / "data" / "tegrastats"


def line(name: str, index: int = 0) -> str:
    return (DATA / name).read_text().splitlines()[index]


# ------------------------------------------------------------------------------------------------- tegrastats


def test_orin_nano_jetpack6_line():
    s = parse_tegrastats(line("orin_nano_jp6.txt"))
    assert s.rails == {"VDD_IN": (12479, 12479), "VDD_CPU_GPU_CV": (4667, 4667), "VDD_SOC": (2817, 2817)}
    assert total_rail(s) == ("VDD_IN", 12479, 12479)
    assert (s.gpu_load, s.gpu_freq_mhz, s.ram_used_mb, s.ram_total_mb) == (63, (621,), 6185, 7620)
    assert s.temperatures["tj"] == 53.968 and s.timestamp == "11-15-2024 08:38:09"
    assert s.cpu_loads == (15, 11, 14, 13, 11, 8)


def test_agx_orin_jetpack7_line_sums_module_rails():
    s = parse_tegrastats(line("orin_agx_jp7.txt"))
    assert s.rails["VDD_GPU_SOC"] == (5139, 5139)  # cur/avg/max: the third value is not the average
    assert total_rail(s) == ("VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0", 13907, 13907)
    assert s.temperatures == {"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}  # "/limit" dropped
    assert (s.gpu_load, s.gpu_freq_mhz) == (12, (1300, 1300))
    assert "NVDLA0" not in s.rails and len(s.cpu_loads) == 12


def test_thor_jetpack7_line_total_is_vin():
    s = parse_tegrastats(line("thor_jp7.txt"))
    assert s.rails["VIN"] == (87426, 43713)  # the average is the middle of cur/avg/max
    assert total_rail(s) == ("VIN", 87426, 43713)
    assert s.gpu_load is None and s.gpu_freq_mhz == ()  # Thor's JetPack 7.2 prints no GR3D_FREQ
    assert s.temperatures["tj"] == 63.281 and len(s.cpu_loads) == 14


def test_nano_line_without_units_total_is_pom_5v_in():
    s = parse_tegrastats(line("nano_jp4.txt"))
    assert total_rail(s) == ("POM_5V_IN", 4122, 3107)  # not the sum: GPU and CPU rails are parts of it
    assert s.rails["POM_5V_GPU"] == (109, 85)
    assert (s.gpu_load, s.gpu_freq_mhz, s.temperatures["GPU"]) == (28, (76,), 41.5)
    assert "IRAM" not in s.rails and "NVDEC" not in s.rails


def test_agx_xavier_rails_named_like_sensors():
    s = parse_tegrastats(line("xavier_agx_jp4.txt"))
    assert s.rails["GPU"] == (463, 463) and s.temperatures["GPU"] == 30.5  # a rail and a sensor, both "GPU"
    assert total_rail(s) == ("GPU+CPU+SOC+CV+VDDRQ+SYS5V", 7632, 7632)
    assert (s.gpu_load, s.gpu_freq_mhz) == (0, ())


@pytest.mark.parametrize("index, total", [(1, ("VDD_IN", 1776, 1853)), (2, ("VDD_IN", 3140, 3208))])
def test_tx2_lines(index, total):
    s = parse_tegrastats(line("tx2_jp4.txt", index))
    assert total_rail(s) == total
    assert index != 2 or s.rails["VDD_4V0_WIFI"] == (633, 527)


def test_tx1_l4t28_line_has_loads_but_no_rails():
    s = parse_tegrastats(line("tx1_l4t28.txt", 1))
    assert s.cpu_loads == (17, 11, 65, 0) and (s.gpu_load, s.gpu_freq_mhz) == (39, (76,))
    assert s.rails == {} and total_rail(s) is None


def test_unconnected_channels_and_off_sensors_are_dropped():
    s = parse_tegrastats("VDD_GPU_SOC 2390mW/2390mW NC 0mW/0mW CV0@-256C CPU@41.375C")
    assert s.rails == {"VDD_GPU_SOC": (2390, 2390)} and s.temperatures == {"CPU": 41.375}


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.name)
def test_every_real_line_has_ram_and_a_total(path):
    for text in path.read_text().splitlines():
        s = parse_tegrastats(text)
        assert 0 < s.ram_used_mb <= s.ram_total_mb
        assert total_rail(s) is not None or path.name == "tx1_l4t28.txt"


# ------------------------------------------------------------------------------------------------- detection

# /etc/nv_tegra_release, model and compatible of a Jetson AGX Thor devkit, as posted in rbonghi/jetson_stats#711
THOR_RELEASE = (
    "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, DATE: Fri Aug 22 00:55:42 UTC 2025"
)
THOR_MODEL = "NVIDIA Jetson AGX Thor Developer Kit\x00"
THOR_COMPATIBLE = "nvidia,p4071-0000+p3834-0008\x00nvidia,p3834-0008\x00nvidia,tegra264\x00"
NVPMODEL_CONF = "< PM_CONFIG DEFAULT=0 >\n< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=120W >\n"
SHOW_OFF = (  # jetson_clocks --show on an Orin NX with the clocks free (min < max)
    "SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit\nOnline CPUs: 0-7\n"
    "cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1728000 IdleStates: WFI=1 c7=1\n"
    "GPU MinFreq=306000000 MaxFreq=918000000 CurrentFreq=306000000\n"
)
SHOW_ON = (
    "cpu0: Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000\n"
    "cpu1: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=729600\n"
    "GPU MinFreq=918000000 MaxFreq=918000000 CurrentFreq=918000000\n"
)


def fake_board(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def runner(outputs: dict[str, tuple[int, str]]):
    return lambda cmd: outputs.get(cmd[0], (127, f"{cmd[0]}: not found on PATH"))


THOR_FILES = {
    "etc/nv_tegra_release": THOR_RELEASE,
    "proc/device-tree/model": THOR_MODEL,
    "proc/device-tree/compatible": THOR_COMPATIBLE,
    "etc/nvpmodel.conf": NVPMODEL_CONF,
}


def test_detect_thor_not_root(tmp_path):
    run = runner({"nvpmodel": (0, "NV Power Mode: 120W\n1\n"), "jetson_clocks": (1, "Error: run as a root user")})
    info = detect(fake_board(tmp_path, THOR_FILES), run)
    assert (info.model, info.l4t, info.jetpack, info.soc) == (THOR_MODEL[:-1], "38.2.0", "7.0", "tegra264")
    assert (info.power_mode, info.power_mode_id, info.max_power_mode, info.power_mode_is_max) == (
        "120W",
        1,
        "MAXN",
        False,
    )
    assert info.clocks == "unknown" and any("root" in n for n in info.notes)
    assert "L4T 38.2.0 (JetPack 7.0)" in info.describe()


def test_clocks_from_cpufreq_when_jetson_clocks_needs_root(tmp_path):
    cpufreq = "sys/devices/system/cpu/cpu{}/cpufreq/scaling_{}_freq"
    pinned = {cpufreq.format(i, k): "2601000" for i in (0, 1) for k in ("min", "max")}
    files = THOR_FILES | pinned
    info = detect(fake_board(tmp_path, files), runner({"jetson_clocks": (1, "Error: run as a root user")}))
    assert info.clocks == "on" and any("cpufreq" in n for n in info.notes)
    assert info.power_mode is None and any("nvpmodel" in n for n in info.notes)


@pytest.mark.parametrize("show, state", [(SHOW_OFF, "off"), (SHOW_ON, "on"), ("Error: run as root", None)])
def test_jetson_clocks_state(show, state):
    assert jetson_clocks_state(show) == state  # the offline cpu1 in SHOW_ON is not pinned and does not count


@pytest.mark.parametrize(
    "names, best",
    [(["MAXN", "120W", "90W"], "MAXN"), (["15W", "7W", "MAXN_SUPER"], "MAXN_SUPER"), (["15W", "7W"], "15W")],
)
def test_max_power_mode(names, best):
    conf = "".join(f"< POWER_MODEL ID={i} NAME={n} >\n" for i, n in enumerate(names))
    assert max_power_mode(conf) == best


def test_not_a_jetson_says_where_it_looked(tmp_path):
    assert detect(tmp_path, runner({})) is None
    with pytest.raises(MsvitEdgeError, match=r"looked for /etc/nv_tegra_release and for nvidia,tegra"):
        require_jetson(tmp_path, runner({}))


# ------------------------------------------------------------------------------------------------- samplers


def fake_tegrastats(tmp_path: Path, data: Path) -> Path:
    """A stand-in for the tegrastats binary: prints the real lines, then runs until terminated, like the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "tegrastats"
    exe.write_text(
        f"#!{sys.executable}\nimport sys, time\nopen({str(tmp_path / 'argv')!r}, 'w').write(' '.join(sys.argv[1:]))\n"
        f"for line in open({str(data)!r}):\n    print(line, end='', flush=True)\ntime.sleep(600)\n"
    )
    exe.chmod(0o755)
    return bin_dir


def test_tegrastats_sampler_reads_the_lines_and_stops_the_process(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_tegrastats(tmp_path, DATA / 'nano_jp4.txt')}:/usr/bin:/bin")
    with TegrastatsSampler(interval_ms=250) as sampler:
        assert sampler.wait_for(4, timeout=60)
    assert sampler._proc.poll() is not None  # terminated, not left behind
    assert (tmp_path / "argv").read_text() == "--interval 250"
    assert [s[1]["POM_5V_IN"] for s in sampler.samples] == [4122, 4531, 4523, 4531]
    assert sampler.temperatures[0][1]["GPU"] == 41.5
    start, end = sampler.samples[0][0], sampler.samples[-1][0]
    summary = sampler.summary((start, end), inferences=10)
    assert (summary.source, summary.total_rail, summary.avg_mw) == ("tegrastats", "POM_5V_IN", 4426.75)
    assert "PMIC" not in summary.max_temperatures and summary.max_temperatures["GPU"] == 43


def test_tegrastats_without_rails_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_tegrastats(tmp_path, DATA / 'tx1_l4t28.txt')}:/usr/bin:/bin")
    with TegrastatsSampler(interval_ms=100) as sampler:
        deadline = time.monotonic() + 60  # generous: only a stuck reader gets near it
        while sampler.lines_without_rails < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    with pytest.raises(MsvitEdgeError, match="printed 2 lines without power rails"):
        sampler.summary((0, 1e12), 1)


def test_open_power_sampler_picks_tegrastats_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_tegrastats(tmp_path, DATA / "nano_jp4.txt")))
    said = []
    sampler = open_power_sampler(200, said.append, root=tmp_path)
    assert isinstance(sampler, TegrastatsSampler) and sampler.interval_ms == 200
    assert any("not using jtop" in s for s in said) and said[-1] == "power: tegrastats --interval 200"


def test_open_power_sampler_without_any_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MsvitEdgeError, match="no jtop service, no tegrastats on PATH, no INA3221/INA238"):
        open_power_sampler(root=tmp_path)


def fake_sysfs(root: Path) -> Path:
    ina3221 = "sys/bus/i2c/devices/1-0040"
    hw = f"{ina3221}/hwmon/hwmon3"
    files = {
        f"{ina3221}/name": "ina3221\n",
        f"{hw}/in1_label": "VDD_IN\n", f"{hw}/in1_input": "5080\n", f"{hw}/curr1_input": "1200\n",
        f"{hw}/in2_label": "VDD_CPU_GPU_CV\n", f"{hw}/in2_input": "5080\n", f"{hw}/curr2_input": "400\n",
        f"{hw}/in3_label": "NC\n", f"{hw}/in7_label": "sum of shunt voltages\n", f"{hw}/in7_input": "1\n",
        f"{hw}/curr1_crit_alarm": "1\n", f"{hw}/curr2_crit_alarm": "0\n",
        "sys/bus/i2c/devices/6-0040/name": "ina3221x\n",  # JetPack 4's iio driver
        "sys/bus/i2c/devices/6-0040/iio:device0/rail_name_0": "POM_5V_IN\n",
        "sys/bus/i2c/devices/6-0040/iio:device0/in_power0_input": "4122\n",
        "sys/bus/i2c/devices/2-0044/name": "ina238\n",  # Thor's carrier board, power in microwatts
        "sys/bus/i2c/devices/2-0044/hwmon/hwmon5/power1_input": "19780000\n",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n", "sys/class/thermal/thermal_zone0/temp": "52968\n",
        "sys/class/thermal/thermal_zone0/trip_point_0_type": "passive\n",
        "sys/class/thermal/thermal_zone0/trip_point_0_temp": "50000\n",
        "sys/class/thermal/thermal_zone1/type": "CV0-therm\n", "sys/class/thermal/thermal_zone1/temp": "-256000\n",
    }  # fmt: skip
    return fake_board(root, files)


def test_hwmon_channels_cover_three_drivers(tmp_path):
    names = [ch.name for ch in hwmon_channels(fake_sysfs(tmp_path))]
    assert sorted(names) == ["POM_5V_IN", "VDD_CPU_GPU_CV", "VDD_IN", "VIN"]  # NC and the summing channel skipped


def test_hwmon_sampler_reads_power_temperatures_and_alarms(tmp_path):
    root = fake_sysfs(tmp_path)
    with HwmonSampler(interval_ms=5, root=root) as sampler:
        assert sampler.wait_for(3, timeout=30)
    assert sampler.samples[0][1] == {"VDD_IN": 6096, "VDD_CPU_GPU_CV": 2032, "POM_5V_IN": 4122, "VIN": 19780}
    assert sampler.temperatures[0][1] == {"cpu": 52.968}
    summary = sampler.summary((sampler.samples[0][0], sampler.samples[-1][0]), 1, trips=passive_trips(root))
    assert summary.total_rail == "VIN" and summary.avg_mw == 19780
    assert any("thermal throttling: cpu reached 52.968 C (trip 50)" in w for w in summary.warnings)
    assert any("over-current" in w and "VDD_IN" in w for w in summary.warnings)


class FakeJtop:
    """Stands in for the jetson-stats service client: three updates, then the service stops."""

    def __init__(self, interval: float):
        self.interval, self.updates, self.closed = interval, 3, False
        self.power = {"rail": {"VDD_IN": {"power": 7100, "online": True}, "VDD_SOC": {"power": 900, "online": False}}}
        self.temperature = {"tj": {"temp": 48.5, "online": True}, "cv0": {"temp": -256, "online": False}}

    def start(self):
        pass

    def ok(self):
        self.updates -= 1
        return self.updates >= 0

    def close(self):
        self.closed = True


def test_jtop_sampler_reads_online_rails(tmp_path):
    clients = []
    with JtopSampler(500, client=lambda s: clients.append(FakeJtop(s)) or clients[-1]) as sampler:
        assert sampler.wait_for(3, timeout=30)
    assert clients[0].interval == 0.5 and clients[0].closed
    assert [s[1] for s in sampler.samples] == [{"VDD_IN": 7100}] * 3
    assert sampler.temperatures[0][1] == {"tj": 48.5}


# ------------------------------------------------------------------------------------------------- summary


ORIN_NX = JetsonInfo("NVIDIA Jetson Orin NX", "36.4.3", "6.2", "tegra234", "15W", 1, "MAXN", "off")


def test_energy_per_inference_gross_and_above_idle():
    rows = [(t, {"VDD_IN": 5000.0, "VDD_SOC": 1000.0}) for t in (0, 1, 2)]
    rows += [(t, {"VDD_IN": 8000.0, "VDD_SOC": 3000.0}) for t in (3, 4, 5)]
    s = summarize(rows, window=(3, 5), inferences=100, idle_window=(0, 2), source="hwmon")
    assert (s.avg_mw, s.idle_mw, s.duration_s, s.samples, s.idle_samples) == (8000, 5000, 2, 3, 3)
    assert s.energy_mj == pytest.approx(160) and s.energy_above_idle_mj == pytest.approx(60)
    assert s.rails_avg_mw == {"VDD_IN": 8000, "VDD_SOC": 3000}
    assert any("only 3 power samples" in w for w in s.warnings)


def test_warnings_for_clocks_power_mode_and_summed_rails():
    rails = {"VDD_GPU_SOC": 5139.0, "VDD_CPU_CV": 3268.0, "VIN_SYS_5V0": 5500.0}
    s = summarize([(t / 10, rails) for t in range(10)], (0, 1), 5, jetson=ORIN_NX)
    assert s.total_rail == "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0" and s.avg_mw == 13907
    text = " | ".join(s.warnings)
    assert "no input rail" in text and "jetson_clocks is off" in text and "power mode 15W is not the maximum" in text
    assert s.to_dict()["warnings"] == list(s.warnings)


def test_no_samples_in_the_window_is_an_error():
    with pytest.raises(MsvitEdgeError, match=r"no power samples in the 0\.50 s timed run"):
        summarize([(0.0, {"VDD_IN": 1.0})], (1.0, 1.5), 10)


@pytest.mark.jetson
def test_real_board_detects_and_samples_power():
    info = require_jetson()
    assert info.l4t and info.model
    said = []
    with open_power_sampler(100, said.append) as power:
        assert power.wait_for(3, timeout=60), said
    summary = power.summary((power.samples[0][0], power.samples[-1][0]), 1, jetson=info, trips=passive_trips())
    assert summary.avg_mw > 0 and summary.total_rail, (said, summary)
