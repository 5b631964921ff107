"""The TensorRT build as trtexec command lines, for TensorRT 10.x and 11.x: a Jetson can rebuild an engine directory
with JetPack's own trtexec and no Python at all. Pure: no TensorRT needed to write them.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from msvit_edge.engines.trt_shapes import EngineShapes, stages
from msvit_edge.errors import MsvitEdgeError

TRTEXEC_FAMILIES = ("10", "11")


def trtexec_commands(
    graphs: dict[str, str | Path],
    shapes: EngineShapes,
    precision: str,
    family: str,
    timing_cache: str | Path = "timing.cache",
    workspace_gb: float | None = None,
    opt_level: int | None = None,
    strongly_typed: bool = True,
) -> dict[str, str]:
    """The trtexec command line that builds each stage's engine, as ``build_engines`` does ({stage: line}).

    Args:
        graphs: Stage -> ONNX graph path, as the command should name it (relative to where it runs); ``vit`` is
            optional (the plain ViT: one profile over the batch, like the tokenizer, at ``precision``).
        shapes: The engines' input shapes and bucket plan.
        precision: fp32, fp16 or int8 (the graphs carry it; only 10.x's weakly typed build names it).
        family: ``"10"`` or ``"11"``: TensorRT 11's trtexec has no precision flags and is always strongly typed.
        timing_cache: The timing cache file trtexec loads and updates.
        workspace_gb: Builder workspace limit (None: TensorRT's default).
        opt_level: Builder optimisation level 0..5 (None: TensorRT's default).
        strongly_typed: False: 10.x's weakly typed build with --fp16/--int8 (absent from 11.x).
    """
    if family not in TRTEXEC_FAMILIES:
        raise ValueError(f"family must be one of {TRTEXEC_FAMILIES}, got {family!r}")
    if family == "11" and not strongly_typed:
        raise MsvitEdgeError("TensorRT 11 builds every network strongly typed: there is no weakly typed trtexec line")
    lines = {}
    for stage in stages(graphs):
        args = ["trtexec", f"--onnx={graphs[stage]}", f"--saveEngine={stage}.plan"]
        args += _typing_flags(family, precision if stage != "tokenizer" else "fp32", strongly_typed)
        for index, ranges in enumerate(shapes.profiles(stage)):
            args.append(f"--profile={index}")  # trtexec refuses repeated --minShapes without --profile
            for k, key in enumerate(("min", "opt", "max")):
                args.append(f"--{key}Shapes=" + ",".join(f"{n}:{'x'.join(map(str, s[k]))}" for n, s in ranges.items()))
        args += ["--noTF32", f"--timingCacheFile={timing_cache}"]  # FP32 means FP32, as in the Python build
        if workspace_gb is not None:
            args.append(f"--memPoolSize=workspace:{int(workspace_gb * 1024)}M")
        if opt_level is not None:
            args.append(f"--builderOptimizationLevel={opt_level}")
        args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={stage}.layers.json", "--skipInference"]
        lines[stage] = shlex.join(args)
    return lines


def _typing_flags(family: str, precision: str, strongly_typed: bool) -> list[str]:
    if family == "11":
        return []  # --stronglyTyped is a deprecated no-op there: every network is strongly typed
    if strongly_typed:
        return ["--stronglyTyped"]
    return {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[precision]


def trtexec_script(commands: dict[str, str], family: str) -> str:
    """A shell script that runs ``commands`` from the engine directory."""
    header = (
        f"#!/bin/sh\n# Rebuild this engine directory's engines with TensorRT {family}.x's own trtexec (no Python).\n"
        "# Engines only run on the GPU and TensorRT version that built them: run this on the target.\n"
        'set -e\ncd "$(dirname "$0")"\n'
    )
    return header + "".join(f"{line}\n" for line in commands.values())
