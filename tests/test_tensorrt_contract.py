"""API contract of the TensorRT backend, checked without TensorRT: every name the code uses exists where it runs.

No machine here can import TensorRT, so a typo or an API that TensorRT 11 removed (``IInt8EntropyCalibrator2``,
``config.int8_calibrator``, ``BuilderFlag.FP16``) would only show on a GPU, on the user's. The checker reads the
backend's source (AST) and collects the names it uses on TensorRT, by the rule in ``engines/tensorrt.py``'s
docstring:

- every attribute of an expression rooted at ``trt`` (``trt.BuilderFlag.FP16``: ``BuilderFlag`` and ``FP16``);
- every attribute of a variable, attribute or subscripted collection named after a TensorRT object
  (``engine.create_execution_context``, ``context.execute_async_v3``, ``contexts[i].set_input_shape``);
- the second argument of ``hasattr``/``getattr`` on such an expression: a feature probe.

Then each name must be in the committed name lists (``tests/data/tensorrt``, see SOURCES.md) of the versions its
code runs on: both 10.3 (JetPack 6) and 11.4, except inside a function whose name ends in ``_trt10`` (10.3 only,
``_trt11``: 11.4 only), and a probe only in one of them. A flat list of names cannot tell ``BuilderFlag.INT8``
(removed in 11) from ``DataType.INT8`` (kept); the checker says nothing about such a pair.

The Polygraphy calls are checked against the installed Polygraphy, which imports without TensorRT.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from msvit_edge.bundle.buckets import Bucket, BucketPlan
from msvit_edge.engines import trt_boundary
from msvit_edge.engines.trt_shapes import EngineShapes
from msvit_edge.engines.trt_trtexec import trtexec_commands
from msvit_edge.errors import MsvitEdgeError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "tensorrt"
VERSIONS = {"10": "10.3.0", "11": "11.4.0.106"}
TRTEXEC = {"10": "v10.3.0", "11": "v11.1"}
TRT_OBJECTS = {
    "trt",
    "builder",
    "network",
    "config",
    "parser",
    "profile",
    "engine",
    "context",
    "inspector",
    "runtime",
    "layer",
    "tensor",
}


def names(version: str) -> set[str]:
    return set((DATA / f"tensorrt-{version}.names").read_text().split())


@dataclass(frozen=True)
class Use:
    name: str
    path: str  # "both", "10", "11" or "probe"
    line: int


def _receiver(node: ast.expr) -> str | None:
    """The TensorRT object an attribute is read from, by the naming rule (None: not a TensorRT object)."""
    if isinstance(node, ast.Name):
        return node.id if node.id in TRT_OBJECTS else None
    if isinstance(node, ast.Attribute):
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and root.id == "trt":
            return "trt"  # anything reached from the module
        return node.attr if node.attr in TRT_OBJECTS else None
    if isinstance(node, ast.Subscript):
        inner = _receiver_name(node.value)
        return inner[:-1] if inner and inner.endswith("s") and inner[:-1] in TRT_OBJECTS else None
    return None


def _receiver_name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


class _Collector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.uses: list[Use] = []
        self.errors: list[str] = []
        self.functions: list[str] = []

    def _path(self) -> str:
        for suffix, path in (("_trt10", "10"), ("_trt11", "11")):
            if any(f.endswith(suffix) for f in self.functions):
                return path
        return "both"

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "tensorrt" and alias.asname != "trt":
                self.errors.append(f"line {node.lineno}: import tensorrt as trt (the checker follows that name)")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "tensorrt":
            self.errors.append(f"line {node.lineno}: from tensorrt import ... hides names from the checker")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _receiver(node.value):
            self.uses.append(Use(node.attr, self._path(), node.lineno))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        probe = isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2
        if probe and _receiver(node.args[0]) and isinstance(node.args[1], ast.Constant):
            self.uses.append(Use(node.args[1].value, "probe", node.lineno))
        self.generic_visit(node)


def tensorrt_uses(source: str) -> tuple[list[Use], list[str]]:
    """The TensorRT names a module uses and on which code path; and breaches of the naming rule."""
    collector = _Collector()
    collector.visit(ast.parse(source))
    return collector.uses, collector.errors


def violations(source: str, lists: dict[str, set[str]] | None = None) -> list[str]:
    """Each use of a name that is missing from a TensorRT version its code path runs on, as a message."""
    lists = lists or {family: names(v) for family, v in VERSIONS.items()}
    uses, errors = tensorrt_uses(source)
    out = list(errors)
    for use in uses:
        need = {"both": ["10", "11"], "10": ["10"], "11": ["11"], "probe": []}[use.path]
        missing = [VERSIONS[f] for f in need if use.name not in lists[f]]
        if use.path == "probe" and not any(use.name in lists[f] for f in lists):
            missing = list(VERSIONS.values())
        if missing:
            out.append(f"line {use.line}: {use.name} ({use.path} path) is not in TensorRT {', '.join(missing)}")
    return out


def backend_sources() -> dict[str, str]:
    """The engines/ modules that use TensorRT: the TensorRT backend's own (``tensorrt.py``, ``trt_*.py``, some of
    which only receive TensorRT objects), and any other that imports it."""
    files = sorted((ROOT / "engines").glob("*.py"))
    texts = {f.name: f.read_text() for f in files}
    return {
        name: text
        for name, text in texts.items()
        if name == "tensorrt.py" or name.startswith("trt_") or "import_tensorrt" in text or "import tensorrt" in text
    }


# ---- the backend's TensorRT names --------------------------------------------------------------------------------


def test_every_tensorrt_name_the_backend_uses_exists_in_the_versions_it_runs_on():
    sources = backend_sources()
    using = {name for name, text in sources.items() if tensorrt_uses(text)[0]}  # the scan sees TensorRT in each
    assert {"trt_boundary.py", "trt_build.py", "trt_inspect.py", "trt_contexts.py", "trt_runtime.py"} <= using
    found = {name: violations(text) for name, text in sources.items()}
    assert not any(found.values()), found


def test_the_scan_sees_the_names_that_matter():
    """A checker that finds nothing passes everything: the scan must see the calls the backend rests on."""
    uses = [u for text in backend_sources().values() for u in tensorrt_uses(text)[0]]
    paths = defaultdict(set)
    for u in uses:
        paths[u.name].add(u.path)
    both = {
        "STRONGLY_TYPED",
        "execute_async_v3",
        "set_optimization_profile_async",
        "set_input_shape",
        "set_tensor_address",
        "create_execution_context",
        "get_tensor_profile_shape",
        "device_memory_size_v2",
        "get_device_memory_size_for_profile_v2",
        "create_engine_inspector",
        "get_engine_information",
        "LayerInformationFormat",
        "ProfilingVerbosity",
        "MemoryPoolType",
        "nptype",
        "ExecutionContextAllocationStrategy",  # USER_MANAGED contexts share one scratch buffer
        "USER_MANAGED",
        "set_device_memory",
        "get_tensor_dtype",  # inputs of another dtype are refused
    }
    assert {n for n in both if paths[n] and paths[n] <= {"both", "probe"}} == both
    assert paths["FP16"] == {"10", "probe"} and paths["set_flag"] == {"10"}
    assert len(paths) >= 30


@pytest.mark.parametrize(
    "snippet, missing",
    [
        (
            "def calibrate(trt):\n    return trt.IInt8EntropyCalibrator2",
            "IInt8EntropyCalibrator2 (both path) is not in TensorRT 11.4",
        ),
        (
            "def calibrate(config, calibrator):\n    config.int8_calibrator = calibrator",
            "int8_calibrator (both path) is not in TensorRT 11.4",
        ),
        ("def flags(trt):\n    return [trt.BuilderFlag.FP16]", "FP16 (both path) is not in TensorRT 11.4"),
        (
            "def memory(engine):\n    return engine.device_memory_size",
            "device_memory_size (both path) is not in TensorRT 11.4",
        ),
        (
            "def network(trt):\n    return trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
            "EXPLICIT_BATCH (both path)",
        ),
        ("def fast(builder):\n    return builder.platform_has_fast_fp16", "platform_has_fast_fp16 (both path)"),
        ("def flags_trt10(trt):\n    return trt.BuilderFlag.FP4", "FP4 (10 path) is not in TensorRT 10.3.0"),
        (
            "def run(contexts):\n    contexts[0].execute_async_v4(0)",
            "execute_async_v4 (both path) is not in TensorRT 10.3.0, 11.4",
        ),
        (
            "def probe(trt):\n    return hasattr(trt.BuilderFlag, 'FP32')",
            "FP32 (probe path) is not in TensorRT 10.3.0, 11.4",
        ),
        ("import tensorrt as nv", "import tensorrt as trt"),
        ("from tensorrt import BuilderFlag", "hides names from the checker"),
    ],
)
def test_a_removed_or_unknown_name_fails_the_contract(snippet, missing):
    found = violations(snippet)
    assert len(found) == 1 and missing in found[0], found


@pytest.mark.parametrize(
    "snippet",
    [
        "def flags_trt10(trt):\n    return [trt.BuilderFlag.FP16, trt.BuilderFlag.INT8]",  # 10.x only, under a probe
        "def apply_trt10(config, calibrator):\n    config.int8_calibrator = calibrator",
        "def probe(trt):\n    return hasattr(trt.BuilderFlag, 'FP16')",  # probing for a 10.x-only name is the point
        "def run(context, stream):\n    context.execute_async_v3(stream)",
        "def other(model):\n    return model.int8_calibrator",  # not a TensorRT object by the naming rule
    ],
)
def test_names_that_exist_where_their_code_runs_pass(snippet):
    assert violations(snippet) == []


def test_the_name_lists_hold_what_nvidia_documents_as_kept_and_removed():
    """NVIDIA's 10.x -> 11.x migration guide, against the extracted lists (a check on the extraction itself)."""
    v10, v11 = names(VERSIONS["10"]), names(VERSIONS["11"])
    removed = {"FP16", "int8_calibrator", "IInt8EntropyCalibrator2", "device_memory_size", "EXPLICIT_BATCH"}
    kept = {"STRONGLY_TYPED", "execute_async_v3", "set_optimization_profile_async", "device_memory_size_v2"}
    assert removed <= v10 and not removed & v11
    assert kept <= v10 and kept <= v11
    # names the linker stores only inside a longer string ("Builder" in "IExprBuilder"): the reader recovers them
    assert {"Builder", "Runtime", "Logger", "INT8", "__version__"} <= v10 & v11


def test_both_versions_bind_int64_as_a_segmentation_engines_cells_need():
    """A segmenter's tokenizer returns, and its encoders take, ``cells`` as int64 (as in the graphs, no cast). The
    runtime reads each binding's dtype through ``trt.nptype(engine.get_tensor_dtype(name))``, whose mapping in the
    bindings' ``tensorrt/__init__.py`` (NVIDIA/TensorRT, 10.x and 11.x) holds ``int64: np.int64``: both name lists
    must hold the data type, or a segmentation engine could not be bound on that version."""
    for version in VERSIONS.values():
        assert {"int64", "INT64", "nptype", "get_tensor_dtype"} <= names(version), version


# ---- Polygraphy --------------------------------------------------------------------------------------------------


def polygraphy_imports(source: str) -> dict[str, tuple[str, str]]:
    """Local name -> (module, attribute) for every ``from polygraphy... import X`` (functions' lazy imports too)."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("polygraphy"):
            for alias in node.names:
                out[alias.asname or alias.name] = (node.module, alias.name)
    return out


def _resolve(imports: dict, node: ast.expr):
    """The installed Polygraphy object an expression names (None: not a Polygraphy name or attribute chain)."""
    if isinstance(node, ast.Name) and node.id in imports:
        module, attr = imports[node.id]
        return getattr(importlib.import_module(module), attr)
    if isinstance(node, ast.Attribute):
        base = _resolve(imports, node.value)
        if base is not None:
            assert hasattr(base, node.attr), f"polygraphy: {ast.unparse(node)} does not exist"
            return getattr(base, node.attr)
    return None


def keyword_parameters(target) -> set[str]:
    """The keywords a callable takes; a class's ``**kwargs`` passed on to its bases' ``__init__`` included."""
    if not inspect.isclass(target):
        return set(inspect.signature(target).parameters)
    params: set[str] = set()
    for cls in target.__mro__:
        signature = inspect.signature(cls.__init__).parameters
        params |= set(signature)
        if not any(p.kind is p.VAR_KEYWORD for p in signature.values()):
            break
    return params


def test_the_polygraphy_names_and_keywords_the_backend_uses_exist_in_the_installed_polygraphy():
    checked = set()
    for text in backend_sources().values():
        imports = polygraphy_imports(text)
        for module, attr in imports.values():
            assert hasattr(importlib.import_module(module), attr), f"{module}.{attr}"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute):
                _resolve(imports, node)
            if isinstance(node, ast.Call) and (target := _resolve(imports, node.func)) is not None:
                params = keyword_parameters(target)
                for kw in node.keywords:
                    assert kw.arg in params, f"{ast.unparse(node.func)}() takes no {kw.arg}="
                    checked.add(f"{ast.unparse(node.func)}({kw.arg}=)")
    assert {"CreateConfig(load_timing_cache=)", "NetworkFromOnnxPath(strongly_typed=)"} <= checked
    assert {"EngineFromNetwork(save_timing_cache=)", "CreateConfig(builder_optimization_level=)"} <= checked


def test_the_polygraphy_objects_the_runtime_holds_have_what_it_calls():
    """Methods on Polygraphy objects held in variables, which the scan above cannot attribute: listed here."""
    from polygraphy import cuda
    from polygraphy.backend.trt import Profile

    assert {"min", "opt", "max"} <= set(inspect.signature(Profile.add).parameters)
    assert all(hasattr(cuda.DeviceArray, m) for m in ("raw", "resize", "copy_from", "copy_to", "free"))
    assert "self.allocated_nbytes = nbytes" in inspect.getsource(cuda.DeviceArray.resize)  # the scratch size passed
    assert all(hasattr(cuda.Stream, m) for m in ("synchronize", "free"))
    assert hasattr(cuda.Cuda, "check") and "self.handle = ctypes.CDLL" in inspect.getsource(cuda.Cuda.__init__)
    assert cuda.MemcpyKind.DeviceToDevice.value == 3  # cudaMemcpyDeviceToDevice, handed to cudaMemcpy2DAsync


def test_the_polygraphy_floor_is_the_first_release_that_works_with_tensorrt_11():
    """0.49.x reads ``layer.precision_is_set`` and 0.50.x subclasses ``trt.IStreamReader``; TensorRT 11 has neither."""
    floor = re.search(r'"polygraphy>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert floor == trt_boundary.POLYGRAPHY_MIN == "0.53.4"  # the error message's upgrade hint says the same
    v10, v11 = names(VERSIONS["10"]), names(VERSIONS["11"])
    assert {"precision_is_set", "IStreamReader"} <= v10 and not {"precision_is_set", "IStreamReader"} & v11


# ---- trtexec lines -----------------------------------------------------------------------------------------------


def trtexec_flags(tag: str) -> dict[str, bool]:
    """Documented flag -> deprecated?, for trtexec at ``tag``."""
    lines = (DATA / f"trtexec-{tag}.flags").read_text().split("\n")
    return {ln.split()[0]: ln.endswith(" deprecated") for ln in lines if ln}


PLAN = BucketPlan((Bucket(17, 29, 29, 0.6), Bucket(30, 65, 65, 0.4)), {20: 6, 40: 4}, 0.1, (1, 1, 32))
SHAPES = EngineShapes.standard(PLAN, 32, (3, 32, 32))
GRAPHS = {"tokenizer": "../../tokenizer.onnx", "encoder": "../../precision/k/encoder.onnx", "encoder_masked": "m.onnx"}


def parse_trtexec(line: str, tag: str) -> dict:
    """Parse a trtexec line as trtexec's option parser would: documented flags only, --profile groups, shapes."""
    flags = trtexec_flags(tag)
    argv = shlex.split(line)
    assert argv[0] == "trtexec"
    parsed: dict = {"flags": [], "profiles": []}
    for i, arg in enumerate(argv[1:], start=1):
        name, _, value = arg.partition("=")
        assert name in flags, f"{name} is not a trtexec {tag} flag"
        assert not flags[name], f"{name} is deprecated in trtexec {tag}"
        parsed["flags"].append(name)
        if name == "--profile":
            assert int(value) == len(parsed["profiles"]), "profile indices must be contiguous from 0"
            group = [a.partition("=")[0] for a in argv[i + 1 : i + 4]]
            assert sorted(group) == ["--maxShapes", "--minShapes", "--optShapes"], "min/opt/max directly after"
            parsed["profiles"].append(
                {a.partition("=")[0][2:5]: _shapes(a.partition("=")[2]) for a in argv[i + 1 : i + 4]}
            )
        elif name in ("--minShapes", "--optShapes", "--maxShapes"):
            assert argv[i - 1].startswith(("--profile=", "--minShapes=", "--optShapes=")), "shapes outside a profile"
        elif name == "--memPoolSize":
            pool, size = value.split(":")
            assert pool == "workspace" and size[:-1].isdigit() and size[-1] in "BKMG"
        parsed[name] = value
    return parsed


def _shapes(spec: str) -> dict[str, tuple[int, ...]]:
    """trtexec's shape spec: name:AxBxC, comma-separated."""
    out = {}
    for item in spec.split(","):
        name, _, dims = item.rpartition(":")
        out[name] = tuple(int(d) for d in dims.split("x"))
    return out


@pytest.mark.parametrize("family", ["10", "11"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trtexec_lines_parse_as_trtexec_options_with_one_profile_per_bucket(family, precision):
    lines = trtexec_commands(GRAPHS, SHAPES, precision, family, "../timing.cache", workspace_gb=2, opt_level=4)
    assert list(lines) == ["tokenizer", "encoder", "encoder_masked"]
    for stage, line in lines.items():
        parsed = parse_trtexec(line, TRTEXEC[family])
        assert parsed["--onnx"] == GRAPHS[stage] and parsed["--saveEngine"] == f"{stage}.plan"
        assert parsed["--timingCacheFile"] == "../timing.cache" and parsed["--memPoolSize"] == "workspace:2048M"
        assert parsed["--builderOptimizationLevel"] == "4" and "--skipInference" in parsed["flags"]
        assert ("--stronglyTyped" in parsed["flags"]) == (family == "10")
        assert not {"--fp16", "--int8", "--best"} & set(parsed["flags"])  # the graphs carry the precision
        expected = [
            dict(zip(("min", "opt", "max"), ({n: s[k] for n, s in p.items()} for k in range(3)), strict=True))
            for p in SHAPES.profiles(stage)
        ]
        got = parsed["profiles"]
        assert got == expected
    assert len(parse_trtexec(lines["encoder_masked"], TRTEXEC[family])["profiles"]) == len(PLAN.buckets)


def test_trtexec_profiles_are_the_bucket_plans():
    parsed = parse_trtexec(trtexec_commands(GRAPHS, SHAPES, "fp16", "11")["encoder_masked"], TRTEXEC["11"])
    assert parsed["profiles"][0] == {
        "min": {"tokens": (1, 17, 32), "mask": (1, 17)},
        "opt": {"tokens": (1, 29, 32), "mask": (1, 29)},
        "max": {"tokens": (32, 29, 32), "mask": (32, 29)},
    }
    assert parsed["profiles"][1]["max"] == {"tokens": (32, 65, 32), "mask": (32, 65)}
    tokenizer = parse_trtexec(trtexec_commands(GRAPHS, SHAPES, "fp16", "11")["tokenizer"], TRTEXEC["11"])
    assert tokenizer["profiles"] == [
        {"min": {"images": (1, 3, 32, 32)}, "opt": {"images": (1, 3, 32, 32)}, "max": {"images": (32, 3, 32, 32)}}
    ]


@pytest.mark.parametrize("family", ["10", "11"])
def test_the_plain_vit_gets_a_line_of_its_own_with_one_profile_over_the_batch(family):
    lines = trtexec_commands(GRAPHS | {"vit": "../../vit.onnx"}, SHAPES, "fp16", family)
    assert list(lines) == ["tokenizer", "encoder", "encoder_masked", "vit"]
    vit = parse_trtexec(lines["vit"], TRTEXEC[family])
    assert vit["--onnx"] == "../../vit.onnx" and vit["--saveEngine"] == "vit.plan"
    assert vit["profiles"] == [
        {"min": {"images": (1, 3, 32, 32)}, "opt": {"images": (1, 3, 32, 32)}, "max": {"images": (32, 3, 32, 32)}}
    ]
    weak = trtexec_commands(GRAPHS | {"vit": "v.onnx"}, SHAPES, "fp16", "10", strongly_typed=False)
    assert "--fp16" in parse_trtexec(weak["vit"], TRTEXEC["10"])["flags"]  # the encoders' precision, not the gate's


def test_weakly_typed_lines_exist_for_trtexec_10_only():
    lines = trtexec_commands(GRAPHS, SHAPES, "int8", "10", strongly_typed=False)
    encoder = parse_trtexec(lines["encoder"], TRTEXEC["10"])
    assert {"--int8", "--fp16"} <= set(encoder["flags"]) and "--stronglyTyped" not in encoder["flags"]
    assert "--int8" not in parse_trtexec(lines["tokenizer"], TRTEXEC["10"])["flags"]  # the gate stays FP32
    with pytest.raises(MsvitEdgeError, match="TensorRT 11 builds every network strongly typed"):
        trtexec_commands(GRAPHS, SHAPES, "int8", "11", strongly_typed=False)


def test_the_parser_rejects_what_trtexec_would():
    """The check above is only as good as its parser: it must refuse lines trtexec 10.3 / 11.x would."""
    good = trtexec_commands(GRAPHS, SHAPES, "fp16", "10")["encoder"]
    with pytest.raises(AssertionError, match=r"--fp16 is not a trtexec v11\.1 flag"):
        parse_trtexec(good.replace("--stronglyTyped", "--fp16"), TRTEXEC["11"])
    with pytest.raises(AssertionError, match=r"--stronglyTyped is deprecated in trtexec v11\.1"):
        parse_trtexec(good, TRTEXEC["11"])
    with pytest.raises(AssertionError, match="shapes outside a profile"):
        parse_trtexec(good.replace("--profile=1 ", ""), TRTEXEC["10"])
