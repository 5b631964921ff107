"""Training-step cost of MSViT at its budget against the all-fine ViT step, measured interleaved in one run.

    python benchmarks/train_step.py [--ckpt CKPT] [--batch-size 128] [--repeats 20] [--device cpu]

Both steps are ``msvit_edge.train.train_step`` (forward, losses, backward, AdamW) on the same model and the same
real scene images: "all-fine" is stage 1's step (every fine token, gate unused), "msvit" is stage 2's (gate with
Gumbel noise, mixed tokens padded to the batch maximum, gBaS). Reported: median step times, their ratio, and the
ideal ratio from the MAC model at the tokens the MSViT steps actually used.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from msvit_edge.checkpoint import load_model
from msvit_edge.data import FashionMNISTScenes
from msvit_edge.flops import encoder_macs
from msvit_edge.loss import GBaSConfig
from msvit_edge.timing import interleaved
from msvit_edge.train import TrainConfig, TrainStep, train_step


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
    fine_cfg = replace(cfg, stage="backbone")
    fine = TrainStep(model, fine_cfg).to(args.device).train()  # stage 1's step: freezes the gate ...
    dyn = TrainStep(model, cfg).to(args.device).train()  # ... stage 2's step: unfreezes it (built second)
    optimizer = torch.optim.AdamW(dyn.parameters(), lr=1e-5)  # the model's and the gBaS priors' parameters
    scenes = FashionMNISTScenes.from_split("train")
    images = torch.stack([scenes[i][0] for i in range(args.batch_size)]).to(args.device)
    labels = torch.tensor([scenes[i][1] for i in range(args.batch_size)], device=args.device)
    tokens: list[float] = []

    def fine_step(_: int) -> None:
        train_step(fine, None, images, labels, optimizer, fine_cfg)

    def msvit_step(_: int) -> None:
        tokens.append(train_step(dyn, dyn.gbas, images, labels, optimizer, cfg).counts.mean().item())

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    times = interleaved({"all-fine": fine_step, "msvit": msvit_step}, args.repeats, warmup=3, sync=sync)
    fine_time, dyn_time = statistics.median(times["all-fine"]), statistics.median(times["msvit"])
    n = statistics.mean(tokens)
    ideal = encoder_macs(model.cfg, n) / encoder_macs(model.cfg, model.cfg.num_patches + 1)
    print(f"training step, batch {args.batch_size}, {args.device}, median of {args.repeats} interleaved:")
    print(f"  all-fine (101 tokens)      {1e3 * fine_time:8.1f} ms")
    print(f"  msvit ({n:5.1f} tokens mean)  {1e3 * dyn_time:8.1f} ms")
    print(f"  msvit / all-fine = {dyn_time / fine_time:.3f}   (ideal encoder MACs ratio {ideal:.3f})")


if __name__ == "__main__":
    main()
