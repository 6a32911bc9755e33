#!/usr/bin/env python3
"""PIL / timm / torchvision reference values for the data-transform tests (tests/data/).

Writes one safetensors file (--out) holding:
  resize/<case>/in, resize/<case>/out   uint8: a synthetic 8-bit image and PIL's
      Image.resize((w, h), BICUBIC) of it, for case down (1024² -> 256²), up (128² -> 224²) and
      odd (300x260 -> 224x200: non-square, different factors per axis);
  ra/in                                 uint8 (80, 96): the RandAugment test image;
  ra/<Op>/m<M>/<sign>                   uint8 (80, 96): timm's op at fixed magnitude M on the
      image as RGB (channel 0; the script checks R = G = B), sign "pos" / "neg" fixing
      timm's _randomly_negate, hparams as create_transform(224, mean=0.49185243) sets them
      (img_mean fill 125, bicubic);
  rrc/<case>/{params,stats}             float64: torchvision RandomResizedCrop.get_params on
      images of size params = [H, W, scale_lo, scale_hi, ratio_lo, ratio_hi, draws]; stats = mean
      and std of i, j, h, w over the draws (8 values);
  dss/<case>/rank<r>                    int64: torch DistributedSampler(shuffle=False) indices
      for case n<N>_w<W>_d<drop_last>;
  eval/<H>x<W>/in                       uint8 (H, W): a test image of odd size;
  eval/<H>x<W>_s<S>_p<P>/{params,resized,box,out}   timm 1.0's eval transform,
      create_transform(S, is_training=False, crop_pct=P, interpolation='bicubic') with a one-channel
      mean / std, on that image as PIL "L": params float64 [H, W, S, P, mean, std]; resized int64
      [h, w], the size after timm's Resize (shorter side floor(S / P)); box int64 [top, left, S, S],
      where its CenterCrop cut (found by locating the crop in the resized image); out float32
      (S, S), the normalised result.
Deterministic (fixed numpy / torch seeds); takes a few seconds.
"""
import argparse
import os
import random

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from timm.data import auto_augment as aa
from timm.data import create_transform
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T


def test_image(h, w, seed):
    """Smooth structure + noise + a saturated block: exercises overshoot clipping."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy / h, xx / w
    a = 127 + 60 * np.sin(20 * xx + 5 * yy) + 40 * np.cos(37 * yy * xx) + rng.normal(0, 20, (h, w))
    a[h // 3:h // 2, w // 4:w // 2] = 250
    a[h // 2:h // 2 + h // 8, w // 2:] = 3
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def resize_cases(out):
    for name, (h, w), (oh, ow) in [("down", (1024, 1024), (256, 256)),
                                   ("up", (128, 128), (224, 224)),
                                   ("odd", (300, 260), (224, 200))]:
        a = test_image(h, w, seed=len(name))
        r = np.asarray(Image.fromarray(a).resize((ow, oh), Image.BICUBIC))
        out[f"resize/{name}/in"] = a
        out[f"resize/{name}/out"] = np.ascontiguousarray(r)


OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
       "TranslateYRel"]


def rand_augment_cases(out):
    a = test_image(80, 96, seed=7)
    a[:3, :] = 40  # a few distinct histogram features for AutoContrast / Equalize
    out["ra/in"] = a
    img = Image.fromarray(a).convert("RGB")
    hparams = dict(translate_const=int(224 * 0.45), img_mean=(125, 125, 125),
                   interpolation=Image.BICUBIC)
    for name in OPS:
        for m in (3, 6, 9.5):
            for sign in ("pos", "neg"):
                op = aa.AugmentOp(name, prob=1.0, magnitude=m, hparams=hparams)
                aa._randomly_negate = (lambda v: -v) if sign == "neg" else (lambda v: v)
                res = np.asarray(op(img))
                assert (res[..., 0] == res[..., 1]).all() and (res[..., 0] == res[..., 2]).all()
                out[f"ra/{name}/m{m}/{sign}"] = np.ascontiguousarray(res[..., 0])


def rrc_cases(out):
    torch.manual_seed(0)
    cases = {
        "wide": (256, 320, 0.08, 1.0, 3 / 4, 4 / 3),
        "mim": (224, 224, 0.2, 1.0, 3 / 4, 4 / 3),
        # Elongated with a large scale: most tries fail, exercising the centre-crop fallback.
        "fallback": (100, 400, 0.6, 1.0, 3 / 4, 4 / 3),
    }
    draws = 20000
    for name, (h, w, s0, s1, r0, r1) in cases.items():
        img = torch.empty(1, h, w)
        p = np.array([T.RandomResizedCrop.get_params(img, (s0, s1), (r0, r1))
                      for _ in range(draws)], dtype=np.float64)
        out[f"rrc/{name}/params"] = np.array([h, w, s0, s1, r0, r1, draws], np.float64)
        out[f"rrc/{name}/stats"] = np.concatenate([p.mean(0), p.std(0)])


def sampler_cases(out):
    class Dummy(torch.utils.data.Dataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    for n, world, drop in [(10, 3, False), (10, 3, True), (7, 4, False), (2, 4, False),
                           (12, 4, True)]:
        for r in range(world):
            s = DistributedSampler(Dummy(n), num_replicas=world, rank=r, shuffle=False,
                                   drop_last=drop)
            out[f"dss/n{n}_w{world}_d{int(drop)}/rank{r}"] = np.array(list(s), np.int64)


EVAL_MEAN, EVAL_STD = 0.49185243, 0.28509309  # evax's grey statistics (kEvaxMean / kEvaxStd)


def eval_cases(out):
    for h, w in [(517, 333), (333, 517), (1001, 999)]:
        a = test_image(h, w, seed=h + w)
        out[f"eval/{h}x{w}/in"] = a
        img = Image.fromarray(a)
        for size, pct in [(224, 0.875), (224, 0.9), (224, 0.95), (224, 1.0), (97, 0.9)]:
            tf = create_transform(size, is_training=False, crop_pct=pct, interpolation="bicubic",
                                  mean=(EVAL_MEAN,), std=(EVAL_STD,))
            resize, crop = tf.transforms[0], tf.transforms[1]
            assert type(resize).__name__ == "Resize" and type(crop).__name__ == "CenterCrop", tf
            resized = resize(img)
            r, c = np.asarray(resized), np.asarray(crop(resized))
            hits = [(t, left) for t in range(r.shape[0] - size + 1)
                    for left in range(r.shape[1] - size + 1)
                    if np.array_equal(r[t:t + size, left:left + size], c)]
            assert len(hits) == 1, (h, w, size, pct, hits)
            y = tf(img)
            assert tuple(y.shape) == (1, size, size), y.shape
            name = f"eval/{h}x{w}_s{size}_p{pct}"
            out[f"{name}/params"] = np.array([h, w, size, pct, EVAL_MEAN, EVAL_STD], np.float64)
            out[f"{name}/resized"] = np.array(r.shape, np.int64)
            out[f"{name}/box"] = np.array([*hits[0], size, size], np.int64)
            out[f"{name}/out"] = np.ascontiguousarray(y[0].numpy().astype(np.float32))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    random.seed(0)
    out = {}
    resize_cases(out)
    rand_augment_cases(out)
    rrc_cases(out)
    sampler_cases(out)
    eval_cases(out)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + f".tmp{os.getpid()}"
    save_file(out, tmp)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
