"""The Triton python-backend models of a repository ``triton_repo`` writes; they run inside Triton's stub process.

``Router`` (model ``msvit``): Triton's dynamic batcher hands it the requests of one batch; it decodes and preprocesses
their images, and runs ``Pipeline``'s one tokenizer -> selection -> encoder glue (``batching="split"``, so each image
reaches its bucket's encoder): inline, the ONNX Runtime pipeline on the router's copy of the engine folder; with
stages ``bls``, a pipeline whose stages are BLS calls (the tokenizer model once, then one encoder model per bucket
present in the batch). A request whose images cannot be read gets its own error; the rest of the batch is answered.
``OrtStage``: one ONNX Runtime session, the stage model of ONNX Runtime engines served with stages ``bls``.

``triton_python_backend_utils`` exists only inside the stub: it is imported at model start-up.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.preprocess import load_image, preprocess
from msvit_edge.bundle.selection import Selection
from msvit_edge.engines.ort import OnnxRuntimePipeline, session
from msvit_edge.engines.pipeline import Pipeline, PipelineOutput, Tokenized
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.serve.repository import TOKENIZER, encoder_model

METRIC = "msvit_bucket_images_total"  # on Triton's metrics port, beside its own nv_inference_* metrics


def _utils():
    if sys.unraisablehook is not _drop_capsule_errors:
        _drop_capsule_errors.previous, sys.unraisablehook = sys.unraisablehook, _drop_capsule_errors
    return importlib.import_module("triton_python_backend_utils")  # lazy: the stub provides it, nothing else does


def _drop_capsule_errors(unraisable) -> None:
    """Every tensor handed to the stub through DLPack ends in an error raised where nothing can catch it: numpy 2's
    capsule destructor does not find the capsule under the name the stub (built for numpy 1) leaves it with. The
    stub has taken the data by then, so answers are right, but each error printed a traceback into Triton's log (about
    1 KB and a traceback's formatting per output tensor). Only that error is dropped; any other goes on as before."""
    e = unraisable.exc_value
    if not (isinstance(e, ValueError) and str(e) == "PyCapsule_GetPointer called with incorrect name"):
        _drop_capsule_errors.previous(unraisable)


def tensor(pb, name: str, array: np.ndarray):
    """A python-backend tensor from a numpy array, through DLPack: the stubs pytriton 0.7.0 ships were built against
    numpy 1, and their ``Tensor(name, array)`` misreads a numpy 2 array's byte size (0 bytes, or a shape mismatch)."""
    array = np.ascontiguousarray(array)
    return pb.Tensor.from_dlpack(name, array if array.flags.writeable else array.copy())  # DLPack 0.8: no read-only


def array(pb, request, name: str) -> np.ndarray:
    """A request's input as a numpy array, through DLPack: ``as_numpy`` misreads numpy 2 as ``Tensor`` does."""
    return np.from_dlpack(pb.get_input_tensor_by_name(request, name))


class BlsPipeline(Pipeline):
    """The pipeline whose stages are the repository's stage models, called through BLS."""

    def __init__(self, plan: BucketPlan):
        super().__init__(plan, batching="split")
        self.pb = _utils()

    def tokenize(self, images: np.ndarray, threshold: float) -> Tokenized:
        feed = {"images": images, "threshold": np.asarray([threshold], dtype=np.float32)}
        return Tokenized(*self._call(TOKENIZER, feed, ["tokens", "counts", "probs"]))

    def encode(self, tokens: np.ndarray, selection: Selection, cells: np.ndarray | None = None) -> np.ndarray:
        """``cells`` is always None: a segmentation bundle is refused when its repository is written."""
        mask = selection.mask()
        feed = {"tokens": tokens} | ({} if mask is None else {"mask": mask})
        return self._call(encoder_model(selection.bucket, mask is not None), feed, ["logits"])[0]

    def _call(self, model: str, feed: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        pb = self.pb
        inputs = [tensor(pb, name, value) for name, value in feed.items()]
        response = pb.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs).exec()
        if response.has_error():
            raise MsvitEdgeError(f"{model}: {response.error().message()}")
        return [np.from_dlpack(pb.get_output_tensor_by_name(response, name)) for name in outputs]


class Router:
    """Model ``msvit``: uint8 images [B, S, S, C] or encoded image files [B, 1] -> logits [B, K], top_class [B, 1],
    tokens [B, 1]; the Prometheus counter ``METRIC{bucket="i"}`` counts the images each bucket's encoder ran."""

    def initialize(self, args: dict) -> None:
        self.pb = _utils()
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.threshold, self.size = float(params["threshold"]), int(params["size"])
        self.mean, self.std = json.loads(params["mean"]), json.loads(params["std"])
        plan = BucketPlan.from_dict(json.loads(params["buckets"]))
        if params["stages"] == "bls":
            self.pipeline = BlsPipeline(plan)
        else:  # the engine folder's own pipeline, opened (and its files checked) from the router's copy
            folder = Path(args["model_repository"]) / args["model_version"] / "source" / params["source"]
            self.pipeline = OnnxRuntimePipeline(folder, int(params["threads"]) or None, batching="split")
            self.pipeline.activate()
        what = "Images the router sent to each token-count bucket's encoder"
        # the family must outlive its metrics (the stub refuses an increment once it is gone): kept on the model
        self.family = self.pb.MetricFamily(name=METRIC, description=what, kind=self.pb.MetricFamily.COUNTER)
        self.per_bucket = [self.family.Metric(labels={"bucket": str(i)}) for i in range(len(plan.buckets))]

    def execute(self, requests: list) -> list:
        pb = self.pb
        inputs = [self._images(r) for r in requests]  # uint8 [b, S, S, C], or why the request cannot run
        good = [x for x in inputs if isinstance(x, np.ndarray)]
        try:
            answers = iter(self._answers(good) if good else [])
        except MsvitEdgeError as e:  # a stage failed: every request of the batch gets the reason
            return [pb.InferenceResponse(error=pb.TritonError(str(e))) for _ in requests]
        return [next(answers) if isinstance(x, np.ndarray) else pb.InferenceResponse(error=x) for x in inputs]

    def _images(self, request):
        pb = self.pb
        pixels = pb.get_input_tensor_by_name(request, "images")
        encoded = pb.get_input_tensor_by_name(request, "image_bytes")
        if (pixels is None) == (encoded is None):
            why = "send either images (uint8 pixels) or image_bytes (encoded JPEG/PNG files)"
            return pb.TritonError(why, pb.TritonError.INVALID_ARG)
        if pixels is not None:
            return np.from_dlpack(pixels)
        try:  # one file per row, zero-padded to the longest: decoders stop at the file's end marker
            return np.stack([decode(row.tobytes(), self.size, f"image_bytes[{i}]")
                             for i, row in enumerate(np.from_dlpack(encoded))])  # fmt: skip
        except MsvitEdgeError as e:
            return pb.TritonError(str(e), pb.TritonError.INVALID_ARG)

    def _answers(self, images: list[np.ndarray]) -> list:
        pb = self.pb
        out = self.pipeline(preprocess(np.concatenate(images), self.mean, self.std), self.threshold)
        self._count(out)
        ends = np.cumsum([len(x) for x in images])
        answers = (out.logits, out.logits.argmax(1)[:, None].astype(np.int64), out.counts[:, None].astype(np.int64))
        return [
            pb.InferenceResponse(
                [tensor(pb, n, a) for n, a in zip(("logits", "top_class", "tokens"), parts, strict=True)]
            )
            for parts in zip(*(np.split(a, ends[:-1]) for a in answers), strict=True)
        ]

    def _count(self, out: PipelineOutput) -> None:
        for call in out.calls:
            self.per_bucket[call.bucket].increment(len(call.index))


def decode(data: bytes, size: int, name: str) -> np.ndarray:
    """An encoded image file -> uint8 RGB [size, size, 3] by ``load_image``, as training loaded image files; errors
    name the request's input."""
    return load_image(io.BytesIO(data), size, name)


class OrtStage:
    """A stage model (tokenizer, or one bucket's encoder) running ``1/model.onnx`` in ONNX Runtime."""

    def initialize(self, args: dict) -> None:
        self.pb = _utils()
        folder = Path(args["model_repository"]) / args["model_version"]
        self.session = session(folder / "model.onnx")
        self.inputs = {i.name: len(i.shape) for i in self.session.get_inputs()}  # name: rank (0: a scalar)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list) -> list:
        return [self._one(r) for r in requests]

    def _one(self, request):
        pb = self.pb
        feed = {}
        for name, rank in self.inputs.items():
            value = array(pb, request, name)
            feed[name] = value.reshape(()) if rank == 0 else value  # a scalar travels as [1]
        return pb.InferenceResponse(
            [tensor(pb, n, v) for n, v in zip(self.outputs, self.session.run(self.outputs, feed), strict=True)]
        )
