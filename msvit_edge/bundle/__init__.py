"""The bundle contract: what export writes and every backend reads, torch-free.

A bundle is a folder of ONNX graphs (tokenizer, encoder per bucket) with a manifest saying how to feed them: the
bucket plan (``buckets``), how tokens are picked and packed into a bucket (``selection``), the image preprocessing
(``preprocess``), the reference answers engines are judged against and the one pass/fail rule (``validation``), and
the engine folders built from a bundle (``engine_folder``). ``manifest`` and ``engine_manifest`` are the two
manifests as typed records (one reader, one writer each); ``reader`` opens and checks a bundle.
"""

from msvit_edge.bundle.manifest import BundleManifest
from msvit_edge.bundle.reader import FOLDER, GRAPHS, SCHEMA_VERSION, Bundle, Reference, io_description

__all__ = ["FOLDER", "GRAPHS", "SCHEMA_VERSION", "Bundle", "BundleManifest", "Reference", "io_description"]
