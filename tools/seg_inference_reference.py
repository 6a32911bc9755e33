#!/usr/bin/env python3
"""torch reference values for the segmentation inference tests (tests/segment/inference_test.cpp).

An independent plain-torch rendering of mmseg 0.29's EncoderDecoder test path (whole_inference,
slide_inference, the rescale to ori_shape, sigmoid > threshold / argmax), applied to a fixed
random two-layer conv net whose logits have stride 4:
  net(x) = conv(relu(conv(x, w1, b1, stride 2, pad 1)), w2, b2, stride 2, pad 1)
on a (2, 3, 45, 70) input (sizes that neither stride nor the windows divide).
Writes one safetensors file (--out):
  x, w1, b1                          the input and the first layer
  params  int64 [crop_h, crop_w, stride_h, stride_w, crop_sq, stride_sq, H0, W0, H1, W1]
  c<C>/w2, c<C>/b2                   the output layer for C = 1 and C = 3 channels
  c<C>/whole                         logits resized to the input (encode_decode)
  c<C>/slide_rect, c<C>/slide_sq     slide logits with the (crop_h, crop_w, stride_h, stride_w)
                                     and the square (crop_sq, stride_sq) windows
  c<C>/whole_ori, c<C>/slide_ori     whole / square-slide logits resized to (H0, W0)
  c<C>/whole_small                   whole logits resized to (H1, W1) (a downscale)
  c<C>/probs                         sigmoid (C = 1) or softmax (C = 3) of whole_ori
  c<C>/classes                       uint8: probs > 0.3 (C = 1) or argmax (C = 3), (2, H0, W0)
Deterministic (seeded); takes a second.
"""
import argparse
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

THRESHOLD = 0.3


def net(x, w1, b1, w2, b2):
    h = F.relu(F.conv2d(x, w1, b1, stride=2, padding=1))
    return F.conv2d(h, w2, b2, stride=2, padding=1)


def up(t, size):
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def whole(model, x):
    return up(model(x), tuple(x.shape[2:]))


def slide(model, x, crop, stride):
    """Windows every `stride` pixels, the last ones shifted back to end at the border, logits
    averaged over the windows that cover each pixel."""
    ch, cw = crop
    sh, sw = stride
    n, _, h, w = x.shape
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    total, hits = None, torch.zeros(n, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            bottom, right = min(r * sh + ch, h), min(c * sw + cw, w)
            top, left = max(bottom - ch, 0), max(right - cw, 0)
            out = up(model(x[:, :, top:bottom, left:right]), (bottom - top, right - left))
            if total is None:
                total = torch.zeros(n, out.shape[1], h, w)
            total = total + F.pad(out, (left, w - right, top, h - bottom))
            hits[:, :, top:bottom, left:right] += 1
    assert bool((hits > 0).all())
    return total / hits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 3, 45, 70, generator=g)
    w1 = torch.randn(6, 3, 3, 3, generator=g) * 0.4
    b1 = torch.randn(6, generator=g) * 0.1
    crop, stride, crop_sq, stride_sq = (32, 40), (20, 17), 32, 21
    ori, small = (61, 97), (30, 50)
    out = {"x": x, "w1": w1, "b1": b1,
           "params": torch.tensor([*crop, *stride, crop_sq, stride_sq, *ori, *small])}
    with torch.no_grad():
        for c in (1, 3):
            w2 = torch.randn(c, 6, 3, 3, generator=g) * 0.4
            b2 = torch.randn(c, generator=g) * 0.1
            model = lambda t: net(t, w1, b1, w2, b2)  # noqa: E731
            p = f"c{c}/"
            out[p + "w2"], out[p + "b2"] = w2, b2
            out[p + "whole"] = whole(model, x)
            out[p + "slide_rect"] = slide(model, x, crop, stride)
            out[p + "slide_sq"] = slide(model, x, (crop_sq, crop_sq), (stride_sq, stride_sq))
            out[p + "whole_ori"] = up(out[p + "whole"], ori)
            out[p + "slide_ori"] = up(out[p + "slide_sq"], ori)
            out[p + "whole_small"] = up(out[p + "whole"], small)
            if c == 1:
                probs = torch.sigmoid(out[p + "whole_ori"])
                classes = (probs > THRESHOLD)[:, 0]
            else:
                probs = torch.softmax(out[p + "whole_ori"], dim=1)
                classes = probs.argmax(dim=1)
            out[p + "probs"] = probs
            out[p + "classes"] = classes.to(torch.uint8)
    tmp = f"{a.out}.tmp{os.getpid()}"
    save_file({k: v.contiguous() for k, v in out.items()}, tmp)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
