#!/usr/bin/env python3
"""Inference benchmark: EVA-X-S at 224, batch 32, 2 threads — evax (C++) vs timm (Python) on the
same machine, run one after the other. Prints both rates and the ratio evax / timm.

--precision bf16|both: the same with the same weights and pixels on both sides, under bf16
autocast (timm: torch.autocast('cpu', dtype=torch.bfloat16); evax: --bf16), and with `both` in
float32 too; adds the bf16 speed-up of each side and the max abs / relative difference of the
pooled features bf16 vs float32 (and evax vs timm).

usage: bench/inference.py [--evax build/bench/evax_bench_infer] [--batch 32] [--threads 2]
                          [--precision fp32|bf16|both]
"""
import argparse
import json
import os
import subprocess
import tempfile
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
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="fp32")
    args = ap.parse_args()
    if args.precision != "fp32":
        return compare_precisions(args)

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


def compare_precisions(args):
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = Eva(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4 * 2 / 3,
            swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(14, 14), num_classes=0).eval()
    # Random weights as timm initialises them, LayerNorm gains perturbed so no block is trivial.
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(args.batch, 3, 224, 224)
    precisions = ["fp32", "bf16"] if args.precision == "both" else ["bf16"]
    out = {"model": "eva_x_small_patch16", "batch": args.batch, "threads": args.threads,
           "torch": torch.__version__}
    timm_feats, evax_feats = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        weights, pixels = os.path.join(tmp, "w.safetensors"), os.path.join(tmp, "x.safetensors")
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, weights)
        save_file({"pixel_values": x}, pixels)
        for prec in precisions:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                        enabled=prec == "bf16"):
                for _ in range(args.warmup):
                    m.forward_head(m.forward_features(x), pre_logits=True)
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    m.forward_head(m.forward_features(x), pre_logits=True)
                rate = args.batch * args.iters / (time.perf_counter() - t0)
                timm_feats[prec] = m.forward_head(m.forward_features(x), pre_logits=True).float()
            out[f"timm_{prec}_images_per_s"] = round(rate, 2)
            feats = os.path.join(tmp, f"f_{prec}.safetensors")
            cmd = [args.evax, "--model", "eva_x_small_patch16", "--threads", str(args.threads),
                   "--iters", str(args.iters), "--warmup", str(args.warmup), "--checkpoint", weights,
                   "--input", pixels, "--features", feats] + (["--bf16"] if prec == "bf16" else [])
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            ev = json.loads(res.stdout.strip().splitlines()[-1])
            out[f"evax_{prec}_images_per_s"] = round(ev["images_per_s"], 2)
            out[f"ratio_evax_over_timm_{prec}"] = round(ev["images_per_s"] / rate, 3)
            evax_feats[prec] = load_file(feats)["pooled"]

    def diff(a, b):
        return {"max_abs": float((a - b).abs().max()), "rel_l2": float((a - b).norm() / b.norm())}

    out["pooled_evax_vs_timm_bf16"] = diff(evax_feats["bf16"], timm_feats["bf16"])
    if "fp32" in timm_feats:
        for side, f in (("timm", timm_feats), ("evax", evax_feats)):
            out[f"{side}_bf16_speedup"] = round(out[f"{side}_bf16_images_per_s"] /
                                                out[f"{side}_fp32_images_per_s"], 3)
            out[f"pooled_{side}_bf16_vs_fp32"] = diff(f["bf16"], f["fp32"])
        out["pooled_evax_vs_timm_fp32"] = diff(evax_feats["fp32"], timm_feats["fp32"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
