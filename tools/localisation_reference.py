#!/usr/bin/env python3
"""Reference for tests/explain/localisation_test.cpp: EVA-X's Grad-CAM localisation scoring
(grad_cam/get_cams.py; shared/reference/evax_finetune.md section 4) computed directly with numpy
on random maps and boxes, never evax's C++.

Per box: its mask on the map (two rules, below), the map thresholded as `map > t` (a float32 map
against a Python float: numpy compares in float32), IoU = |on & mask| / |on | mask| (0 when the
union is empty). Over boxes: mIoU = mean IoU, AP25 = mean(IoU > 0.25), AP50 = mean(IoU > 0.5),
mAP = (AP25 + AP50) / 2. Thresholds t_k = k / 100, k = 1..60; the chosen one is the first
argmax of the overall mAP (np.argmax).

Box rules (box x, y, w, h in pixels of an image of img_w x img_h; map of map_w x map_h):
  1024   EVA-X: x, y, w, h = int(v / 1024 * side) each (side = map_w for x and w, map_h for y and
         h); mask[y:y+h, x:x+w] = 1 (numpy slicing; coordinates here are non-negative).
  image  scaled by map/img per axis; pixels whose centre (j + 0.5) lies in [b0, b1): j from
         ceil(b0 - 0.5) to ceil(b1 - 0.5) (exclusive), clipped to the map; when that is empty,
         the pixel floor((b0 + b1) / 2) clipped to the map.

Maps: 10 random maps (6 of 24 x 36, 4 of 40 x 40), each a Gaussian blob at a random place plus
noise, min-max scaled; some pixels set exactly to float32(0.3) and float32(0.25) to exercise the
strict comparison; maps 3 and 7 get four more pixels at the maximum (tied maxima). 60 boxes near the blobs (random offsets and sizes, fractional coordinates),
labels A/B/C, images of random sizes (so the two rules differ), half in group "val" (0) and half
in "test" (1).

Writes (--out):
  map/<i>                     (h, w) float32
  boxes                       (n, 4) float64 x, y, w, h
  box_map, box_label, box_group  (n) int64; labels index ["A", "B", "C"]
  box_img                     (n, 2) int64 img_w, img_h
  <rule>/rects                (n, 4) int64 x0, y0, x1, y1 (mask = rows y0:y1, columns x0:x1)
  <rule>/ious                 (n, 60) float64
  <rule>/paper/index          () int64: threshold index searched on the test group
  <rule>/paper/<cls>          (5,) float64 miou, ap25, ap50, map, boxes of the test group at it
                              (<cls>: A, B, C, overall)
  <rule>/split/index          chosen on the val group
  <rule>/split/<cls>          the test group at it
  <rule>/hits                 (n, 3) float64 per box: pointing-game hit (the share of the map's
                              maximal pixels inside the mask), energy (the share of the map's
                              positive mass inside the mask), chance (mask pixels / map pixels)
  <rule>/pointing/<cls>       (3,) float64 over the test group: mean hit, mean energy, and the
                              one-sided p-value P(X >= boxes with hit == 1), X Poisson-binomial
                              over the boxes' chances, computed here by the discrete Fourier
                              transform of its characteristic function (not the recursion evax
                              uses)
  centre/<h>x<w>              the centred baseline map: exp(-((x - cx)^2 / sx^2 + (y - cy)^2 /
                              sy^2) / 2), cx = (w - 1) / 2, sx = w / 4 (same for y), then
                              (g - min) / (1e-7 + max(g - min)), float32
"""
import math

import numpy as np
import torch

from evax_reference_common import reference_args, save_atomic

LABELS = ["A", "B", "C"]
THRESHOLDS = np.arange(1, 61) / 100


def rect_1024(box, map_w, map_h):
    x, y, w, h = (int(box[0] / 1024 * map_w), int(box[1] / 1024 * map_h),
                  int(box[2] / 1024 * map_w), int(box[3] / 1024 * map_h))
    mask = np.zeros((map_h, map_w), dtype=bool)
    mask[y:y + h, x:x + w] = True
    return mask, (min(x, map_w), min(y, map_h), min(x + w, map_w), min(y + h, map_h))


def centre_axis(b0, b1, n):
    lo = min(max(math.ceil(b0 - 0.5), 0), n)
    hi = min(max(math.ceil(b1 - 0.5), 0), n)
    if hi <= lo:
        c = min(max(math.floor((b0 + b1) / 2), 0), n - 1)
        lo, hi = c, c + 1
    return lo, hi


def rect_image(box, img_w, img_h, map_w, map_h):
    sx, sy = map_w / img_w, map_h / img_h
    x0, x1 = centre_axis(box[0] * sx, (box[0] + box[2]) * sx, map_w)
    y0, y1 = centre_axis(box[1] * sy, (box[1] + box[3]) * sy, map_h)
    mask = np.zeros((map_h, map_w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask, (x0, y0, x1, y1)


def iou(cam, mask, t):
    on = cam > float(t)  # a Python float: compared in float32, as in get_cams.py
    union = np.logical_or(on, mask).sum()
    return float(np.logical_and(on, mask).sum() / union) if union else 0.0


def scores(ious):
    ious = np.asarray(ious, dtype=np.float64)
    if len(ious) == 0:
        return np.zeros(5)
    ap25, ap50 = np.mean(ious > 0.25), np.mean(ious > 0.5)
    return np.array([ious.mean(), ap25, ap50, (ap25 + ap50) / 2, len(ious)])


def pointing(cam, mask):
    top = cam == cam.max()
    pos = np.maximum(cam.astype(np.float64), 0)
    energy = pos[mask].sum() / pos.sum() if pos.sum() > 0 else mask.mean()
    return [float(top[mask].sum() / top.sum()), float(energy), float(mask.mean())]


def poisson_binomial_tail(p, k):
    n = len(p)
    if k <= 0:
        return 1.0
    w = 2 * np.pi / (n + 1)
    l = np.arange(n + 1)
    z = np.exp(1j * w * l)
    cf = np.prod(1 - np.asarray(p)[None, :] + np.asarray(p)[None, :] * z[:, None], axis=1)
    pmf = np.real(np.fft.fft(cf)) / (n + 1)
    return float(min(1.0, np.clip(pmf, 0, None)[k:].sum()))


def centre_map(h, w):
    y, x = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    cy, cx, sy, sx = (h - 1) / 2, (w - 1) / 2, h / 4, w / 4
    g = np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
    g = g - g.min()
    return (g / (1e-7 + g.max())).astype(np.float32)


def main():
    args = reference_args()
    rng = np.random.default_rng(77)
    out = {}
    maps, centres = [], []
    for i in range(10):
        h, w = (24, 36) if i < 6 else (40, 40)
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        s = rng.uniform(2, 7)
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)) + 0.15 * rng.random((h, w))
        m = ((m - m.min()) / (m.max() - m.min())).astype(np.float32)
        flat = m.reshape(-1)
        flat[rng.choice(flat.size, 12, replace=False)] = np.float32(0.3)
        flat[rng.choice(flat.size, 12, replace=False)] = np.float32(0.25)
        if i in (3, 7):  # tied maxima
            flat[np.random.default_rng(78 + i).choice(flat.size, 4, replace=False)] = np.float32(1.0)
        maps.append((m, cy, cx))
        out[f"map/{i}"] = torch.from_numpy(m.copy())
    for h, w in ((24, 36), (40, 40)):
        out[f"centre/{h}x{w}"] = torch.from_numpy(centre_map(h, w))

    n = 60
    boxes, box_map, box_label, box_group, box_img = [], [], [], [], []
    for b in range(n):
        i = int(rng.integers(0, 10))
        m, cy, cx = maps[i]
        h, w = m.shape
        img_w, img_h = int(rng.integers(200, 1400)), int(rng.integers(200, 1400))
        bw, bh = rng.uniform(0.03, 0.5) * img_w, rng.uniform(0.03, 0.5) * img_h
        bx = min(max(cx / w * img_w - bw / 2 + rng.normal(0, 0.08) * img_w, 0), img_w - bw)
        by = min(max(cy / h * img_h - bh / 2 + rng.normal(0, 0.08) * img_h, 0), img_h - bh)
        if b % 7 == 0:  # whole pixels too
            bx, by, bw, bh = float(int(bx)), float(int(by)), float(max(1, int(bw))), float(max(1, int(bh)))
        # Manifest boxes are float32 (evax's Box): keep float32-representable values.
        boxes.append([float(np.float32(v)) for v in (bx, by, bw, bh)])
        box_map.append(i)
        box_label.append(int(rng.integers(0, 3)))
        box_group.append(b % 2)
        box_img.append([img_w, img_h])
    out["boxes"] = torch.tensor(boxes, dtype=torch.float64)
    out["box_map"] = torch.tensor(box_map, dtype=torch.int64)
    out["box_label"] = torch.tensor(box_label, dtype=torch.int64)
    out["box_group"] = torch.tensor(box_group, dtype=torch.int64)
    out["box_img"] = torch.tensor(box_img, dtype=torch.int64)

    for rule in ("image", "1024"):
        rects, ious, hits = [], [], []
        for b in range(n):
            m = maps[box_map[b]][0]
            h, w = m.shape
            if rule == "image":
                mask, r = rect_image(boxes[b], box_img[b][0], box_img[b][1], w, h)
            else:
                mask, r = rect_1024(boxes[b], w, h)
            rects.append(r)
            ious.append([iou(m, mask, t) for t in THRESHOLDS])
            hits.append(pointing(m, mask))
        ious = np.array(ious)
        hits = np.array(hits)
        out[f"{rule}/hits"] = torch.from_numpy(hits)
        out[f"{rule}/rects"] = torch.tensor(rects, dtype=torch.int64)
        out[f"{rule}/ious"] = torch.from_numpy(ious)
        group = np.array(box_group)
        labels = np.array(box_label)
        test = group == 1

        def report(key, index):
            out[f"{rule}/{key}/index"] = torch.tensor(index, dtype=torch.int64)
            out[f"{rule}/{key}/overall"] = torch.from_numpy(scores(ious[test, index]))
            for li, name in enumerate(LABELS):
                out[f"{rule}/{key}/{name}"] = torch.from_numpy(scores(ious[test & (labels == li), index]))

        for name, sel in [("overall", test)] + [(n_, test & (labels == li)) for li, n_ in enumerate(LABELS)]:
            h_ = hits[sel]
            out[f"{rule}/pointing/{name}"] = torch.tensor(
                [h_[:, 0].mean(), h_[:, 1].mean(),
                 poisson_binomial_tail(h_[:, 2], int((h_[:, 0] == 1).sum()))], dtype=torch.float64)
        map_test = [scores(ious[test, k])[3] for k in range(len(THRESHOLDS))]
        map_val = [scores(ious[~test, k])[3] for k in range(len(THRESHOLDS))]
        report("paper", int(np.argmax(map_test)))
        report("split", int(np.argmax(map_val)))
    save_atomic(out, args.out)


if __name__ == "__main__":
    main()
