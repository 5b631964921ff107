"""The DeiT-S question in minutes: wall time and peak memory of a latency-only DeiT-S export and its INT8 build.

    python benchmarks/deit_s.py [--work DIR] [--preset P] [--precision int8] [--bench] [--json FILE]
                                [--export-args "..."] [--build-args "..."]

Runs what a user asking "will MSViT pay on my device?" runs, each step as a child process of its own, as typed:

    msvit-edge export --preset vit_small_patch16_224 --random-weights --fine-fraction 0.5 --out WORK/bundle
    msvit-edge build --bundle WORK/bundle --precision int8
    msvit-edge bench WORK/bundle/engines/<the engine> --out WORK/bench          (with --bench)

with a calibration cache of its own (``MSVIT_EDGE_CACHE=WORK/cache``), so the build calibrates instead of reusing
an earlier run's graphs. For each step it reports the wall time, the peak resident memory of the largest process
(``ru_maxrss`` from ``os.wait4``: the step's own process or one of its children, such as the calibration child) and
the peak of the whole process tree (the RSS of the step and all its descendants summed, sampled every 0.2 s from
/proc; Linux only, else not reported). Targets (issue 25): export under 90 s; INT8 build under 4 minutes and 3 GB.
Results: docs/deit-s.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from msvit_edge.machine.environment import device_description, this_machine

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TARGETS = {"export": (90.0, None), "build": (240.0, 3.0)}  # seconds, GB of the process tree (None: no target)


@dataclass
class Step:
    name: str
    command: list[str]
    seconds: float
    peak_process_gb: float  # ru_maxrss: the largest single process
    peak_tree_gb: float | None  # sampled sum over the process tree
    returncode: int


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, help="Working folder (default: a temporary one, removed afterwards)")
    p.add_argument("--preset", default="vit_small_patch16_224")
    p.add_argument("--precision", default="int8", choices=("fp32", "fp16", "int8"))
    p.add_argument("--bench", action="store_true", help="Also time `msvit-edge bench` on the engine")
    p.add_argument("--json", type=Path, help="Write the rows here as well")
    p.add_argument("--export-args", default="", help="More export options, in one string")
    p.add_argument("--build-args", default="", help="More build options, in one string")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="msvit-edge-deit-s-"))
    try:
        steps = run_chain(work, args)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(steps)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "steps": [asdict(s) for s in steps]}, indent=1))


def run_chain(work: Path, args) -> list[Step]:
    work.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"MSVIT_EDGE_CACHE": str(work / "cache")}
    cli = [str(Path(sys.executable).with_name("msvit-edge"))]
    bundle, bench_out = work / "bundle", work / "bench"
    export = [*cli, "export", "--preset", args.preset, "--random-weights", "--fine-fraction", "0.5"]
    commands = {
        "export": [*export, "--out", str(bundle), "--force", *shlex.split(args.export_args)],
        "build": [*cli, "build", "--bundle", str(bundle), "--precision", args.precision, *shlex.split(args.build_args)],
    }
    steps = []
    for name, command in commands.items():
        steps.append(timed(name, command, env))
        if steps[-1].returncode != 0:
            return steps
    if args.bench:
        engine = next((bundle / "engines").glob(f"*-{args.precision}-*"))
        steps.append(timed("bench", [*cli, "bench", str(engine), "--out", str(bench_out), "--force"], env))
    return steps


def timed(name: str, command: list[str], env: dict) -> Step:
    """Run ``command``, its output passed through; wall time, ``ru_maxrss`` and the sampled tree peak."""
    print(f"$ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e9
    tree = sampler.peak / 1e9 if sampler.peak else None
    tree = None if tree is None else round(tree, 2)
    return Step(name, command, round(seconds, 1), round(peak, 2), tree, proc.returncode)


class TreeSampler(threading.Thread):
    """The largest summed RSS of a process and its descendants, read from /proc every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, sum(map(rss, descendants(self.pid))))

    def stop(self) -> None:
        self._done.set()
        self.join()


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:  # gone, or no /proc
            continue
    return found


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def machine() -> dict:
    env = this_machine()
    packages = {k: v for k, v in env["packages"].items() if k in ("torch", "onnxruntime", "nvidia-modelopt") and v}
    memory = os.sysconf("SC_PHYS_PAGES") * PAGE / 1e9 if hasattr(os, "sysconf") else None
    return {"device": device_description(env), "memory_gb": memory and round(memory, 1), "packages": packages} | {
        "date": time.strftime("%Y-%m-%d")
    }


def print_table(steps: list[Step]) -> None:
    print(f"\nmachine: {machine()}")
    print("| step | wall s | peak GB, largest process | peak GB, process tree | target |")
    print("|---|---|---|---|---|")
    for s in steps:
        seconds, gb = TARGETS.get(s.name, (None, None))
        target = ", ".join(t for t in (seconds and f"< {seconds:.0f} s", gb and f"< {gb:.0f} GB") if t)
        tree = "-" if s.peak_tree_gb is None else f"{s.peak_tree_gb:.2f}"
        failed = "" if s.returncode == 0 else f" (exit {s.returncode})"
        print(f"| {s.name}{failed} | {s.seconds:.1f} | {s.peak_process_gb:.2f} | {tree} | {target or '-'} |")


if __name__ == "__main__":
    main()
