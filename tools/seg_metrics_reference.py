#!/usr/bin/env python3
"""numpy reference values for the segmentation metric tests (tests/eval/seg_metrics_test.cpp).

Written from mmseg 0.29's formulas (metrics.intersect_and_union / total_area_to_metrics and
CustomDataset.evaluate's nanmean), not from evax's code. For each case, random prediction and label
masks of several images of different sizes (label pixels 255 = ignore), and the expected metrics:
  per class c over the data set, ignore pixels dropped from pred and label alike:
    I = #(pred == c & label == c), P = #(pred == c), L = #(label == c), U = P + L - I
    iou = I / U, dice = 2 I / (P + L), acc = I / L        (0/0 -> null)
  aAcc = sum I / sum L; mIoU, mDice, mAcc = nanmean over all classes; mIoU_fg, mDice_fg = nanmean
  over classes >= 1 (null when all are NaN);
  per_image_dice[c] for c >= 1: per image 2 I / (P + L), undefined (left out, counted) when
  P + L = 0; count, undefined, mean, median (np.median), p25 / p75 (np.percentile, linear), min, max.
Writes one JSON object (--out): {"cases": [{"name", "classes", "images": [{"h", "w", "pred",
"label"}], "expected": {...}}]} with the masks as flat row-major lists. Deterministic (seeded).
"""
import argparse
import json
import os

import numpy as np


def blobs(rng, h, w, k, classes):
    """A mask of `k` random discs of random classes >= 1 on background 0."""
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), np.uint8)
    for _ in range(k):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(1, max(2, min(h, w) / 2.5))
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.choice(classes)
    return m


def noisy(rng, m, p, num_classes):
    """`m` with a fraction p of its pixels replaced by random class ids."""
    out = m.copy()
    flip = rng.random(m.shape) < p
    out[flip] = rng.integers(0, num_classes, size=int(flip.sum()))
    return out


def nan_or(v):
    v = float(v)
    return None if np.isnan(v) else v


def expected(images, classes, ignore=255):
    c = len(classes)
    I, P, L = np.zeros(c), np.zeros(c), np.zeros(c)
    per_image = []
    for pred, label in images:
        keep = label != ignore
        p, l = pred[keep].astype(np.int64), label[keep].astype(np.int64)
        i_img = np.bincount(p[p == l], minlength=c)[:c].astype(np.float64)
        p_img = np.bincount(p, minlength=c)[:c].astype(np.float64)
        l_img = np.bincount(l, minlength=c)[:c].astype(np.float64)
        I += i_img
        P += p_img
        L += l_img
        with np.errstate(divide="ignore", invalid="ignore"):
            per_image.append(2 * i_img / (p_img + l_img))
    U = P + L - I
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, dice, acc = I / U, 2 * I / (P + L), I / L
        aacc = I.sum() / L.sum()

    def nanmean(v):
        return None if np.all(np.isnan(v)) else float(np.nanmean(v))

    out = {
        "images": len(images),
        "aAcc": nan_or(aacc),
        "mIoU": nanmean(iou), "mDice": nanmean(dice), "mAcc": nanmean(acc),
        "mIoU_fg": nanmean(iou[1:]) if c > 1 else None,
        "mDice_fg": nanmean(dice[1:]) if c > 1 else None,
        "per_class": {}, "per_image_dice": {},
    }
    for k in range(c):
        out["per_class"][classes[k]] = {
            "iou": nan_or(iou[k]), "dice": nan_or(dice[k]), "acc": nan_or(acc[k]),
            "intersect": int(I[k]), "union": int(U[k]), "pred_area": int(P[k]),
            "label_area": int(L[k])}
    per_image = np.array(per_image).reshape(len(images), c)
    for k in range(1, c):
        v = per_image[:, k]
        d = v[~np.isnan(v)]
        stats = {"count": int(d.size), "undefined": int(np.isnan(v).sum())}
        for key, f in [("mean", np.mean), ("median", np.median),
                       ("p25", lambda a: np.percentile(a, 25)),
                       ("p75", lambda a: np.percentile(a, 75)), ("min", np.min), ("max", np.max)]:
            stats[key] = float(f(d)) if d.size else None
        out["per_image_dice"][classes[k]] = stats
    return out


def make_case(rng, name, classes, sizes, absent=(), ignore_p=0.05):
    c = len(classes)
    present = [k for k in range(1, c) if k not in absent]
    imgs = []
    for n, (h, w) in enumerate(sizes):
        label = blobs(rng, h, w, int(rng.integers(0, 4)), present)
        extra = blobs(rng, h, w, 1, present)
        pred = noisy(rng, np.where(extra > 0, extra, label) if n % 2 else label, 0.1,
                     c)
        pred = np.where(np.isin(pred, list(absent)), 0, pred).astype(np.uint8)
        label[rng.random(label.shape) < ignore_p] = 255
        imgs.append((pred, label))
    # Special images: both empty of foreground (undefined per-image Dice), everything ignored,
    # foreground predicted where the label has none (Dice 0), and a 1x1 image.
    h, w = 9, 14
    imgs.append((np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)))
    imgs.append((blobs(rng, h, w, 2, present), np.full((h, w), 255, np.uint8)))
    imgs.append((blobs(rng, h, w, 3, present), np.zeros((h, w), np.uint8)))
    imgs.append((np.array([[present[0]]], np.uint8), np.array([[present[0]]], np.uint8)))
    order = rng.permutation(len(imgs))
    imgs = [imgs[i] for i in order]
    return {"name": name, "classes": classes,
            "images": [{"h": int(p.shape[0]), "w": int(p.shape[1]),
                        "pred": p.ravel().tolist(), "label": l.ravel().tolist()} for p, l in imgs],
            "expected": expected(imgs, classes)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(20240611)
    sizes = [(17, 23), (32, 32), (8, 40), (25, 13), (40, 31), (5, 7), (64, 48)]
    cases = [
        make_case(rng, "two_class", ["normal", "lesion"], sizes),
        make_case(rng, "three_class", ["bg", "left", "right"], sizes),
        # Class 2 never appears in a prediction or a label: NaN IoU / Dice, left out of the means.
        make_case(rng, "three_class_absent", ["bg", "a", "b"], sizes[:4], absent=(2,)),
        # Heavy ignore.
        make_case(rng, "two_class_ignore", ["bg", "fg"], sizes[2:], ignore_p=0.6),
    ]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = f"{a.out}.tmp{os.getpid()}"  # atomic: concurrent test processes may share the file
    with open(tmp, "w") as f:
        json.dump({"cases": cases}, f)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
