"""NVIDIA Jetson: what board this is, how it is set up, and what it draws while a benchmark runs.

Torch-free and import-light: a Jetson may have no PyTorch, and every probe here must also run (and fail politely)
on a workstation. The filesystem root and the command runner are parameters, so tests feed real file contents and
command outputs without a board. The map:

- ``board``: ``detect()`` reads the board (``/etc/nv_tegra_release``, the device tree, ``nvpmodel -q``,
  ``jetson_clocks --show``) into a ``JetsonInfo``; ``require_jetson()`` turns "not a Jetson" into a one-line error
  that says where it looked.
- ``clocks``: the power mode (current and the board's maximum) and whether ``jetson_clocks`` pinned the clocks.
- ``commands``: ``run_command()`` and the file reader every probe uses.
- ``tegrastats``: ``parse_tegrastats()`` reads one line of any tegrastats generation into a ``TegrastatsSample``;
  ``total_rail()`` says which rail (or sum of rails) is the board's total, by ``total_rails`` (``INPUT_RAILS``).
- ``sampler``: ``PowerSampler``, the one interface of every power source: a context manager sampling in a thread.
- ``samplers``: ``JtopSampler`` (the jetson-stats service), ``TegrastatsSampler`` (``tegrastats --interval``);
  ``open_power_sampler()`` picks the first that works, in that order, then hwmon, and says why through ``log``.
- ``hwmon``: ``HwmonSampler`` (INA3221/INA238 sysfs files), over-current alarms, thermal zones and trip points.
- ``summary``: ``PowerSampler.summary()`` turns the samples of a timed run into a ``PowerSummary``: average total
  and per-rail power, idle power, energy per inference, peak temperatures and the warnings that make a result not
  comparable.

All times are ``time.monotonic()`` seconds: the caller marks its idle and timed windows with the same clock.
"""

from msvit_edge.machine.jetson.board import (
    COMPATIBLE_FILE,
    JETPACK,
    MODEL_FILES,
    NVPMODEL_CONF,
    RELEASE_FILE,
    JetsonInfo,
    detect,
    require_jetson,
)
from msvit_edge.machine.jetson.clocks import jetson_clocks_state, max_power_mode
from msvit_edge.machine.jetson.commands import NOT_FOUND, Run, run_command
from msvit_edge.machine.jetson.hwmon import (
    HWMON_DEVICES,
    THERMAL_ZONES,
    HwmonSampler,
    hwmon_channels,
    overcurrent_alarms,
    passive_trips,
    thermal_zones,
)
from msvit_edge.machine.jetson.sampler import PowerSampler
from msvit_edge.machine.jetson.samplers import JtopSampler, Log, TegrastatsSampler, open_power_sampler
from msvit_edge.machine.jetson.summary import FEW_SAMPLES, NOT_MEASURED, PowerSummary, Sample, summarize
from msvit_edge.machine.jetson.tegrastats import (
    INPUT_RAILS,
    OFF,
    SUMMED_RAILS,
    TegrastatsSample,
    parse_tegrastats,
    total_rail,
    total_rails,
)

__all__ = [
    "COMPATIBLE_FILE", "FEW_SAMPLES", "HWMON_DEVICES", "INPUT_RAILS", "JETPACK", "MODEL_FILES", "NOT_FOUND",
    "NOT_MEASURED", "NVPMODEL_CONF", "OFF", "RELEASE_FILE", "SUMMED_RAILS", "THERMAL_ZONES", "HwmonSampler",
    "JetsonInfo", "JtopSampler", "Log", "PowerSampler", "PowerSummary", "Run", "Sample", "TegrastatsSample",
    "TegrastatsSampler", "detect", "hwmon_channels", "jetson_clocks_state", "max_power_mode", "open_power_sampler",
    "overcurrent_alarms", "parse_tegrastats", "passive_trips", "require_jetson", "run_command", "summarize",
    "thermal_zones", "total_rail", "total_rails",
]  # fmt: skip
