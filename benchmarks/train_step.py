"""Training-step cost of MSViT at its budget against the all-fine ViT step, measured interleaved in one run.

    python benchmarks/train_step.py [--ckpt CKPT] [--batch-size 128] [--repeats 20] [--device cpu]

Both steps are ``msvit_edge.training.step.train_step`` (forward, losses, backward, AdamW) on the same model and
the same real scene images: "all-fine" is stage 1's step (every fine token, gate unused), "msvit" is stage 2's (gate
with Gumbel noise, mixed tokens padded to the batch maximum, gBaS), with each gate gradient (flip on the whole batch and
on a quarter of it). Reported: median step times, their ratios to all-fine, and the ideal ratio from the MAC model
at the tokens the MSViT steps used.
"""

from __future__ import annotations

import argparse
import statistics
from copy import deepcopy
from dataclasses import replace

import torch

from msvit_edge.data import FashionMNISTScenes
from msvit_edge.measure.timing import interleaved
from msvit_edge.model.checkpoint import load_model
from msvit_edge.model.flops import encoder_macs
from msvit_edge.training.config import TrainConfig
from msvit_edge.training.loss import GBaSConfig
from msvit_edge.training.step import TrainStep, train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="msvit-edge checkpoint (default: the embedded demo)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    model, meta = load_model(args.ckpt)
    target = (meta.get("train") or {}).get("gbas", {}).get("target", 0.35)
    cfg = TrainConfig(gbas=GBaSConfig(target=target), batch_size=args.batch_size)
    scenes = FashionMNISTScenes.from_split("train")
    images = torch.stack([scenes[i][0] for i in range(args.batch_size)]).to(args.device)
    labels = torch.tensor([scenes[i][1] for i in range(args.batch_size)], device=args.device)
    tokens: list[float] = []

    def step(stage: str, gradient: str, flip_fraction: float = 1.0):
        """A step function on its own copy of the model (TrainStep gives the model the run's gate training)."""
        gate_training = replace(cfg.gate_training, gradient=gradient)
        run_cfg = replace(cfg, stage=stage, flip_fraction=flip_fraction, gate_training=gate_training)
        module = TrainStep(deepcopy(model), run_cfg).to(args.device).train()
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)

        def run(_: int) -> None:
            result = train_step(module, module.gbas, images, labels, optimizer, run_cfg)
            if stage == "msvit":
                tokens.append(result.counts.mean().item())

        return run

    steps = {
        "all-fine": step("backbone", "flip"),
        "msvit, flip gradient": step("msvit", "flip"),
        "msvit, flip on 1/4 of batch": step("msvit", "flip", 0.25),
        "msvit, straight-through": step("msvit", "straight-through"),
    }
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    times = {k: statistics.median(v) for k, v in interleaved(steps, args.repeats, warmup=3, sync=sync).items()}
    n = statistics.mean(tokens)
    ideal = encoder_macs(model.vit_config, n) / encoder_macs(model.vit_config, model.vit_config.token_range.max)
    print(f"training step, batch {args.batch_size}, {args.device}, median of {args.repeats} interleaved:")
    for name, t in times.items():
        print(f"  {name:28s} {1e3 * t:8.1f} ms   / all-fine = {t / times['all-fine']:.3f}")
    print(f"  ideal encoder MACs ratio at the {n:.1f} tokens the msvit steps used: {ideal:.3f}")
    print("  (the flip gradient adds one no-grad forward of the mixed tokens per step, --flip-fraction of the batch)")


if __name__ == "__main__":
    main()
