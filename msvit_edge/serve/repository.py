"""``triton_repo``: an engine folder (or a bundle) -> a standard Triton model repository.

REPO/msvit/                      the router (python backend, dynamic batching): uint8 images in; logits, top class and
                                 token count out; ``labels.txt`` holds the class names (Triton's classification)
REPO/msvit_tokenizer/            the static-shape tokenizer graph
REPO/msvit_encoder_b<i>/         the encoder, one model per token-count bucket (unmasked: every image fills its rows)
REPO/msvit_encoder_masked_b<i>/  the same with the key mask (images with fewer tokens than the call's rows)
REPO/msvit_repo.json             what it was written from (the marker ``--force`` checks)

ONNX Runtime engines become python-backend models that hold an ONNX Runtime session (the Triton build pytriton ships
has no onnxruntime backend, and so the same repository runs on CPU-only servers); TensorRT engines become
``tensorrt_plan`` models whose one instance selects its bucket's optimisation profile. Models' code is
``msvit_edge.serve.models``: each ``model.py`` here only imports it.
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
    runs_here: bool  # python-backend models run on the pytriton server; tensorrt_plan models need a GPU server


def triton_repo(source: str | Path | Bundle | EngineDir, out: str | Path, force: bool = False,
                class_names: list[str] | None = None, queue_delay_us: int = 500) -> Repository:  # fmt: skip
    """Write the Triton model repository for an engine folder (ONNX Runtime or TensorRT) or a bundle (its FP32
    graphs in ONNX Runtime).

    Args:
        source: The engine folder or bundle, or its path.
        out: The repository folder; an existing one is replaced only with ``force`` and only if msvit-edge wrote it.
        force: Replace an existing repository.
        class_names: Names of the classes in logit order (default: the class indices).
        queue_delay_us: How long Triton's dynamic batcher waits for more images to join a batch.
    """
    source = open_source(source)
    backend = source.backend if isinstance(source, EngineDir) else "onnxruntime"
    if backend not in ("onnxruntime", "tensorrt"):
        raise MsvitEdgeError(f"a Triton repository serves ONNX Runtime or TensorRT engines, not {backend}", source.path)
    bundle = source.bundle if isinstance(source, EngineDir) else source
    texts = _stage_texts(source, bundle, backend) | {
        ROUTER: router_config(ROUTER, _router_spec(bundle, queue_delay_us))
    }
    configs = {name: (text, parse(text, f"{name}/config.pbtxt")) for name, text in texts.items()}
    with atomic_dir(out, FOLDER, force) as tmp:
        for name, (text, _) in configs.items():
            (tmp / name / "1").mkdir(parents=True)
            (tmp / name / "config.pbtxt").write_text(text)
        _place_files(tmp, source, bundle, backend, class_names)
        marker = {"kind": KIND, "schema_version": 1, "backend": backend, "source": str(Path(source.path).resolve()),
                  "precision": getattr(source, "precision", "fp32"), "models": sorted(configs)}  # fmt: skip
        (tmp / FOLDER.marker).write_text(json.dumps(marker, indent=2) + "\n")
    return Repository(Path(out), backend, tuple(sorted(configs)), backend == "onnxruntime")


def _router_spec(bundle: Bundle, queue_delay_us: int) -> RouterSpec:
    pre, plan = bundle.record.preprocessing, bundle.plan
    classes = bundle.record.graphs["encoder"].outputs[0].shape[-1]
    params = {"threshold": repr(bundle.threshold), "mean": json.dumps(list(pre.mean)), "std": json.dumps(list(pre.std)),
              "buckets": json.dumps(plan.to_dict())}  # fmt: skip
    return RouterSpec(pre.size, len(pre.mean), int(classes), plan.batch[2], queue_delay_us, params)


def _stages(bundle: Bundle) -> dict[str, tuple[str, int | None]]:
    """{model name: (bundle graph, bucket)} of every stage model."""
    stages = {TOKENIZER: ("tokenizer", None)}
    for i in range(len(bundle.plan.buckets)):
        stages |= {encoder_model(i, False): ("encoder", i), encoder_model(i, True): ("encoder_masked", i)}
    return stages


def _stage_texts(source: Bundle | EngineDir, bundle: Bundle, backend: str) -> dict[str, str]:
    texts = {}
    for name, (graph, bucket) in _stages(bundle).items():
        io = bundle.record.graphs[graph]
        if backend == "tensorrt":
            source.graph(graph)  # the engine manifest must name a plan for every stage
            texts[name] = stage_config(name, io.inputs, io.outputs, "tensorrt_plan", bucket)
        else:
            texts[name] = stage_config(name, io.inputs, io.outputs, "python")
    return texts


def _place_files(tmp: Path, source: Bundle | EngineDir, bundle: Bundle, backend: str, names: list[str] | None) -> None:
    for name, (graph, _) in _stages(bundle).items():
        if backend == "tensorrt":
            _link(source.graph(graph), tmp / name / "1" / "model.plan")
            continue
        _link(source.graph(graph), tmp / name / "1" / "model.onnx")
        data = bundle.record.graphs[graph].data
        if data and isinstance(source, Bundle):  # weights beside a graph over 2 GB, found by its relative name
            _link(bundle.path / data, tmp / name / "1" / data)
        (tmp / name / "1" / "model.py").write_text(LOADER.format(cls="OrtStage"))
    (tmp / ROUTER / "1" / "model.py").write_text(LOADER.format(cls="Router"))
    classes = bundle.record.graphs["encoder"].outputs[0].shape[-1]
    names = names or [str(i) for i in range(classes)]
    if len(names) != classes:
        raise MsvitEdgeError(f"{len(names)} class names given for a model of {classes} classes")
    (tmp / ROUTER / "labels.txt").write_text("\n".join(names) + "\n")


def _link(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (engines can be large), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
