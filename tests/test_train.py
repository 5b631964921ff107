"""Training for real on Fashion-MNIST scenes: data-parallel equivalence, resume after an interruption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from msvit_edge.data import FashionMNISTScenes, SceneConfig, random_subset, split
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.checkpoint import load_checkpoint, save_checkpoint
from msvit_edge.model.config import GateTraining, MSViTConfig, preset
from msvit_edge.model.msvit import MSViT, pack
from msvit_edge.training import train as train_module
from msvit_edge.training.loaders import set_epoch, split_datasets
from msvit_edge.training.loss import GBaSConfig
from msvit_edge.training.state import build_model
from msvit_edge.training.step import flip_gain, lr_lambda
from msvit_edge.training.train import TrainConfig, TrainStep, train

# 64 training items, global batch 16: 4 steps per epoch. Noise off and the straight-through gate gradient: the
# Gumbel noise and the flip gradient's region draws are random streams per process, so with either, 1 and 2
# processes could not be compared number for number.
QUICK = [
    "--train-size",
    "64",
    "--val-size",
    "32",
    "--batch-size",
    "16",
    "--no-gate-noise",
    "--gate-gradient",
    "straight-through",
    "--no-progress",
    "--epochs",
    "1",
    "--lr",
    "1e-3",
    "--warmup-epochs",
    "0",
]


def cli(*args: str, distributed: int = 0) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={distributed}"] if distributed else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *launcher, "-m", "msvit_edge", "train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    single = cli("--out", str(tmp_path / "one"), *QUICK)
    assert single.returncode == 0, single.stderr[-2000:]
    double = cli("--out", str(tmp_path / "two"), *QUICK, distributed=2)
    assert double.returncode == 0, double.stderr[-2000:]
    assert single.stdout.count("trained: ") == double.stdout.count("trained: ") == 1  # rank 0 alone says it
    assert '"world_size": 2' in (tmp_path / "two" / "config.json").read_text()
    one, _ = load_checkpoint(tmp_path / "one" / "model.safetensors")
    two, _ = load_checkpoint(tmp_path / "two" / "model.safetensors")
    torch.manual_seed(0)  # train() seeds rank 0 with the config's seed before building the model
    start = MSViT(MSViTConfig(preset("vit_demo_patch8_80"))).eval()
    scenes = FashionMNISTScenes.from_split("test")
    x = torch.stack([scenes[i][0] for i in range(64)])
    # Compare what the models compute, not raw weights: a few first-layer gate weights get gradients that nearly
    # cancel, and Adam's per-element scaling turns their rounding differences into lr-sized steps that barely move
    # the output. Same samples, same loss (gBaS over the global batch) and DDP-averaged gradients leave only that.
    with torch.no_grad():
        for f, tol in ((lambda m: m(x, threshold=0.0), 1e-4), (lambda m: m.gate(x), 1e-3)):  # backbone, gate
            moved, diff = (f(one) - f(start)).abs().max(), (f(one) - f(two)).abs().max()
            assert diff < tol < moved / 10, (float(diff), float(moved))


def test_two_process_ddp_trains_the_gate_with_the_flip_gradient(tmp_path):
    # The flip gradient's extra forward runs inside the DDP module; its gate gradient arrives only through the
    # surrogate term. DDP fails a step whose trainable parameters get no gradient, so this catches a broken path.
    flags = [f for f in QUICK if f not in ("--gate-gradient", "straight-through")]
    run = cli("--out", str(tmp_path / "two"), *flags, "--gate-gradient", "flip", distributed=2)
    assert run.returncode == 0, run.stderr[-2000:]
    trained, _ = load_checkpoint(tmp_path / "two" / "model.safetensors")
    torch.manual_seed(0)
    start = MSViT(MSViTConfig(preset("vit_demo_patch8_80")))
    moved = (trained.gate.mlp[0].weight - start.gate.mlp[0].weight).abs().max()
    recorded = json.loads((tmp_path / "two" / "config.json").read_text())["gate_training"]
    assert recorded["gradient"] == "flip" and moved > 1e-4


def quick_config(out: Path, epochs: int) -> TrainConfig:
    return TrainConfig(
        out=str(out),
        epochs=epochs,
        batch_size=16,
        train_size=48,
        val_size=32,
        lr=1e-3,
        warmup_epochs=0,
        gate_training=GateTraining(noise=False),
        gbas=GBaSConfig(target=0.35),
        scene=SceneConfig(),
        progress=False,
    )


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    straight = load_file(train(quick_config(tmp_path / "straight", 2)))
    real_epoch = train_module._train_epoch

    def interrupted(ddp, optimizer, schedule, train_set, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt
        real_epoch(ddp, optimizer, schedule, train_set, epoch, *args)

    monkeypatch.setattr(train_module, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(quick_config(tmp_path / "run", 2))
    out = tmp_path / "run"
    assert (out / "last.safetensors").is_file() and (out / "state.pt").is_file()
    assert not (out / "model.safetensors").exists() and not list(out.glob(".*tmp"))
    monkeypatch.setattr(train_module, "_train_epoch", real_epoch)
    cfg = quick_config(out, 2)
    cfg.resume = True
    resumed = load_file(train(cfg))
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=1e-6)
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "val_acc" in r and "epoch" in r] == [1, 2]
    (calibrated,) = [r["calibrated"] for r in records if "calibrated" in r]
    assert calibrated["fine_fraction"] == pytest.approx(0.35, abs=0.02)  # 32 images x 25 regions: quantile steps
    model, meta = load_checkpoint(out / "model.safetensors")
    assert model.config.threshold == meta["threshold"]["threshold"] == calibrated["threshold"]


def test_new_gate_keeps_the_backbone_and_starts_a_fresh_gate(tmp_path):
    torch.manual_seed(0)
    old = MSViT(MSViTConfig(preset("vit_demo_patch8_80", embed_dim=32, depth=1, num_heads=2)))
    with torch.no_grad():
        old.gate.mlp[-1].bias += 3.0  # a trained gate's state, unlike any fresh initialisation
    save_checkpoint(old, tmp_path / "old.safetensors")
    kept, _ = build_model(TrainConfig(init=str(tmp_path / "old.safetensors")))
    fresh, meta = build_model(TrainConfig(init=str(tmp_path / "old.safetensors"), new_gate=True))
    assert meta["new_gate"] and fresh.vit_config == old.vit_config
    backbone = [name for name in old.state_dict() if not name.startswith("gate.")]
    assert backbone and all(torch.equal(old.state_dict()[n], fresh.state_dict()[n]) for n in backbone)
    assert (fresh.gate.mlp[-1].bias - old.gate.mlp[-1].bias).abs().min() > 2.0  # not the +3 of the old gate
    torch.testing.assert_close(kept.gate.mlp[-1].bias, old.gate.mlp[-1].bias)


def test_freeze_backbone_trains_only_the_gate(tmp_path):
    torch.manual_seed(0)
    start = MSViT(MSViTConfig(preset("vit_demo_patch8_80")))
    save_checkpoint(start, tmp_path / "start.safetensors")
    cfg = quick_config(tmp_path / "run", 1)
    cfg.init, cfg.freeze_backbone = str(tmp_path / "start.safetensors"), True
    trained, _ = load_checkpoint(train(cfg))
    before, after = start.state_dict(), trained.state_dict()
    for name in before:
        assert torch.equal(before[name], after[name]) != name.startswith("gate."), name
    with pytest.raises(MsvitEdgeError, match="--freeze-backbone needs --stage msvit"):
        TrainConfig(stage="backbone", freeze_backbone=True)


def test_resume_without_state_is_a_clear_error(tmp_path):
    cfg = quick_config(tmp_path, 1)
    cfg.resume = True
    with pytest.raises(MsvitEdgeError, match="nothing to resume"):
        train(cfg)


def test_a_training_subset_still_re_renders_scenes_each_epoch():
    scenes = FashionMNISTScenes.from_split("test")
    rest, held_out = split(scenes, 100)
    train_set = random_subset(rest, 10)  # what --train-size makes of the split
    assert train_set.dataset is scenes and set(train_set.indices).isdisjoint(held_out.indices)
    first = train_set[0][0]
    set_epoch(train_set, 1)
    assert not torch.equal(train_set[0][0], first)
    set_epoch(train_set, 0)


def test_validation_scenes_stay_as_built_while_training_re_renders(tmp_path):
    cfg = quick_config(tmp_path, 1)
    train_set, val_set = split_datasets(cfg, _small_msvit())
    first_train, first_val = train_set[0][0], val_set[0][0]
    set_epoch(train_set, 1)
    assert not torch.equal(train_set[0][0], first_train)
    assert torch.equal(val_set[0][0], first_val)


def _small_msvit() -> MSViT:
    torch.manual_seed(0)
    return MSViT(MSViTConfig(preset("vit_demo_patch8_80", embed_dim=32, depth=2, num_heads=2)))


def _scene_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = FashionMNISTScenes.from_split("test")
    return torch.stack([scenes[i][0] for i in range(n)]), torch.tensor([scenes[i][1] for i in range(n)])


def test_flip_gain_is_the_loss_change_from_tokenizing_the_region_fine():
    model = _small_msvit().train()
    images, labels = _scene_batch(8)
    fine = (torch.rand(8, model.num_regions) < 0.4).float()
    regions = torch.randint(model.num_regions, (8,))
    rows = torch.arange(8)

    def loss(decisions):
        out = model.tokenize(images, decisions=decisions)
        return F.cross_entropy(model.encode(*pack(out.tokens, out.counts)), labels, reduction="none")

    with torch.no_grad():
        as_fine, as_coarse = fine.clone(), fine.clone()
        as_fine[rows, regions], as_coarse[rows, regions] = 1.0, 0.0
        expected = loss(as_fine) - loss(as_coarse)
        gain = flip_gain(model, images, labels, fine, regions, loss(fine), 0.0)
    assert fine[rows, regions].min() == 0 < fine[rows, regions].max()  # both flip directions are exercised
    assert expected.abs().min() > 1e-6  # every flip changes the loss: a sign error could not hide
    torch.testing.assert_close(gain, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gradient", ["flip", "straight-through"])
def test_the_task_loss_reaches_the_gate_only_through_the_chosen_gradient(gradient):
    model = _small_msvit().train()
    step = TrainStep(model, TrainConfig(gate_training=GateTraining(gradient=gradient)))
    images, labels = _scene_batch(16)
    logits, _, _, surrogate = step(images, labels)
    task = F.cross_entropy(logits, labels)
    gate = list(model.gate.parameters())
    through_task = torch.autograd.grad(task, gate, allow_unused=True, retain_graph=True)
    assert all(g is None for g in through_task) == (gradient == "flip")
    if gradient == "flip":
        through_flip = torch.autograd.grad(surrogate, gate)
        assert sum(g.abs().sum() for g in through_flip) > 0
    else:
        assert surrogate == 0


def test_flip_fraction_estimates_from_the_first_images_as_a_smaller_batch_would():
    model = _small_msvit().train()
    exact = GateTraining(noise=False)  # decisions draw nothing: only the regions do
    images, labels = _scene_batch(16)
    torch.manual_seed(3)
    *_, quarter = TrainStep(model, TrainConfig(flip_fraction=0.25, gate_training=exact))(images, labels)
    torch.manual_seed(3)
    *_, small = TrainStep(model, TrainConfig(gate_training=exact))(images[:4], labels[:4])
    torch.manual_seed(3)
    *_, whole = TrainStep(model, TrainConfig(gate_training=exact))(images, labels)
    torch.testing.assert_close(quarter, small, rtol=1e-5, atol=1e-6)
    assert (quarter - whole).abs() > 1e-4  # the other 12 images would have changed it
    with pytest.raises(MsvitEdgeError, match="--flip-fraction"):
        TrainConfig(flip_fraction=0)


@pytest.mark.parametrize("lr", [1e-6, 1e-3, 0.5])
def test_the_schedule_never_exceeds_the_peak_and_ends_at_its_fraction(lr):
    cfg = TrainConfig(lr=lr, epochs=10, warmup_epochs=0.5)
    factor = lr_lambda(cfg, 100)
    factors = [factor(step) for step in range(1001)]
    assert max(factors) == 1.0 and factors[-1] == pytest.approx(cfg.min_lr_fraction)
    assert factors[50:] == sorted(factors[50:], reverse=True)  # warm-up, then only down


def test_training_at_a_small_peak_lr_never_steps_above_it(tmp_path):
    flags = [f for f in QUICK if f not in ("--lr", "1e-3")]
    run = cli("--out", str(tmp_path / "run"), *flags, "--lr", "1e-6", "--stage", "backbone")
    assert run.returncode == 0, run.stderr[-2000:]
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)  # the lr after the last step
    logged = [json.loads(line).get("lr", 0) for line in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    final = [group["lr"] for group in state["optimizer"]["param_groups"]]
    assert max(logged) == 1e-6 and max(final) == pytest.approx(1e-8)
