"""TensorRT engine build: Polygraphy's loaders, one profile per bucket, the precision read back and checked.

``build_engines`` parses each graph into a network (strongly typed where TensorRT has it), adds the stage's
profiles (``EngineShapes.profiles``), builds and saves the plan, then reads back what TensorRT made (``trt_inspect``:
profiles, device memory per profile, every layer's precision) and fails a build that lacks the precision it asked
for. Beside the plans it writes the same build as trtexec scripts (``trt_trtexec``).

Given the bundle's plain-ViT graph (``vit``: images -> logits, the same weights with every token fine), it also
builds ``vit.plan``, the baseline ``bench`` times MSViT against, at the same precision and with the same check.
A plain ViT in FP32 beside an FP16 or INT8 MSViT would flatter MSViT, so a ``vit`` graph that does not carry the
requested precision (``graph_precisions``) is not built, and the facts say why (``skipped``).

``timing_cache_file`` says where the builder's timings live between builds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from msvit_edge.bundle import Bundle
from msvit_edge.engines.trt_boundary import capabilities, family, import_tensorrt, tensorrt_errors
from msvit_edge.engines.trt_inspect import (
    check_precision,
    comparison_gap,
    graph_precisions,
    network_precisions,
    read_back,
)
from msvit_edge.engines.trt_shapes import COMPARISON, EngineShapes, ProfileShapes, stages
from msvit_edge.engines.trt_trtexec import TRTEXEC_FAMILIES, trtexec_commands, trtexec_script
from msvit_edge.errors import MsvitEdgeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Options:
    precision: str
    strongly_typed: bool  # the encoders'; the tokenizer is strongly typed wherever TensorRT can
    workspace_gb: float | None
    opt_level: int | None
    timing_cache: Path | None


def build_engines(
    graphs: dict[str, str | Path],
    shapes: Bundle | EngineShapes,
    out_dir: Path,
    precision: str,
    workspace_gb: float | None = None,
    opt_level: int | None = None,
    timing_cache: Path | None = None,
    strongly_typed: bool | None = None,
) -> dict:
    """Build ``tokenizer.plan``, ``encoder.plan``, ``encoder_masked.plan`` (and ``vit.plan``) into ``out_dir``;
    returns the facts for the engine manifest (version, capabilities, per-engine profiles, memory, layer
    precisions, trtexec files, and the engines not built with the reason).

    Args:
        graphs: Stage -> ONNX graph of that precision (the tokenizer's stays FP32). ``vit``, optional: the plain
            ViT, built at ``precision`` when its graph carries that precision, else listed in ``skipped``.
        shapes: The bundle (its manifest's inputs and bucket plan), or the shapes themselves.
        out_dir: Folder for the plans, their layer information and the trtexec scripts.
        precision: fp32, fp16 or int8; a build that does not get it raises ``MsvitEdgeError``.
        workspace_gb: Builder workspace limit (None: TensorRT's default).
        opt_level: Builder optimisation level 0..5 (None: TensorRT's default, 3).
        timing_cache: Timing cache to load and update (None: none kept; ``timing_cache_file`` says where).
        strongly_typed: None: strongly typed where TensorRT has it; False: 10.x's builder flags.
    """
    trt = import_tensorrt()
    with tensorrt_errors("TensorRT's capabilities could not be read"):
        caps = capabilities(trt)
    shapes = shapes if isinstance(shapes, EngineShapes) else EngineShapes.from_bundle(shapes)
    opts = _Options(precision, _typing(caps, strongly_typed), workspace_gb, opt_level, timing_cache)
    skipped = _skipped_comparison(graphs, shapes, precision)
    built = {stage: graphs[stage] for stage in stages(graphs) if stage not in skipped}
    engines = {
        stage: _build_stage(trt, caps, stage, Path(graph), shapes, out_dir, opts) for stage, graph in built.items()
    }
    scripts = _write_trtexec(built, shapes, out_dir, opts)
    return {
        "tensorrt_version": caps["version"],
        "capabilities": caps,
        "family": family(caps),
        "strongly_typed": opts.strongly_typed,
        "engines": engines,
        "skipped": skipped,
        "timing_cache": None if timing_cache is None else os.path.relpath(timing_cache, out_dir),
        "trtexec": scripts,
    }


def _skipped_comparison(graphs: dict, shapes: EngineShapes, precision: str) -> dict[str, str]:
    """{"vit": why} when a plain-ViT graph is given but cannot be a fair baseline here; else {}."""
    if COMPARISON not in graphs:
        return {}
    if COMPARISON not in shapes.inputs:
        why = "the bundle's manifest lists no vit graph (exported before plain-ViT graphs): export it again"
    else:
        why = comparison_gap(precision, graph_precisions(graphs[COMPARISON]))
    if why is None:
        return {}
    log.info(f"tensorrt: {COMPARISON}.plan not built: {why}")
    return {COMPARISON: why}


def _typing(caps: dict, requested: bool | None) -> bool:
    if requested is None:
        requested = caps["strongly_typed"] or not caps["precision_flags"]
    if requested and not caps["strongly_typed"]:
        raise MsvitEdgeError(f"TensorRT {caps['version']} has no strongly typed networks: use TensorRT >= 10.1")
    if not requested and not caps["precision_flags"]:
        raise MsvitEdgeError(
            f"a weakly typed build needs BuilderFlag.FP16/INT8, which TensorRT {caps['version']} removed (every "
            "network is strongly typed there): build from the precision graphs"
        )
    return requested


def _build_stage(
    trt: ModuleType, caps: dict, stage: str, graph: Path, shapes: EngineShapes, out_dir: Path, opts: _Options
) -> dict:
    """Build one stage's engine, save it, read it back and check its precision."""
    typed = opts.strongly_typed if stage != "tokenizer" else caps["strongly_typed"]
    precision = opts.precision if stage != "tokenizer" else "fp32"  # the gate's decisions stay FP32
    flags = [] if typed else _precision_flags_trt10(trt, precision)
    plan = out_dir / f"{stage}.plan"
    start = time.perf_counter()
    with tensorrt_errors(f"TensorRT could not build the {stage} engine from {graph.name}"):
        engine, network = _build_trt(trt, graph, shapes.profiles(stage), plan, typed, flags, opts)
        seconds = time.perf_counter() - start
        facts, info = read_back(trt, engine)
    (out_dir / f"{stage}.layers.json").write_text(json.dumps(info, indent=1))
    evidence = check_precision(stage, precision, facts["layers"], network)
    log.info(
        f"tensorrt: {plan.name} from {graph.name}: {len(facts['profiles'])} profile(s), {seconds:.1f} s, "
        f"{plan.stat().st_size / 1e6:.1f} MB, layers {facts['layers']['profiles'][0]['precisions']}"
    )
    head = {"file": plan.name, "graph": graph.name, "strongly_typed": typed, "flags": [str(f) for f in flags]}
    return (
        head
        | {"seconds": seconds}
        | facts
        | {"network": network, "precision": {"requested": precision, "evidence": evidence}}
    )


def _precision_flags_trt10(trt: ModuleType, precision: str) -> list:
    """10.x's builder flags for a weakly typed build (Q/DQ INT8 needs INT8; FP16 lets the rest run in half)."""
    return {"fp32": [], "fp16": [trt.BuilderFlag.FP16], "int8": [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]}[precision]


def _set_flags_trt10(flags: list) -> Callable:
    def apply(builder: Any, network: Any, config: Any) -> None:  # PostprocessConfig's signature
        for flag in flags:
            config.set_flag(flag)

    return apply


def _build_trt(
    trt: ModuleType, graph: Path, profiles: list[ProfileShapes], plan: Path, typed: bool, flags: list, opts: _Options
) -> tuple[Any, dict[str, int]]:
    """Parse, configure, build and save through Polygraphy's loaders; returns (engine, network tensor counts)."""
    from polygraphy.backend.trt import (  # lazy: Polygraphy's TensorRT loaders serve only where TensorRT runs
        CreateConfig,
        EngineFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
        SaveEngine,
    )

    builder, network, parser = NetworkFromOnnxPath(str(graph), strongly_typed=typed)()
    counts = network_precisions(network)
    cache = None if opts.timing_cache is None else str(opts.timing_cache)
    pools = None if opts.workspace_gb is None else {trt.MemoryPoolType.WORKSPACE: int(opts.workspace_gb * 2**30)}
    config = CreateConfig(
        profiles=[_polygraphy_profile(Profile(), p) for p in profiles],
        load_timing_cache=cache,
        memory_pool_limits=pools,
        builder_optimization_level=opts.opt_level,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,  # the inspector's per-layer types need it
    )
    if flags:
        config = PostprocessConfig(config, _set_flags_trt10(flags))
    engine = SaveEngine(EngineFromNetwork((builder, network, parser), config, save_timing_cache=cache), str(plan))()
    return engine, counts


def _polygraphy_profile(shapes_profile: Any, shapes: ProfileShapes) -> Any:
    """One of ``EngineShapes.profiles`` written into a Polygraphy ``Profile`` (a format, not a second source)."""
    for name, (lo, opt, hi) in shapes.items():
        shapes_profile.add(name, min=lo, opt=opt, max=hi)
    return shapes_profile


def _write_trtexec(graphs: dict, shapes: EngineShapes, out_dir: Path, opts: _Options) -> dict[str, str]:
    """trtexec scripts for both TensorRT families beside the engines; returns {family: file name}."""
    # Paths relative to the engine directory, which moves with its bundle (a temporary build folder beside the
    # final one gives the same relative paths).
    rel = {s: os.path.relpath(Path(p).resolve(), out_dir.resolve()) for s, p in graphs.items()}
    cache = (
        "timing.cache"
        if opts.timing_cache is None
        else os.path.relpath(Path(opts.timing_cache).resolve(), out_dir.resolve())
    )
    files = {}
    for fam in TRTEXEC_FAMILIES:
        if fam == "11" and not opts.strongly_typed:
            continue  # a weakly typed build has no TensorRT 11 equivalent
        cmds = trtexec_commands(
            rel, shapes, opts.precision, fam, cache, opts.workspace_gb, opts.opt_level, opts.strongly_typed
        )
        path = out_dir / f"trtexec-trt{fam}.sh"
        path.write_text(trtexec_script(cmds, fam))
        path.chmod(0o755)
        files[fam] = path.name
    return files


def timing_cache_file(shared: Path, out: Path, tmp: Path, key: str) -> Path:
    """The timing cache a build loads and updates, named by ``key`` (TensorRT version and device: another version's
    or GPU's timings do not apply, and Polygraphy loads a cache with ``ignore_mismatch=False``).

    Args:
        shared: The bundle's engines folder (created when missing): used when the engine folder ``out`` is in it and
            it can be written, so the cache outlives engine folders (--force rebuilds, other precisions reuse it).
        out: The engine folder the build will become.
        tmp: The folder the build writes (``out`` once it succeeds): the cache goes there for an ``out`` elsewhere
            or a read-only bundle, seeded with a previous build's cache at ``out``.
        key: What the timings depend on, e.g. ``"10.3.0-orin"``.
    """
    name = f"tensorrt-{key}.timing.cache"
    if out.resolve().is_relative_to(shared.resolve()) and _writable(shared):
        return shared / name
    if (out / name).is_file():
        shutil.copyfile(out / name, tmp / name)
    return tmp / name


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)
