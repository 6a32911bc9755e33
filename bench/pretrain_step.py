#!/usr/bin/env python3
"""Pretraining-step benchmark: EVA-X-S student + frozen ViT-B/16 teacher at 224, batch 8, 2 threads.
The same step in Python (timm Eva with a mask token and lm_head, timm VisionTransformer teacher,
torch AdamW, clipping) and in evax (build/bench/evax_bench_pretrain), one after the other on the
same machine. Prints images/s, peak RSS of each, and the ratio evax / timm.

usage: bench/pretrain_step.py [--evax build/bench/evax_bench_pretrain] [--batch 8] [--threads 2]
"""
import argparse
import json
import subprocess
import time

import torch
import torch.nn.functional as F
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evax", default="build/bench/evax_bench_pretrain")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teacher = VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                num_classes=0).eval().requires_grad_(False)
    student = Eva(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                  mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True,
                  ref_feat_shape=(14, 14), num_classes=0)
    mask_token = torch.nn.Parameter(torch.zeros(1, 1, 384))
    norm = torch.nn.LayerNorm(384, eps=1e-6)
    lm_head = torch.nn.Linear(384, 768)
    params = list(student.parameters()) + [mask_token] + list(norm.parameters()) + list(lm_head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)

    b = args.batch
    x, xt = torch.randn(b, 3, 224, 224), torch.randn(b, 3, 224, 224)
    mask = torch.zeros(b, 196, dtype=torch.bool)
    mask[:, torch.randperm(196)[:59]] = True

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            tgt = teacher.forward_features(xt)[:, 1:]
        t = student.patch_embed(x)
        t = t * 0.1 + t.detach() * 0.9  # stop_grad_conv1
        w = mask.unsqueeze(-1).type_as(t)
        t = t * (1 - w) + mask_token * w
        t, rope = student._pos_embed(t)
        for blk in student.blocks:
            t = blk(t, rope=rope)
        pred = lm_head(norm(t)[:, 1:])
        loss = -F.cosine_similarity(pred[mask].float(), tgt[mask].float(), dim=-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    timm_rate = b * args.iters / (time.perf_counter() - t0)
    with open("/proc/self/status") as f:  # VmHWM: this process's peak resident memory
        timm_rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024.0

    out = subprocess.run([args.evax, "--batch", str(b), "--threads", str(args.threads),
                          "--iters", str(args.iters), "--warmup", str(args.warmup)],
                         check=True, capture_output=True, text=True)
    ev = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"student": "eva_x_small_patch16", "teacher": "vit_base_patch16 (MGCA)",
                      "batch": b, "threads": args.threads, "torch": torch.__version__,
                      "timm_images_per_s": round(timm_rate, 2), "timm_peak_rss_mb": round(timm_rss),
                      "evax_images_per_s": round(ev["images_per_s"], 2),
                      "evax_peak_rss_mb": round(ev["peak_rss_mb"]),
                      "ratio_evax_over_timm": round(ev["images_per_s"] / timm_rate, 3)}))


if __name__ == "__main__":
    main()
