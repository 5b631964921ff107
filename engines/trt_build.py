"""TensorRT engine build: Polygraphy's loaders, one profile per bucket, the precision read back and checked.

``build_engines`` parses each graph into a network (strongly typed where TensorRT has it), adds the stage's
profiles (``EngineShapes.profiles``), builds and saves the plan, then reads back what TensorRT made: the profiles,
device memory per profile, and every layer's precision through the engine inspector. A build that asked for FP16 or
INT8 and shows none fails (``check_precision``): other projects shipped FP32 engines labelled FP16 when TensorRT 11
silently dropped the old precision flags.

Given the bundle's plain-ViT graph (``vit``: images -> logits, the same weights with every token fine), it also
builds ``vit.plan``, the baseline ``bench`` times MSViT against, at the same precision and with the same check.
A plain ViT in FP32 beside an FP16 or INT8 MSViT would flatter MSViT, so a ``vit`` graph that does not carry the
requested precision (``graph_precisions``) is not built, and the facts say why (``skipped``).

``trtexec_commands`` writes the same build as trtexec command lines for TensorRT 10.x and 11.x, so a Jetson can
rebuild with JetPack's trtexec and no Python at all. Only ``build_engines`` needs TensorRT; the rest is pure.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from msvit_edge.bundle import GRAPHS, Bundle
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine.environment import package_version, tensorrt_version

log = logging.getLogger(__name__)

Shape = tuple[int, ...]
ProfileShapes = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)

# Precision classes, most reduced first: a layer counts as the most reduced precision among its tensors.
PRECISIONS = ("INT8", "FP8", "FP16", "BF16", "FP32")
WANTED = {"fp16": ("FP16", "BF16"), "int8": ("INT8",)}
_PRECISION_PATTERNS = (  # (pattern, class) in match order: BFLOAT16 before FLOAT, UINT8 is not INT8
    (re.compile(r"BF16|BFLOAT16"), "BF16"),
    (re.compile(r"FP8|E4M3"), "FP8"),
    (re.compile(r"(?<!U)INT8"), "INT8"),
    (re.compile(r"FP16|HALF"), "FP16"),
    (re.compile(r"FP32|FLOAT"), "FP32"),
)
_PROFILE_SUFFIX = re.compile(r" \[profile (\d+)\]$")  # TensorRT 10.16 lists each layer once per profile
TRTEXEC_FAMILIES = ("10", "11")
COMPARISON = "vit"  # the plain ViT of the same weights: optional, built only for bench's speedup
POLYGRAPHY_MIN = "0.53.4"  # pyproject.toml's floor: the first Polygraphy that works with TensorRT 11
_ONNX_PRECISIONS = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "INT8": "INT8", "FLOAT8E4M3FN": "FP8"}


def stages(graphs: dict) -> list[str]:
    """The engines to build for ``graphs``: every MSViT stage, then the plain ViT where it is given."""
    return [*GRAPHS, *([COMPARISON] if COMPARISON in graphs else [])]


@dataclass(frozen=True)
class EngineShapes:
    """The shapes every engine is built for: each stage's inputs and the bucket plan.

    A dynamic dim (a name, as in a bundle manifest) on axis 0 is the batch, on axis 1 the tokens; static inputs
    (the tokenizer's threshold) get no profile entry.
    """

    plan: BucketPlan
    inputs: dict[str, dict[str, list[int | str]]]  # stage -> input name -> shape

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> EngineShapes:
        graphs = bundle.manifest["graphs"]
        return cls(bundle.plan, {s: {i["name"]: i["shape"] for i in graphs[s]["inputs"]} for s in stages(graphs)})

    @classmethod
    def standard(cls, plan: BucketPlan, embed_dim: int, image_shape: tuple[int, int, int]) -> EngineShapes:
        """The bundle contract's inputs (``msvit_edge.bundle``) for a model of this width and image size."""
        tokens = ["batch", "tokens", embed_dim]
        return cls(
            plan,
            {
                "tokenizer": {"images": ["batch", *image_shape], "threshold": []},
                "encoder": {"tokens": tokens},
                "encoder_masked": {"tokens": tokens, "mask": ["batch", "tokens"]},
                COMPARISON: {"images": ["batch", *image_shape]},
            },
        )

    def profiles(self, stage: str) -> list[ProfileShapes]:
        """The stage's optimisation profiles: one per bucket when it takes tokens, else one over the batch."""
        if stage not in self.inputs:
            raise MsvitEdgeError(f"no input shapes for the {stage} graph: the bundle's manifest does not list it")
        inputs = self.inputs[stage]
        has_tokens = any(len(s) > 1 and isinstance(s[1], str) for s in inputs.values())
        ranges = [(b.min, b.opt, b.max) for b in self.plan.buckets] if has_tokens else [None]
        return [{n: _range(n, s, self.plan.batch, r) for n, s in inputs.items() if _dynamic(s)} for r in ranges]


def _dynamic(shape: list[int | str]) -> bool:
    return any(isinstance(d, str) for d in shape)


def _range(name: str, shape: list[int | str], batch: tuple[int, int, int], tokens: tuple | None) -> tuple:
    """(min, opt, max) shapes of one input: batch on axis 0, tokens on axis 1, the rest static."""
    axes = {0: batch, 1: tokens}
    out = []
    for i in range(3):
        dims = []
        for axis, d in enumerate(shape):
            if isinstance(d, str) and axes.get(axis) is None:
                raise MsvitEdgeError(f"input {name!r} has a dynamic dim {d!r} on axis {axis}: only batch and tokens")
            dims.append(axes[axis][i] if isinstance(d, str) else int(d))
        out.append(tuple(dims))
    return tuple(out)


# ---- trtexec ----------------------------------------------------------------------------------------------------


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


# ---- precision read-back ----------------------------------------------------------------------------------------


def tensor_precision(text: str) -> str | None:
    """The precision class of a tensor type named by the engine inspector ("Half", "Row major linear FP16 format")
    or by ``trt.DataType`` ("HALF")."""
    upper = text.upper()
    return next((cls for pattern, cls in _PRECISION_PATTERNS if pattern.search(upper)), None)


def tensor_type(described: dict) -> str:
    """A layer tensor's type as the inspector describes it: ``"Datatype"`` on TensorRT 11, ``"Format/Datatype"``
    before (a dict, not a TensorRT object). 11.x split the field and may omit ``"Format"``, whose layout words never
    decide the type."""
    return described.get("Datatype") or described.get("Format/Datatype") or ""


def layer_precisions(info: dict) -> dict:
    """Layer counts by precision class, per optimisation profile, from the engine inspector's JSON (built with
    detailed profiling verbosity).

    Returns {"profiles": [{"layers": n, "precisions": {class: n}}, ...]}: one entry per profile where the inspector
    lists every layer once per profile (10.16: names end in " [profile N]"; a name without one is profile 0), else
    one entry that holds for every profile. A layer counts as the most reduced precision among its input and output
    tensors, "other" when none has one (shape and index kernels). Myelin regions are listed per kernel ("kgen",
    "gemm", ...) with typed tensors since TensorRT 9/10, so fused layers hide no precision.
    """
    entries = info.get("Layers", [])
    if any(not isinstance(entry, dict) for entry in entries):
        raise MsvitEdgeError("the engine has no detailed layer information (profiling verbosity is not DETAILED)")
    counts: dict[int, Counter[str]] = {}
    for entry in entries:
        match = _PROFILE_SUFFIX.search(str(entry.get("Name", "")))
        found = {tensor_precision(tensor_type(t)) for t in entry.get("Inputs", []) + entry.get("Outputs", [])}
        found.discard(None)
        profile = counts.setdefault(int(match.group(1)) if match else 0, Counter())
        profile[min(found, key=PRECISIONS.index) if found else "other"] += 1
    listed = [counts[k] for k in sorted(counts)] or [Counter()]
    return {"profiles": [{"layers": c.total(), "precisions": dict(c)} for c in listed]}


def check_precision(stage: str, precision: str, built: dict, parsed: dict[str, int]) -> str:
    """How the build is known to have the requested precision; ``MsvitEdgeError`` when a profile lacks it.

    Args:
        stage: Engine name, for the message.
        precision: What was asked: fp32 (nothing to check), fp16 or int8.
        built: ``layer_precisions`` of the built engine.
        parsed: Tensor counts by precision class in the parsed network, before the build (names the cause).
    """
    wanted = WANTED.get(precision)
    if wanted is None:
        return "fp32: nothing to check"
    profiles = built["profiles"]
    missing = [i for i, p in enumerate(profiles) if not any(p["precisions"].get(w) for w in wanted)]
    if not missing:
        each = f" (each of {len(profiles)} profiles)" if len(profiles) > 1 else ""
        return f"engine layers: {profiles[0]['precisions']}{each}"
    where = f" in profile {missing[0]}" if len(profiles) > 1 else ""
    why = (
        f"TensorRT built it as {profiles[missing[0]]['precisions']} (see {stage}.layers.json)"
        if any(parsed.get(p) for p in wanted)
        else f"its graph has no {wanted[0]} tensors ({parsed}): it is not a {precision} graph from the precision pass"
    )
    raise MsvitEdgeError(f"asked for {precision} but the {stage} engine has no {wanted[0]} layer{where}: {why}")


def graph_precisions(path: str | Path) -> dict[str, int]:
    """Tensor counts by precision class in an ONNX graph, read without TensorRT.

    Counts initializers, ``Constant`` values, ``Cast`` targets and typed values: AutoCast leaves FP16 weights and
    casts, ModelOpt's Q/DQ leaves INT8 zero points, so a graph from the precision pass shows its precision here.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    types = [t.data_type for t in graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            if (node.op_type, attr.name) == ("Cast", "to"):
                types.append(attr.i)
            elif (node.op_type, attr.name) == ("Constant", "value"):
                types.append(attr.t.data_type)
    types += [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)]
    names = (onnx.TensorProto.DataType.Name(t) for t in types if t)
    return dict(Counter(_ONNX_PRECISIONS[n] for n in names if n in _ONNX_PRECISIONS))


def comparison_gap(precision: str, graph: dict[str, int]) -> str | None:
    """Why the plain-ViT graph with these tensor counts (``graph_precisions``) is no baseline at ``precision``.

    None when it carries the precision (or fp32 was asked). Timing an FP32 plain ViT against an FP16 or INT8 MSViT
    would credit the precision to the mixed-scale tokens.
    """
    wanted = WANTED.get(precision)
    if wanted is None or any(graph.get(p) for p in wanted):
        return None
    return (
        f"the plain-ViT graph has no {wanted[0]} tensors ({graph}): the precision pass made no {precision} vit graph, "
        f"and an FP32 plain ViT against a {precision} MSViT would overstate the speedup"
    )


# ---- the TensorRT boundary ----------------------------------------------------------------------------------------


@contextmanager
def tensorrt_errors(what: str, path: Path | None = None) -> Iterator[None]:
    """Whatever TensorRT or Polygraphy raises in the block, as one ``MsvitEdgeError`` line: ``what`` failed, why, and
    the TensorRT and Polygraphy versions.

    They raise many types (PolygraphyException, RuntimeError, TypeError; AttributeError where a version lacks an
    API), and none is actionable without the versions: a Polygraphy older than TensorRT 11 fails deep inside.
    """
    try:
        yield
    except MsvitEdgeError:
        raise
    except Exception as e:  # the boundary: everything below it is TensorRT's or Polygraphy's
        text = str(e).strip()
        first = f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
        raise MsvitEdgeError(f"{what}: {first} ({versions()})", path) from e


def versions() -> str:
    """The installed TensorRT and Polygraphy versions, and the upgrade command where Polygraphy is below the floor."""
    trt_version, polygraphy = tensorrt_version(), package_version("polygraphy")
    text = f"TensorRT {trt_version or 'not found'}, Polygraphy {polygraphy or 'not found'}"
    if polygraphy and _release(polygraphy) < _release(POLYGRAPHY_MIN):
        text += f"; msvit-edge needs Polygraphy >= {POLYGRAPHY_MIN}: pip install -U 'polygraphy>={POLYGRAPHY_MIN}'"
    return text


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


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


# ---- the build (needs TensorRT) ---------------------------------------------------------------------------------


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
    from msvit_edge.engines.tensorrt import capabilities, family, import_tensorrt

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
        facts, info = _read_back(trt, engine)
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
    from polygraphy.backend.trt import (
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
    for name, (lo, opt, hi) in shapes.items():
        shapes_profile.add(name, min=lo, opt=opt, max=hi)
    return shapes_profile


def network_precisions(network: Any) -> dict[str, int]:
    """Layer-output tensor counts by precision class in a parsed network (a strongly typed one's are final)."""
    counts: Counter[str] = Counter()
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        for output in range(layer.num_outputs):
            tensor = layer.get_output(output)
            counts[tensor_precision(tensor.dtype.name) or "other"] += 1
    return dict(counts)


def _read_back(trt: ModuleType, engine: Any) -> tuple[dict, dict]:
    """Profiles, device memory and layer precisions of a built engine, and the inspector's JSON."""
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    count = engine.num_optimization_profiles
    facts = {
        "profiles": [_profile_shapes(trt, engine, i) for i in range(count)],
        "device_memory": {
            "max": int(engine.device_memory_size_v2),
            "per_profile": [int(engine.get_device_memory_size_for_profile_v2(i)) for i in range(count)],
        },
        "layers": layer_precisions(info),
    }
    return facts, info


def _profile_shapes(trt: ModuleType, engine: Any, index: int) -> dict[str, list[list[int]]]:
    """{input: [min, opt, max]} of one profile, dynamic inputs only."""
    shapes = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and -1 in tuple(engine.get_tensor_shape(name)):
            shapes[name] = [list(map(int, s)) for s in engine.get_tensor_profile_shape(name, index)]
    return shapes


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
