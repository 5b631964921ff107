"""What a run starts from and resumes from: the initial model (``--init``), and each finished epoch's state.

OUT/last.safetensors   model after the last finished epoch   } both atomic; --resume continues from them
OUT/state.pt           optimizer, schedule, gBaS priors      }
"""

from __future__ import annotations

from pathlib import Path

import torch

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import atomic_path
from msvit_edge.model.checkpoint import (
    load_checkpoint,
    load_vit_weights,
    read_checkpoint_header,
    read_torch_file,
    save_checkpoint,
)
from msvit_edge.model.config import MSViTConfig, preset
from msvit_edge.model.msvit import MSViT
from msvit_edge.training.config import TrainConfig
from msvit_edge.training.step import TrainStep


def build_model(cfg: TrainConfig) -> tuple[MSViT, dict]:
    """The model training starts from (an msvit-edge checkpoint, ViT weights or a fresh preset) and its metadata."""
    if cfg.init and _is_msvit_checkpoint(cfg.init):
        model, meta = load_checkpoint(cfg.init)
        if cfg.new_gate:
            fresh = MSViT(MSViTConfig(model.vit_config, cfg.gate))
            backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("gate.")}
            missing, unexpected = fresh.load_state_dict(backbone, strict=False)
            assert not unexpected and all(k.startswith("gate.") for k in missing)
            return fresh, meta | {"new_gate": True}
        return model, meta
    overrides = {} if cfg.num_classes is None else {"num_classes": cfg.num_classes}
    model = MSViT(MSViTConfig(preset(cfg.preset, **overrides), cfg.gate))
    if cfg.init:
        load_vit_weights(model, cfg.init, reset_head=cfg.num_classes is not None)
    return model, {"init": cfg.init}


def _is_msvit_checkpoint(path: str) -> bool:
    try:
        read_checkpoint_header(path)
    except MsvitEdgeError:
        return False
    return True


def save_state(out: Path, step_module: TrainStep, optimizer, schedule, epoch: int) -> None:
    """Write ``OUT/last.safetensors`` and ``OUT/state.pt`` after ``epoch`` epochs, each atomically."""
    save_checkpoint(step_module.model, out / "last.safetensors", {"epoch": epoch})
    state = {
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "gbas": step_module.gbas.state_dict() if step_module.gbas is not None else {},
    }
    with atomic_path(out / "state.pt") as tmp:
        torch.save(state, tmp)


def resume(out: Path, step_module: TrainStep, optimizer, schedule) -> int:
    """Load what ``save_state`` wrote into the model, optimizer, schedule and gBaS priors; the epochs already done."""
    ckpt, state_path = out / "last.safetensors", out / "state.pt"
    if not (ckpt.is_file() and state_path.is_file()):
        raise MsvitEdgeError("nothing to resume: last.safetensors and state.pt are not both there", out)
    model, _ = load_checkpoint(ckpt)
    step_module.model.load_state_dict(model.state_dict())
    state = read_torch_file(state_path)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if step_module.gbas is not None and state["gbas"]:
        step_module.gbas.load_state_dict(state["gbas"])
    return int(state["epoch"])
