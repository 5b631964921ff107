"""The Triton python-backend models of a repository ``triton_repo`` writes; they run inside Triton's stub process.

``Router`` (model ``msvit``): Triton's dynamic batcher hands it the requests of one batch; it preprocesses their
images, and runs ``Pipeline``'s one tokenizer -> selection -> encoder glue with stages that are BLS calls: the
tokenizer model once, then one encoder model per bucket present in the batch (``batching="split"``), so each image
reaches its bucket's encoder. ``OrtStage``: one ONNX Runtime session, for ONNX Runtime engines.

``triton_python_backend_utils`` exists only inside the stub: it is imported at model start-up.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.preprocess import preprocess
from msvit_edge.bundle.selection import Selection
from msvit_edge.engines.ort import session
from msvit_edge.engines.pipeline import Pipeline, Tokenized
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.serve.repository import TOKENIZER, encoder_model


def _utils():
    return importlib.import_module("triton_python_backend_utils")  # lazy: the stub provides it, nothing else does


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

    def encode(self, tokens: np.ndarray, selection: Selection) -> np.ndarray:
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
    """Model ``msvit``: uint8 images [B, S, S, C] -> logits [B, K], top_class [B, 1], tokens [B, 1]."""

    def initialize(self, args: dict) -> None:
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.threshold = float(params["threshold"])
        self.mean, self.std = json.loads(params["mean"]), json.loads(params["std"])
        self.pipeline = BlsPipeline(BucketPlan.from_dict(json.loads(params["buckets"])))
        self.pb = self.pipeline.pb

    def execute(self, requests: list) -> list:
        pb = self.pb
        images = [array(pb, r, "images") for r in requests]
        try:
            out = self.pipeline(preprocess(np.concatenate(images), self.mean, self.std), self.threshold)
        except MsvitEdgeError as e:  # a stage failed: every request of the batch gets the reason
            return [pb.InferenceResponse(error=pb.TritonError(str(e))) for _ in requests]
        ends = np.cumsum([len(x) for x in images])
        answers = zip(
            *(np.split(a, ends[:-1]) for a in (out.logits, out.logits.argmax(1)[:, None], out.counts[:, None])),
            strict=True,
        )
        return [
            pb.InferenceResponse(
                [
                    tensor(pb, "logits", logits),
                    tensor(pb, "top_class", top.astype(np.int64)),
                    tensor(pb, "tokens", counts.astype(np.int64)),
                ]
            )
            for logits, top, counts in answers
        ]


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
