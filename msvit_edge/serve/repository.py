"""``triton_repo``: an engine folder (or a bundle) -> a standard Triton model repository.

REPO/msvit/                      the router (python backend, dynamic batching): uint8 images or encoded image files in;
                                 logits, top class and token count out; ``labels.txt`` holds the class names
REPO/msvit_tokenizer/            the static-shape tokenizer graph                                    (stages "bls")
REPO/msvit_encoder_b<i>/         the encoder, one model per token-count bucket (unmasked: every image fills its rows)
REPO/msvit_encoder_masked_b<i>/  the same with the key mask (images with fewer tokens than the call's rows)
REPO/msvit_repo.json             what it was written from (the marker ``--force`` checks)

Stages ``bls``: the router calls the stage models through BLS. TensorRT engines always serve so: ``tensorrt_plan``
models whose one instance selects its bucket's optimisation profile. ONNX Runtime engines can (python-backend stage
models holding an ONNX Runtime session: the Triton build pytriton ships has no onnxruntime backend), but serve
``inline`` by default: the router itself holds the ONNX Runtime pipeline, run from a copy of the engine folder (hard
links, the bundle's layout kept, so it checks every file's sha256 as ``build`` recorded it) in ``msvit/1/source``.
Each BLS hop is a round trip between stub processes through shared memory, and on a small CPU model up to 7 of them
per batch cost more than the arithmetic (docs/serving.md). Models' code is ``msvit_edge.serve.models``: each
``model.py`` here only imports it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from msvit_edge.bundle.engine_folder import EngineDir, open_source
from msvit_edge.bundle.reader import Bundle
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, atomic_dir
from msvit_edge.serve.config import RouterSpec, parse, router_config, stage_config

KIND = "msvit-edge-triton-repo"
ROUTER = "msvit"
TOKENIZER = "msvit_tokenizer"
SOURCE = "source"  # inline: the router's copy of the engine folder, in its version folder
FOLDER = FolderKind(
    "a Triton repository", "msvit_repo.json", lambda m: m.get("kind") == KIND, ("msvit_repo.json", "msvit*")
)
LOADER = '''"""Written by msvit-edge triton-repo. The code is msvit_edge.serve.models: the server's Python needs
msvit-edge's light runtime (numpy, onnxruntime; e.g. pip install msvit_edge-*.whl in the container)."""

import os
import site

# The python backend's stub embeds Python without putting PYTHONPATH on sys.path, and would skip the .pth files of an
# entry (an editable install's) anyway: each entry is added as a site folder.
for _entry in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    site.addsitedir(_entry)

from msvit_edge.serve.models import {cls} as TritonPythonModel  # noqa: E402, F401
'''


def encoder_model(bucket: int, masked: bool) -> str:
    """The stage model that encodes one bucket's calls (the router's BLS target)."""
    return f"msvit_encoder{'_masked' if masked else ''}_b{bucket}"


@dataclass(frozen=True)
class Repository:
    path: Path
    backend: str
    models: tuple[str, ...]
    stages: str  # inline: the router runs the pipeline; bls: it calls the stage models
    runs_here: bool  # python-backend models run on the pytriton server; tensorrt_plan models need a GPU server


def triton_repo(source: str | Path | Bundle | EngineDir, out: str | Path, force: bool = False,
                class_names: list[str] | None = None, queue_delay_us: int = 500, stages: str | None = None,
                instances: int = 2, threads: int | None = None) -> Repository:  # fmt: skip
    """Write the Triton model repository for an engine folder (ONNX Runtime or TensorRT) or a bundle (its FP32
    graphs in ONNX Runtime).

    Args:
        source: The engine folder or bundle, or its path.
        out: The repository folder; an existing one is replaced only with ``force`` and only if msvit-edge wrote it.
        force: Replace an existing repository.
        class_names: Names of the classes in logit order (default: the class indices).
        queue_delay_us: How long Triton's dynamic batcher waits for more images to join a batch.
        stages: ``inline`` (ONNX Runtime's default: the router runs the pipeline) or ``bls`` (stage models).
        instances: Router instances. Two overlap one batch's Python glue and transfers with another's arithmetic
            (on 2 CPU cores the demo model served 1.2x the throughput of one instance; docs/serving.md).
        threads: ONNX Runtime's intra-op threads in each inline router instance (default: ONNX Runtime's, all cores).
    """
    source = open_source(source)
    backend = source.backend if isinstance(source, EngineDir) else "onnxruntime"
    if backend not in ("onnxruntime", "tensorrt"):
        raise MsvitEdgeError(f"a Triton repository serves ONNX Runtime or TensorRT engines, not {backend}", source.path)
    stages = stages or ("inline" if backend == "onnxruntime" else "bls")
    if stages not in ("inline", "bls") or (stages == "inline" and backend != "onnxruntime"):
        raise MsvitEdgeError(f"stages must be bls, or inline for ONNX Runtime engines; got {stages} ({backend})")
    bundle = source.bundle if isinstance(source, EngineDir) else source
    if bundle.dense:  # the router's outputs (logits [B, K], class, tokens) are a classifier's
        raise MsvitEdgeError(
            "serving a segmentation bundle is not built yet (the Triton router answers classes): run it with "
            "`msvit-edge bench` or the Python pipeline (msvit_edge.engines.open_pipeline)",
            source.path,
        )
    spec = _router_spec(bundle, queue_delay_us, instances, stages, source, threads)
    texts = {ROUTER: router_config(ROUTER, spec)}
    texts |= {} if stages == "inline" else _stage_texts(source, bundle, backend)
    configs = {name: (text, parse(text, f"{name}/config.pbtxt")) for name, text in texts.items()}
    with atomic_dir(out, FOLDER, force) as tmp:
        for name, (text, _) in configs.items():
            (tmp / name / "1").mkdir(parents=True)
            (tmp / name / "config.pbtxt").write_text(text)
        if stages == "inline":
            _mirror(source, bundle, tmp / ROUTER / "1" / SOURCE)
        else:
            _place_stages(tmp, source, bundle, backend)
        _place_router(tmp, bundle, class_names)
        marker = {"kind": KIND, "schema_version": 1, "backend": backend, "source": str(Path(source.path).resolve()),
                  "precision": getattr(source, "precision", "fp32"), "stages": stages,
                  "models": sorted(configs)}  # fmt: skip
        (tmp / FOLDER.marker).write_text(json.dumps(marker, indent=2) + "\n")
    return Repository(Path(out), backend, tuple(sorted(configs)), stages, backend == "onnxruntime")


def _router_spec(bundle: Bundle, delay_us: int, instances: int, stages: str, source: Bundle | EngineDir,
                 threads: int | None) -> RouterSpec:  # fmt: skip
    pre, plan = bundle.record.preprocessing, bundle.plan
    classes = bundle.record.graphs["encoder"].outputs[0].shape[-1]
    params = {"threshold": repr(bundle.threshold), "mean": json.dumps(list(pre.mean)), "std": json.dumps(list(pre.std)),
              "buckets": json.dumps(plan.to_dict()), "size": str(pre.size), "stages": stages}  # fmt: skip
    if stages == "inline":  # the engine folder's (or bundle's) place inside the router's copy of it
        params["source"] = str(Path(source.path).resolve().relative_to(_root(source, bundle)))
        params["threads"] = str(threads or 0)
    return RouterSpec(pre.size, len(pre.mean), int(classes), plan.batch[2], delay_us, instances, params)


def _stages(bundle: Bundle) -> dict[str, tuple[str, int | None]]:
    """{model name: (bundle graph, bucket)} of every stage model."""
    stages = {TOKENIZER: ("tokenizer", None)}
    for i in range(len(bundle.plan.buckets)):
        stages |= {encoder_model(i, False): ("encoder", i), encoder_model(i, True): ("encoder_masked", i)}
    return stages


def _stage_texts(source: Bundle | EngineDir, bundle: Bundle, backend: str) -> dict[str, str]:
    if backend == "tensorrt":
        _check_profiles(source, bundle)
    texts = {}
    for name, (graph, bucket) in _stages(bundle).items():
        io = bundle.record.graphs[graph]
        if backend == "tensorrt":
            source.graph(graph)  # the engine manifest must name a plan for every stage
            texts[name] = stage_config(name, io.inputs, io.outputs, "tensorrt_plan", bucket)
        else:
            texts[name] = stage_config(name, io.inputs, io.outputs, "python")
    return texts


def _check_profiles(source: EngineDir, bundle: Bundle) -> None:
    """Encoder model ``_b<i>`` selects profile i: where the build recorded the engines' profiles (``tensorrt.json``),
    profile i must span bucket i's tokens and name only the graph's inputs, or a bucket's calls would run in another
    bucket's profile (TensorRT refuses the shape, or runs it padded to the wrong range)."""
    engines, facts = source.build_facts.get("engines", {}), source.path / "tensorrt.json"  # none: built by trtexec
    for stage in ("encoder", "encoder_masked"):
        profiles, names = engines.get(stage, {}).get("profiles"), {t.name for t in bundle.record.graphs[stage].inputs}
        buckets = bundle.plan.buckets
        if profiles is None:  # not recorded for this engine
            continue
        if len(profiles) != len(buckets):
            raise MsvitEdgeError(f"{stage}.plan has {len(profiles)} profiles for {len(buckets)} buckets", facts)
        for i, (profile, bucket) in enumerate(zip(profiles, buckets, strict=True)):
            tokens = {tuple(shape[1] for shape in ranges) for ranges in profile.values()}  # (min, opt, max) of axis 1
            if not set(profile) <= names or tokens != {(bucket.min, bucket.opt, bucket.max)}:
                raise MsvitEdgeError(
                    f"{stage}.plan's profile {i} ({profile}) is not bucket {i}'s tokens {bucket.min}..{bucket.max} "
                    f"over inputs {sorted(names)}: rebuild the engines for this bundle", facts
                )  # fmt: skip


def _place_stages(tmp: Path, source: Bundle | EngineDir, bundle: Bundle, backend: str) -> None:
    for name, (graph, _) in _stages(bundle).items():
        if backend == "tensorrt":
            _link(source.graph(graph), tmp / name / "1" / "model.plan")
            continue
        _link(source.graph(graph), tmp / name / "1" / "model.onnx")
        data = bundle.record.graphs[graph].data
        if data and isinstance(source, Bundle):  # weights beside a graph over 2 GB, found by its relative name
            _link(bundle.path / data, tmp / name / "1" / data)
        (tmp / name / "1" / "model.py").write_text(LOADER.format(cls="OrtStage"))


def _place_router(tmp: Path, bundle: Bundle, names: list[str] | None) -> None:
    (tmp / ROUTER / "1" / "model.py").write_text(LOADER.format(cls="Router"))
    classes = bundle.record.graphs["encoder"].outputs[0].shape[-1]
    names = names or [str(i) for i in range(classes)]
    if len(names) != classes:
        raise MsvitEdgeError(f"{len(names)} class names given for a model of {classes} classes")
    (tmp / ROUTER / "labels.txt").write_text("\n".join(names) + "\n")


def _files(source: Bundle | EngineDir, bundle: Bundle) -> list[Path]:
    """Every file opening ``source`` reads: the bundle's manifest and graphs, and an engine folder's manifest and the
    files it runs (the precision graphs, under the bundle)."""
    files = [bundle.path / "manifest.json", *(f for name in bundle.record.graphs for f in bundle.graph_files(name))]
    if isinstance(source, EngineDir):
        runs = source.record.files.keys() if source.record.files is not None else source.record.graphs.values()
        files += [source.path / "manifest.json", *(source.path / f for f in runs)]
    return list(dict.fromkeys(f.resolve() for f in files))  # an FP32 engine runs the bundle's own graphs


def _root(source: Bundle | EngineDir, bundle: Bundle) -> Path:
    return Path(os.path.commonpath([Path(source.path).resolve(), *_files(source, bundle)]))


def _mirror(source: Bundle | EngineDir, bundle: Bundle, into: Path) -> None:
    """The files of ``source`` under ``into`` at their places relative to one another, so the copy opens as the
    original does (an engine folder finds its bundle and its precision graphs by relative paths)."""
    root = _root(source, bundle)
    for file in _files(source, bundle):
        (into / file.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        _link(file, into / file.relative_to(root))


def _link(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (engines can be large), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
