#!/usr/bin/env python3
"""Grad-CAM benchmark: maps/s for a batch of 16 at 224 on EVA-X-S with a 14-class head, 2 threads,
EVA-X's set-up (target layer blocks[-1].norm1, cls token dropped, top class) — evax (C++,
bench/cam_bench.cpp) vs the `grad-cam` package on timm's Eva, on the same machine, one after the
other. Prints both rates and the ratio evax / package.

usage: bench/cam.py [--evax build/bench/evax_bench_cam] [--batch 16] [--threads 2] [--iters 5]
"""
import argparse
import json
import subprocess
import time

import torch
from pytorch_grad_cam import GradCAM
from timm.models.eva import Eva


def reshape_transform(tensor, h=14, w=14):
    """EVA-X grad_cam/get_cams.py: drop the cls token, tokens -> (B, D, H, W)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), h, w, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evax", default="build/bench/evax_bench_cam")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = Eva(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4 * 2 / 3,
            swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(14, 14), num_classes=14,
            global_pool="avg").eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with GradCAM(model=m, target_layers=[m.blocks[-1].norm1],
                 reshape_transform=reshape_transform) as cam:
        for _ in range(args.warmup):
            cam(input_tensor=x, targets=None)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            cam(input_tensor=x, targets=None)
        pkg_rate = args.batch * args.iters / (time.perf_counter() - t0)

    out = subprocess.run([args.evax, "--model", "eva_x_small_patch16", "--batch", str(args.batch),
                          "--threads", str(args.threads), "--iters", str(args.iters),
                          "--warmup", str(args.warmup)], check=True, capture_output=True, text=True)
    evax_rate = json.loads(out.stdout.strip().splitlines()[-1])["maps_per_s"]
    print(json.dumps({"model": "eva_x_small_patch16", "batch": args.batch, "threads": args.threads,
                      "torch": torch.__version__, "package_maps_per_s": round(pkg_rate, 2),
                      "evax_maps_per_s": round(evax_rate, 2),
                      "ratio_evax_over_package": round(evax_rate / pkg_rate, 3)}))


if __name__ == "__main__":
    main()
