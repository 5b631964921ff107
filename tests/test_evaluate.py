"""msvit-edge eval on real Fashion-MNIST scenes with a small MSViT: baselines, MACs, object scores, report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from msvit_edge.data import FashionMNISTScenes, open_dataset
from msvit_edge.data.subsets import random_subset
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.evaluate import EvalConfig, evaluate, object_regions
from msvit_edge.model.checkpoint import save_checkpoint
from msvit_edge.model.config import MSViTConfig, preset
from msvit_edge.model.flops import msvit_macs
from msvit_edge.model.msvit import MSViT


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(preset("vit_demo_patch8_80", embed_dim=32, depth=1, num_heads=2)))
    scenes = FashionMNISTScenes.from_split("test")
    x = torch.stack([scenes[i][0] for i in range(64)])
    with torch.no_grad():  # centre the untrained gate on real scenes so that its decisions vary
        model.gate.mlp[-1].bias -= model.gate(x).quantile(0.7)
    save_checkpoint(model, root / "m.safetensors")
    cfg = EvalConfig(
        ckpt=str(root / "m.safetensors"),
        out=str(root / "out"),
        limit=40,
        overlays=3,
        batch_size=16,
        thresholds=(0.3, 0.5, 0.7),
    )
    return evaluate(cfg), root, model


def test_baselines_have_the_token_counts_they_promise(report):
    r, _, _ = report
    s = r["settings"]
    assert s["all-fine"]["tokens_min"] == s["all-fine"]["tokens_max"] == 101
    assert s["all-coarse"]["tokens_min"] == s["all-coarse"]["tokens_max"] == 26
    for key in ("tokens_mean", "tokens_std", "tokens_min", "tokens_max", "gmacs"):
        assert s["random"][key] == s["msvit"][key]  # same count per image, only the positions differ
    assert [s[f"t={t:.2f}"]["tokens_mean"] for t in (0.3, 0.5, 0.7)] == sorted(
        (s[f"t={t:.2f}"]["tokens_mean"] for t in (0.3, 0.5, 0.7)), reverse=True
    )
    assert r["images"] == 40 and r["task"] == "classification"


@pytest.fixture(scope="module")
def recount(report):
    """The gate's answers on the 40 images evaluate drew, recounted with the model in one batch."""
    _, _, model = report
    vit = model.vit_config
    drawn = random_subset(open_dataset("fashion-mnist-scenes", "test", vit.img_size, vit.mean, vit.std), 40)
    x = torch.stack([drawn[i][0] for i in range(len(drawn))])
    labels = torch.tensor([int(drawn[i][1]) for i in range(len(drawn))])
    with torch.no_grad():
        out = model.eval().tokenize(x)
        logits = model(x)
    return logits.argmax(1) == labels, out.counts, model.fine_regions(out), object_regions(drawn, model)


def test_msvit_scores_are_the_recounted_answers(report, recount):
    correct, counts, _, _ = recount
    m = report[0]["settings"]["msvit"]
    assert m["top1"] == pytest.approx(correct.float().mean().item())
    assert (m["tokens_min"], m["tokens_max"]) == (counts.min().item(), counts.max().item())
    assert m["tokens_mean"] == pytest.approx(counts.float().mean().item())


def test_gmacs_are_what_each_setting_computes_as_deployed(report, count_macs):
    r, _, model = report
    s, vit, gate = r["settings"], model.vit_config, model.config.gate
    x = torch.zeros(1, 3, 80, 80)
    plain_vit = count_macs(model, lambda: model.encode(model.embed(x)))  # all fine: no gate, no coarse tokens
    coarse = count_macs(model, model.coarse_embed, x) + count_macs(model, model.encode, torch.zeros(1, 26, 32))
    assert s["all-fine"]["gmacs"] == pytest.approx(plain_vit / 1e9)
    assert s["all-coarse"]["gmacs"] == pytest.approx(coarse / 1e9)
    m = s["msvit"]
    assert m["tokens_min"] < m["tokens_max"]  # the centred gate gives mixed counts
    # the mean of per-image MACs: between the extremes, and above the MACs of the mean count (MACs are convex in N)
    assert msvit_macs(vit, gate, m["tokens_min"]) / 1e9 < m["gmacs"] < msvit_macs(vit, gate, m["tokens_max"]) / 1e9
    assert m["gmacs"] >= msvit_macs(vit, gate, m["tokens_mean"]) / 1e9 * (1 - 1e-9)


def test_object_scores_bracket_the_gate(report):
    o = report[0]["object"]
    assert o["all-fine"]["recall"] == 1.0 and o["all-coarse"]["recall"] == 0.0
    assert o["all-fine"]["precision"] == pytest.approx(o["object_region_share"])
    assert 0.0 < o["object_region_share"] < 0.5  # the object covers well under half of the regions
    assert o["random"] != o["msvit"]  # as many fine regions per image as the gate's, elsewhere
    assert o["random"]["precision"] == pytest.approx(o["object_region_share"], abs=0.1)  # blind to the object


def test_object_scores_are_the_recounted_regions(report, recount):
    _, _, fine, on_object = recount
    o = report[0]["object"]
    hits = (fine & on_object).sum().item()
    assert o["object_region_share"] == pytest.approx(on_object.float().mean().item())
    assert o["msvit"]["recall"] == pytest.approx(hits / on_object.sum().item())
    assert o["msvit"]["precision"] == pytest.approx(hits / fine.sum().item())
    assert o["precision_vs_random"] == pytest.approx(hits / fine.sum().item() / o["random"]["precision"])


def test_object_oracle_is_fine_exactly_where_the_object_is(report):
    r = report[0]
    o, s = r["object"], r["settings"]["object-oracle"]
    assert o["object-oracle"]["recall"] == 1.0 and o["object-oracle"]["precision"] == 1.0
    # 25 regions + CLS, plus 3 more tokens per fine region: the oracle's mean count follows the object's share
    assert s["tokens_mean"] == pytest.approx(26 + 3 * 25 * o["object_region_share"])
    assert s["tokens_min"] < s["tokens_max"]


def test_report_files_are_written_whole(report):
    r, root, _ = report
    out = root / "out"
    assert json.loads((out / "report.json").read_text())["settings"]["msvit"] == r["settings"]["msvit"]
    assert "| all-fine |" in (out / "report.md").read_text()
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["000.png", "001.png", "002.png"]
    with pytest.raises(MsvitEdgeError, match="output folder exists"):
        evaluate(EvalConfig(ckpt=str(root / "m.safetensors"), out=str(out), limit=4))
    assert not list(root.glob(".out*"))


def test_limit_evaluates_a_random_draw_not_the_first_images(tmp_path):
    """Sorted by class, the first 40 images are all class 0, where a model that always answers 0 scores 100%."""
    labels = np.r_[np.zeros(40, np.int64), 1 + np.arange(60) % 9]
    np.savez(tmp_path / "sorted.npz", images=np.zeros((100, 80, 80, 3), np.uint8), labels=labels)
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(preset("vit_demo_patch8_80", embed_dim=32, depth=1, num_heads=2)))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_((torch.arange(10) == 0).float())  # always class 0
    save_checkpoint(model, tmp_path / "zero.safetensors")
    data, out = str(tmp_path / "sorted.npz"), str(tmp_path / "out")
    r = evaluate(EvalConfig(str(tmp_path / "zero.safetensors"), data, out=out, limit=40, overlays=0, thresholds=()))
    assert r["images"] == 40 and 0.2 < r["settings"]["msvit"]["top1"] < 0.7  # a random 40 holds about 40% zeros


def test_split_val_is_the_validation_set_training_held_out(tmp_path):
    from dataclasses import asdict

    from msvit_edge.data import SceneConfig
    from msvit_edge.measure.evaluate import _dataset
    from msvit_edge.training import train as train_module
    from msvit_edge.training.train import TrainConfig

    model = MSViT(MSViTConfig(preset("vit_demo_patch8_80", embed_dim=32, depth=1, num_heads=2)))
    cfg = TrainConfig(out=str(tmp_path), val_size=24, seed=3, scene=SceneConfig(noise=0.05, seed=3))
    _, held_out = train_module._datasets(cfg, model)
    val = _dataset(EvalConfig(split="val"), model, {"train": asdict(cfg)})
    assert val.indices == held_out.indices and len(val) == 24
    assert torch.equal(val[5][0], held_out[5][0])  # same renders: the recorded scene settings are used
    with pytest.raises(MsvitEdgeError, match="records no training run"):
        _dataset(EvalConfig(split="val"), model, {})
    with pytest.raises(MsvitEdgeError, match="--split val needs that --data"):
        _dataset(EvalConfig(split="val", data=str(tmp_path)), model, {"train": asdict(cfg)})
