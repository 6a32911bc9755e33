#!/usr/bin/env python3
"""Reference lr values per optimizer step for tests/train/schedule_test.cpp.

Written from the reference code, not from evax:
  cosine / fixed: EVA-X classification/utils/lr_sched.adjust_learning_rate, called as
                  engines/engine_finetune.py does, once per accumulation group at the fractional
                  epoch data_iter_step / len(data_loader) + epoch (len = micro-batches per epoch);
  poly:           mmcv 1.x PolyLrUpdaterHook.get_lr (by epoch: runner.epoch / max_epochs, else
                  runner.iter / max_iters) with LrUpdaterHook's linear warmup over warmup_iters:
                  regular * (1 - (1 - iter / warmup_iters) * (1 - warmup_ratio)).

Writes JSON: {"cases": [{config..., "points": [[step, epoch, micro, lr], ...]}]}.
"""
import argparse
import json
import math
from types import SimpleNamespace


def eva_x_lr(e, args):
    # adjust_learning_rate's value for the base group (lr_scale 1).
    if e < args.warmup_epochs:
        return args.lr * e / args.warmup_epochs
    if args.fixed_lr:
        return args.lr
    return args.min_lr + (args.lr - args.min_lr) * 0.5 * (
        1. + math.cos(math.pi * (e - args.warmup_epochs) / (args.epochs - args.warmup_epochs)))


def mmseg_poly_lr(it, epoch, c, max_iters):
    progress, max_progress = (epoch, c["epochs"]) if c["by_epoch"] else (it, max_iters)
    coeff = (1 - progress / max_progress) ** c["power"]
    regular = (c["lr"] - c["min_lr"]) * coeff + c["min_lr"]
    if it >= c["warmup_steps"]:
        return regular
    k = (1 - it / c["warmup_steps"]) * (1 - c["warmup_ratio"])
    return regular * (1 - k)


CASES = [
    # EVA-X finetuning (cosine after warmup, min_lr > 0; warmup 0; fractional warmup with accum).
    dict(schedule="cosine", epochs=10, warmup_epochs=2, micro=7, accum=1, lr=1e-3, min_lr=1e-6),
    dict(schedule="cosine", epochs=5, warmup_epochs=0, micro=13, accum=1, lr=1e-3, min_lr=0.0),
    dict(schedule="cosine", epochs=6, warmup_epochs=1.5, micro=9, accum=3, lr=2e-3, min_lr=1e-5),
    # --fixed_lr as the shipped runs use it (CXR14-Ti: 45 epochs, 5 warmup, 73 steps per epoch).
    dict(schedule="fixed", epochs=45, warmup_epochs=5, micro=73, accum=1, lr=1e-3, min_lr=1e-6),
    dict(schedule="fixed", epochs=10, warmup_epochs=0, micro=58, accum=1, lr=1e-3, min_lr=1e-6),
    dict(schedule="fixed", epochs=4, warmup_epochs=0.5, micro=10, accum=2, lr=1e-3, min_lr=0.0),
    # mmseg: EVA-X segmentation (by epoch, power 1, min 0, 10 warmup iters from ratio 1e-6) ...
    dict(schedule="poly", epochs=10, warmup_steps=10, warmup_ratio=1e-6, power=1.0, by_epoch=True,
         micro=20, accum=1, lr=6e-5, min_lr=0.0),
    # ... and per iteration with min_lr, another power, no warmup / a warmup with accumulation.
    dict(schedule="poly", epochs=4, warmup_steps=0, warmup_ratio=0.0, power=0.9, by_epoch=False,
         micro=25, accum=1, lr=1e-2, min_lr=1e-4),
    dict(schedule="poly", epochs=3, warmup_steps=7, warmup_ratio=0.1, power=1.0, by_epoch=False,
         micro=10, accum=2, lr=1e-3, min_lr=1e-6),
]


def points(c):
    out, step = [], 0
    steps_per_epoch = c["micro"] // c["accum"]
    for epoch in range(c["epochs"]):
        for data_iter_step in range(c["micro"]):
            if data_iter_step % c["accum"] != 0:
                continue
            if data_iter_step // c["accum"] >= steps_per_epoch:  # drop the incomplete group
                break
            if c["schedule"] == "poly":
                lr = mmseg_poly_lr(step, epoch, c, c["epochs"] * steps_per_epoch)
            else:
                args = SimpleNamespace(lr=c["lr"], min_lr=c["min_lr"], epochs=c["epochs"],
                                       warmup_epochs=c["warmup_epochs"],
                                       fixed_lr=c["schedule"] == "fixed")
                lr = eva_x_lr(data_iter_step / c["micro"] + epoch, args)
            out.append([step, epoch, data_iter_step, lr])
            step += 1
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cases = [dict(c, points=points(c)) for c in CASES]
    with open(a.out + ".tmp", "w") as f:
        json.dump({"cases": cases}, f)
    import os
    os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
