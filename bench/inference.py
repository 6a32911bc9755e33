#!/usr/bin/env python3
"""Inference benchmark: EVA-X-S at 224, batch 32, 2 threads — evax (C++) vs timm (Python) on the
same machine, run one after the other. Prints both rates and the ratio evax / timm.

usage: bench/inference.py [--evax build/bench/evax_bench_infer] [--batch 32] [--threads 2]
"""
import argparse
import json
import subprocess
import time

import torch
from timm.models.eva import Eva


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evax", default="build/bench/evax_bench_infer")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = Eva(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4 * 2 / 3,
            swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(14, 14), num_classes=0).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(args.warmup):
            m.forward_head(m.forward_features(x), pre_logits=True)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            m.forward_head(m.forward_features(x), pre_logits=True)
        timm_rate = args.batch * args.iters / (time.perf_counter() - t0)

    out = subprocess.run([args.evax, "--model", "eva_x_small_patch16", "--batch", str(args.batch),
                          "--threads", str(args.threads), "--iters", str(args.iters),
                          "--warmup", str(args.warmup)], check=True, capture_output=True, text=True)
    evax_rate = json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]
    print(json.dumps({"model": "eva_x_small_patch16", "batch": args.batch, "threads": args.threads,
                      "torch": torch.__version__, "timm_images_per_s": round(timm_rate, 2),
                      "evax_images_per_s": round(evax_rate, 2),
                      "ratio_evax_over_timm": round(evax_rate / timm_rate, 3)}))


if __name__ == "__main__":
    main()
