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
      for case n<N>_w<W>_d<drop_last>.
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
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + f".tmp{os.getpid()}"
    save_file(out, tmp)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
