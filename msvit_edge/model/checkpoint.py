"""Checkpoints: users' timm/DeiT weights in, msvit-edge checkpoints in and out.

An msvit-edge checkpoint is ONE safetensors file: the weights plus, in the safetensors header metadata, the model
config as JSON (key ``msvit_edge.config``) and any extra training state the writer adds. It is written to a temporary
file and renamed, so an interrupted write never leaves a half-written checkpoint. Third-party files are only ever
read with ``torch.load(weights_only=True)`` or safetensors: no pickled code runs.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import atomic_path
from msvit_edge.model.config import MSViTConfig
from msvit_edge.model.factory import create_model
from msvit_edge.model.msvit import MSViT

FORMAT = "msvit-edge/1"
_WRAPPERS = ("model", "state_dict", "model_state_dict")  # where DeiT / Lightning / others nest the weights
_MAX_LISTED = 6
_PLAIN_VIT = "not an msvit-edge checkpoint: a plain ViT/DeiT one (`msvit-edge train --init` starts from it)"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (plain, or nested under "model" etc.)."""
    path = _checkpoint_file(path)
    sd = _read_safetensors(path) if path.suffix == ".safetensors" else read_torch_file(path)
    for key in _WRAPPERS:
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    tensors = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, Tensor)}
    if not tensors:
        raise MsvitEdgeError(f"no tensors found (top-level keys: {_listed(sd)})", path)
    return tensors


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise MsvitEdgeError(f"not a readable safetensors file ({_first_line(e)})", path) from None


def read_torch_file(path: str | Path) -> dict:
    """A dict from a ``torch.save`` file, read weights-only: pickled code in it is refused, never run."""
    path = _checkpoint_file(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if found := re.search(r"GLOBAL (\S+)", str(e)):  # torch's message is a page; the object it names is the point
            raise MsvitEdgeError(
                f"holds pickled objects beyond tensors ({found.group(1)}), which weights-only loading never runs: "
                "save a state dict (torch.save(model.state_dict(), ...)) or safetensors instead",
                path,
            ) from None
        raise MsvitEdgeError(f"not a readable checkpoint ({_first_line(e)})", path) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise MsvitEdgeError(f"not a readable checkpoint ({_first_line(e)})", path) from None
    if not isinstance(sd, dict):
        raise MsvitEdgeError(f"expected a state dict, found a {type(sd).__name__}", path)
    return sd


def load_vit_weights(model: nn.Module, path: str | Path, reset_head: bool = False) -> None:
    """Load a timm/DeiT ViT checkpoint into ``model`` (a ``VisionTransformer``, ``MSViT`` or ``MSViTSegmenter``).

    Position embeddings are resized (bicubic, as timm does) when the checkpoint's grid differs. The gate and a
    segmenter's decoder, absent from ViT checkpoints, keep their initialisation; a classifier's ``head`` means nothing
    to a segmenter and is dropped. Anything else missing, unexpected or of the wrong shape is an error that lists it.

    Args:
        model: The model to fill.
        path: ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file in timm's key layout.
        reset_head: Drop the checkpoint's classifier where it does not fit the model's (fine-tuning on a different
            label set); one that already has the model's classes is kept.
    """
    sd = read_state_dict(path)
    expected = model.state_dict()
    if reset_head or "head.weight" not in expected:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.") or _fits(v, expected.get(k))}
    if "pos_embed" in sd and sd["pos_embed"].shape != model.pos_embed.shape:
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"], model.vit_config.grid)
    optional = {k for k in expected if k.startswith(("gate.", "decoder.")) or (reset_head and k.startswith("head."))}
    _check_keys(sd, expected, optional, path)
    model.load_state_dict(sd, strict=False)


def resize_pos_embed(pos_embed: Tensor, grid: int) -> Tensor:
    """Resize [1, 1 + g*g, D] position embeddings to a ``grid`` x ``grid`` patch grid; the CLS entry is kept."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    g = int(patches.shape[1] ** 0.5)
    if g * g != patches.shape[1]:
        raise MsvitEdgeError(f"pos_embed has {patches.shape[1]} patch entries, not a square grid")
    D = patches.shape[-1]
    grid_map = patches.reshape(1, g, g, D).permute(0, 3, 1, 2).float()
    resized = F.interpolate(grid_map, size=(grid, grid), mode="bicubic", align_corners=False, antialias=g > grid)
    return torch.cat([cls, resized.permute(0, 2, 3, 1).reshape(1, grid * grid, D).to(pos_embed.dtype)], dim=1)


def _check_keys(sd: dict[str, Tensor], expected: dict[str, Tensor], optional: set[str], path: Path) -> None:
    missing = [k for k in expected if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k} {list(sd[k].shape)} vs {list(v.shape)}" for k, v in expected.items() if k in sd and sd[k].shape != v.shape
    ]
    problems = [
        f"{name}: {_listed(keys)}"
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
        if keys
    ]
    if problems:
        raise MsvitEdgeError("does not fit the model; " + "; ".join(problems), path)


def save_checkpoint(model: MSViT, path: str | Path, meta: dict | None = None, half: bool = False) -> Path:
    """Write ``model`` (weights + config + ``meta``) atomically as one safetensors file.

    Args:
        model: The model to save.
        path: Destination ``.safetensors`` file.
        meta: JSON-serialisable extras stored in the header (training state, provenance).
        half: Store floating-point weights as fp16 (half the size; loading casts back to fp32).
    """
    from safetensors.torch import save_file

    sd = {
        k: v.detach().to("cpu", torch.float16 if half and v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    header = {"format": FORMAT, "msvit_edge.config": json.dumps(model.config.to_dict())}
    header |= {"msvit_edge.meta": json.dumps(meta or {})}
    with atomic_path(path, ".safetensors") as tmp:
        save_file(sd, tmp, metadata=header)
    return Path(path)


def read_checkpoint_header(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of an msvit-edge checkpoint (cheap: reads only the header)."""
    from safetensors import SafetensorError, safe_open

    path = _checkpoint_file(path)
    if _is_torch_save(path):  # safetensors would call its first bytes a header length ("header too large")
        raise MsvitEdgeError(_PLAIN_VIT, path)
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise MsvitEdgeError(
            f"not an msvit-edge checkpoint: not a readable safetensors file ({_first_line(e)})", path
        ) from None
    if header.get("format") != FORMAT:
        raise MsvitEdgeError(_PLAIN_VIT + " (its safetensors header has no msvit-edge format)", path)
    return header


def _checkpoint_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise MsvitEdgeError("is a folder, not a checkpoint file (name the file in it, e.g. model.safetensors)", path)
    if not path.is_file():
        raise MsvitEdgeError("checkpoint not found", path)
    return path


def _is_torch_save(path: Path) -> bool:
    """A ``torch.save`` file: a zip archive (torch >= 1.6) or a bare pickle (protocol 2+ starts with 0x80)."""
    with path.open("rb") as f:
        return zipfile.is_zipfile(f) or f.read(1) == b"\x80"


def _fits(tensor: Tensor, expected: Tensor | None) -> bool:
    return expected is not None and tensor.shape == expected.shape


def load_checkpoint(path: str | Path) -> tuple[MSViT, dict]:
    """Build the model an msvit-edge checkpoint describes (its config's task says which) and load its weights.

    Returns:
        (model in eval mode: an ``MSViT``, or an ``MSViTSegmenter`` for a segmentation checkpoint, meta).
    """
    header = read_checkpoint_header(path)
    try:
        cfg = MSViTConfig.from_dict(json.loads(header["msvit_edge.config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise MsvitEdgeError(f"checkpoint config is unreadable ({_first_line(e)})", path) from None
    model = create_model(cfg)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(path).items()}
    _check_keys(sd, model.state_dict(), set(), Path(path))
    model.load_state_dict(sd)
    return model.eval(), json.loads(header.get("msvit_edge.meta", "{}"))


def _listed(keys) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(map(str, keys[:_MAX_LISTED])) + more


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


EMBEDDED = {"classification": "demo.safetensors", "segmentation": "demo-segmentation.safetensors"}


def demo_checkpoint(task: str = "classification") -> Path:
    """The embedded default: the demo MSViT trained on Fashion-MNIST scenes, shipped inside the package; ``task``
    segmentation: the demo segmenter (``assets/demo-segmentation.md``)."""
    path = Path(__file__).parents[1] / "assets" / EMBEDDED[task]
    if not path.is_file():
        raise MsvitEdgeError("the embedded demo checkpoint is missing from this installation", path)
    return path


def load_model(path: str | Path | None = None) -> tuple[MSViT, dict]:
    """Load an msvit-edge checkpoint, or the embedded demo checkpoint when ``path`` is None."""
    return load_checkpoint(demo_checkpoint() if path is None else path)
