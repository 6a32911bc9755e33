#!/usr/bin/env python3
"""Segmentation benchmark: one training step of UperNet-EVA-X-S at 512, batch 2, 2 threads.
One step = forward in train mode (drop path 0.15 on the last block, linear over depth; Dropout2d
0.1; BatchNorm on batch statistics), the decode logits resized bilinearly (align_corners False)
to 512 and mmseg 0.29's CrossEntropyLoss(use_sigmoid=True) against a fixed random 0/1 mask
(B, 512, 512): per-pixel BCE-with-logits, weighted by the non-ignored mask, mean over all pixels;
backward; torch AdamW (lr 6e-5, betas 0.9/0.999, eps 1e-8, weight decay 0.05) over mmseg's
LayerDecayOptimizerConstructor groups (rate 0.85, num_layers 12: id 0 for backbone
cls_token/pos_embed/patch_embed, i + 1 for backbone.blocks.i, 13 for the rest; no decay for 1-D
parameters and *.bias); zero_grad.

The reference ("ref") is the plain-torch, mmseg-structured UperNet of tools/upernet_reference.py
(Segmentor: timm Eva backbone as EVA_X runs it, EVA_X's simple pyramid, mmseg's UPerHead) with
EVA-X-S's full settings (depth 12, decoder channels 256, pool scales 1/2/3/6, use_last_feat_only
with out index 11, one sigmoid channel, no auxiliary head); evax is build/bench/evax_bench_segment
(UperNet, segmentation_loss, AdamW over make_param_groups, as SegmentTask trains). They run one
after the other on the same machine (--interleave: both alive at once, timed steps alternating,
for a machine with background load). Prints s/step (median of the timed steps after warmup), its
forward(+loss)/backward/optimizer split, the peak RSS of each side, and the ratio ref / evax
(> 1: evax faster). "other_cpu_cores" as in finetune_step.py: how many cores other processes kept
busy meanwhile; well above 0 means the numbers are disturbed.

--profile DIR: instead, record the timed steps of each side with the CPU profiler of
torch.profiler (DIR/ref.json, DIR/evax.json, chrome traces) and print the self time per op and
step, side by side.

usage: bench/segment_step.py [--evax build/bench/evax_bench_segment] [--batch 2] [--threads 2]
                             [--interleave | --profile DIR]
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from finetune_step import EvaxServer, OtherCpu, self_ms_per_op, vm_hwm_mb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from upernet_reference import Segmentor, resize  # noqa: E402

LR, BETAS, EPS, WEIGHT_DECAY, LAYER_DECAY, NUM_LAYERS = 6e-5, (0.9, 0.999), 1e-8, 0.05, 0.85, 12
IGNORE_INDEX = 255


def mmseg_name(n):
    """Segmentor parameter name -> mmseg's (the ViT and the pyramid live under `backbone.`)."""
    for ours, theirs in (("eva.", "backbone."), ("pyramid.", "backbone.")):
        if n.startswith(ours):
            return theirs + n[len(ours):]
    return n


def layer_decay_groups(model, weight_decay, rate, num_layers):
    """mmseg/EVA's LayerDecayOptimizerConstructor (mmcv_custom/layer_decay_optimizer_constructor)."""
    num_max = num_layers + 2

    def layer_id(n):
        if n in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed") or \
                n.startswith("backbone.patch_embed"):
            return 0
        if n.startswith("backbone.blocks"):
            return int(n.split(".")[2]) + 1
        return num_max - 1

    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        n = mmseg_name(n)
        decay = not (p.ndim == 1 or n.endswith(".bias"))
        lid = layer_id(n)
        g = groups.setdefault(f"layer_{lid}_{'decay' if decay else 'no_decay'}",
                              {"lr_scale": rate ** (num_max - lid - 1), "params": [],
                               "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
    return list(groups.values())


def mmseg_sigmoid_bce(logits, label):
    """mmseg 0.29 binary_cross_entropy for one channel: BCE-with-logits per pixel, weighted by the
    non-ignored mask, mean over every pixel (weight_reduce_loss without avg_factor)."""
    pred = logits.squeeze(1)
    valid = ((label >= 0) & (label != IGNORE_INDEX)).float()
    loss = F.binary_cross_entropy_with_logits(pred, label.float(), reduction="none")
    return (loss * valid).mean()


class RefBench:
    """The reference side, one training step at a time (as evax_bench_segment)."""

    def __init__(self, args):
        c = dict(arch="eva_x_small_patch16", depth=12, img=args.size, out_indices=[11],
                 last_only=True, aux=False, num_classes=2, out_channels=1, channels=256)
        self.model = Segmentor(c)
        eva = self.model.eva
        eva.norm = nn.Identity()  # EVA_X has no final norm (unused by vit_maps; not optimised)
        depth = len(eva.blocks)
        for i, blk in enumerate(eva.blocks):  # EVA_X: drop path linear in depth up to the rate
            r = args.drop_path * i / (depth - 1) if depth > 1 else args.drop_path
            blk.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
            blk.drop_path2 = DropPath(r) if r > 0 else nn.Identity()
        groups = layer_decay_groups(self.model, WEIGHT_DECAY, args.layer_decay, NUM_LAYERS)
        self.opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
        self.params = sum(p.numel() for g in groups for p in g["params"])
        self.x = torch.randn(args.batch, 3, args.size, args.size)
        # mmseg's DefaultFormatBundle hands the loss int64 labels.
        self.y = torch.randint(0, 2, (args.batch, args.size, args.size))

    def train_step(self):
        """Seconds: whole step, forward + loss, backward, optimizer step + zero_grad."""
        self.model.train()
        t0 = time.perf_counter()
        for g in self.opt.param_groups:  # mmcv's lr updater hook sets every group's lr each iter
            g["lr"] = LR * g["lr_scale"]
        logits, _, _ = self.model(self.x)
        loss = mmseg_sigmoid_bce(resize(logits, self.y.shape[1:]), self.y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad()
        t3 = time.perf_counter()
        return {"s": t3 - t0, "forward_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2}


def evax_args(args):
    return ["--batch", str(args.batch), "--threads", str(args.threads), "--iters", str(args.iters),
            "--warmup", str(args.warmup), "--size", str(args.size),
            "--drop-path", str(args.drop_path), "--layer-decay", str(args.layer_decay)]


def summary(train, rss, params):
    """Medians of per-step dicts -> the evax binary's JSON fields."""
    med = {k: statistics.median(t[k] for t in train) for k in train[0]}
    return {"s_per_step": med["s"], "params": params, "forward_s": med["forward_s"],
            "backward_s": med["backward_s"], "optimizer_s": med["optimizer_s"],
            "peak_rss_mb": rss}


def run_sequential(args):
    """The reference's warmup + timed steps, then the evax binary's, one after the other."""
    with OtherCpu() as ref_other:
        rb = RefBench(args)
        for _ in range(args.warmup):
            rb.train_step()
        ref = summary([rb.train_step() for _ in range(args.iters)], vm_hwm_mb(), rb.params)
    del rb
    gc.collect()  # the reference model and optimizer state are gone before evax starts
    with OtherCpu(children=True) as evax_other:
        out = subprocess.run([args.evax] + evax_args(args), check=True, capture_output=True,
                             text=True)
    evax = json.loads(out.stdout.strip().splitlines()[-1])
    return ref, evax, ref_other.cores, evax_other.cores


def run_interleaved(args):
    """Both sides live at once; warmups first, then timed steps alternating ref/evax (ABBA order),
    so that background load on a shared machine falls on both alike."""
    rb, ev = RefBench(args), EvaxServer([args.evax, "--serve"] + evax_args(args))
    try:
        with OtherCpu(pid=ev.p.pid) as other:
            for _ in range(args.warmup):
                rb.train_step(), ev.train_step()
            r_train, e_train = [], []
            for i in range(args.iters):
                for side in ((rb, r_train), (ev, e_train))[::1 if i % 2 == 0 else -1]:
                    side[1].append(side[0].train_step())
            r_rss, e_rss = vm_hwm_mb(), ev.peak_rss_mb()
    finally:
        ev.close()
    return (summary(r_train, r_rss, rb.params), summary(e_train, e_rss, ev.ready["params"]),
            other.cores, None)


def run_profile(args):
    os.makedirs(args.profile, exist_ok=True)
    ref_trace, evax_trace = (os.path.join(args.profile, n) for n in ("ref.json", "evax.json"))
    # evax first, as finetune_step.py --profile does (a child started after the profiled Python
    # steps ran slower than on its own).
    with OtherCpu(children=True) as evax_other:
        shapes = ["--profile-shapes"] if args.by_shape else []
        r = subprocess.run([args.evax, "--profile", evax_trace] + shapes + evax_args(args),
                           capture_output=True, text=True)  # stderr: the profiler's log lines
    if r.returncode != 0:
        raise RuntimeError(f"{args.evax} --profile failed ({r.returncode}):\n{r.stderr}")
    with OtherCpu() as ref_other:
        rb = RefBench(args)
        for _ in range(args.warmup):
            rb.train_step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    record_shapes=args.by_shape) as prof:
            for _ in range(args.iters):
                rb.train_step()
        prof.export_chrome_trace(ref_trace)
    t, e = (self_ms_per_op(f, args.iters, args.by_shape) for f in (ref_trace, evax_trace))
    names = sorted(set(t) | set(e), key=lambda n: -max(t.get(n, 0.0), e.get(n, 0.0)))
    print(f"self ms per step (batch {args.batch}, {args.size} px, {args.threads} threads, "
          f"{args.iters} steps)")
    w = 110 if args.by_shape else 60
    print(f"{'op':{w}s} {'ref':>9s} {'evax':>9s}")
    for n in names[:args.profile_top]:
        print(f"{n[:w]:{w}s} {t.get(n, 0.0):9.1f} {e.get(n, 0.0):9.1f}")
    print(f"{'(all ops)':{w}s} {sum(t.values()):9.1f} {sum(e.values()):9.1f}")
    print(f"{'(other processes, cores)':{w}s} {ref_other.cores:9.2f} {evax_other.cores:9.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evax", default="build/bench/evax_bench_segment")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--drop-path", type=float, default=0.15)
    ap.add_argument("--layer-decay", type=float, default=LAYER_DECAY)
    ap.add_argument("--interleave", action="store_true",
                    help="alternate the reference and evax step by step (a machine with load)")
    ap.add_argument("--profile", metavar="DIR", help="per-op self time of each side instead")
    ap.add_argument("--profile-top", type=int, default=30, help="ops listed with --profile")
    ap.add_argument("--by-shape", action="store_true",
                    help="with --profile: one row per op and input shapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.profile:
        return run_profile(args)

    run = run_interleaved if args.interleave else run_sequential
    ref, ev, ref_other, evax_other = run(args)
    res = {"model": "upernet_eva_x_small_patch16", "size": args.size, "batch": args.batch,
           "threads": args.threads, "iters": args.iters, "torch": torch.__version__,
           "cores": os.cpu_count(), "mode": "interleaved" if args.interleave else "sequential"}
    if args.interleave:
        res["other_cpu_cores"] = round(ref_other, 2)
    else:
        res.update({"ref_other_cpu_cores": round(ref_other, 2),
                    "evax_other_cpu_cores": round(evax_other, 2)})
    split = ("forward_s", "backward_s", "optimizer_s")
    if ref["params"] != ev["params"]:
        raise RuntimeError(f"not the same model: {ref['params']} trainable parameters in the "
                           f"reference, {ev['params']} in evax")
    res["params"] = ref["params"]
    res.update({"ref_s_per_step": round(ref["s_per_step"], 3),
                "evax_s_per_step": round(ev["s_per_step"], 3),
                "ratio_evax_over_ref": round(ref["s_per_step"] / ev["s_per_step"], 3),
                "ref_split_fwd_bwd_opt_s": [round(ref[k], 3) for k in split],
                "evax_split_fwd_bwd_opt_s": [round(ev[k], 3) for k in split],
                "ref_peak_rss_mb": round(ref["peak_rss_mb"]),
                "evax_peak_rss_mb": round(ev["peak_rss_mb"]),
                "rss_evax_over_ref": round(ev["peak_rss_mb"] / ref["peak_rss_mb"], 3),
                "load_avg_1min": round(os.getloadavg()[0], 2)})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
