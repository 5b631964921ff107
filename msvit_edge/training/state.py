"""What a run starts from and resumes from: the initial model (``--init``), and each finished epoch's state.

OUT/last.safetensors   model after the last finished epoch   } both atomic; --resume continues from them
OUT/state.pt           optimizer, schedule, gBaS priors      }
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from msvit_edge.data import segmentation_classes
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import atomic_path
from msvit_edge.model.checkpoint import (
    load_checkpoint,
    load_vit_weights,
    read_checkpoint_header,
    read_torch_file,
    save_checkpoint,
)
from msvit_edge.model.config import CLASSIFICATION, SEGMENTATION, MSViTConfig, preset
from msvit_edge.model.factory import create_model
from msvit_edge.model.msvit import MSViT
from msvit_edge.training.config import TrainConfig
from msvit_edge.training.step import TrainStep


def build_model(cfg: TrainConfig) -> tuple[MSViT, dict]:
    """The model training starts from (an msvit-edge checkpoint, ViT weights or a fresh preset) and its metadata."""
    if cfg.init and _is_msvit_checkpoint(cfg.init):
        model, meta = load_checkpoint(cfg.init)
        task = cfg.task or model.config.task
        if task == model.config.task and not cfg.new_gate:
            return model, meta
        extra = {"new_gate": True} if cfg.new_gate else {}
        extra |= {"task_from": model.config.task} if task != model.config.task else {}
        return _rebuilt(model, cfg, task), meta | extra
    task = cfg.task or CLASSIFICATION
    overrides = {} if cfg.num_classes is None else {"num_classes": cfg.num_classes}
    if task == SEGMENTATION:
        overrides = {"num_classes": _class_count(cfg, task)}
    model = create_model(MSViTConfig(preset(cfg.preset, **overrides), cfg.gate, task=task))
    if cfg.init:
        load_vit_weights(model, cfg.init, reset_head=cfg.num_classes is not None)
    return model, {"init": cfg.init}


def _rebuilt(model: MSViT, cfg: TrainConfig, task: str) -> MSViT:
    """A new model of ``task`` that keeps ``model``'s backbone, and its gate unless --new-gate; a new task's head and
    a new gate start from their initialisation (and a new gate from the default threshold)."""
    fresh_parts = (("head.", "decoder.") if task != model.config.task else ()) + (("gate.",) if cfg.new_gate else ())
    vit = model.vit_config
    if task != model.config.task:
        vit = replace(vit, num_classes=_class_count(cfg, task))
    config = MSViTConfig(vit, cfg.gate, task=task)
    if not cfg.new_gate:
        config = replace(config, gate=model.config.gate, threshold=model.config.threshold)
    fresh = create_model(config)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(fresh_parts)}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(fresh_parts) for k in missing)
    return fresh


def _class_count(cfg: TrainConfig, task: str) -> int:
    """--num-classes, or for a segmentation model the classes its data names."""
    names = segmentation_classes(cfg.data) if task == SEGMENTATION else None
    if cfg.num_classes is None and names is None:
        where = f"{cfg.data} names no classes (no classes.txt)" if task == SEGMENTATION else "a new head"
        raise MsvitEdgeError(f"--num-classes is needed: {where}")
    return cfg.num_classes or len(names)


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
