#!/usr/bin/env python3
"""Data-pipeline benchmark: a 1024x1024 8-bit PNG decoded, RandomResizedCrop 224 + flip +
RandAugment rand-m6-mstd0.5-inc1 + normalise. Python: PIL + timm's create_transform in a torch
DataLoader with W worker processes. evax: build/bench/evax_bench_loader with W threads. Same
cores, one after the other. Prints both rates and the ratio (target >= 3).

usage: bench/loader.py [--evax build/bench/evax_bench_loader] [--workers 2] [--n 256] [--image PNG]

Without --image the input is a 1024x1024 sine pattern with Gaussian noise (sigma 12 levels),
which compresses about as badly as a real radiograph's film grain (~790 KB).
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform


class OneImage(torch.utils.data.Dataset):
    def __init__(self, path, n, tf):
        self.path, self.n, self.tf = path, n, tf

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with Image.open(self.path) as im:
            return self.tf(im.convert("RGB"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evax", default="build/bench/evax_bench_loader")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--image", help="benchmark this PNG instead (e.g. one from `evax synth --size 1024`)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    if args.image:
        path = args.image
    else:
        tmp = tempfile.mkdtemp()
        path = os.path.join(tmp, "cxr.png")
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:1024, 0:1024]
        img = (127 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 12, (1024, 1024)))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)

    tf = create_transform(224, is_training=True, auto_augment="rand-m6-mstd0.5-inc1",
                          interpolation="bicubic", mean=(0.49185243,) * 3, std=(0.28509309,) * 3,
                          re_prob=0.0)
    dl = torch.utils.data.DataLoader(OneImage(path, args.n, tf), batch_size=32,
                                     num_workers=args.workers, persistent_workers=True)
    for _ in dl:  # warm-up epoch: worker start
        pass
    t0 = time.perf_counter()
    seen = sum(b.shape[0] for b in dl)
    py_rate = seen / (time.perf_counter() - t0)

    out = subprocess.run([args.evax, "--image", path, "--n", str(args.n), "--workers",
                          str(args.workers)], check=True, capture_output=True, text=True)
    ev = json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]
    print(json.dumps({"workers": args.workers, "n": args.n, "python_images_per_s": round(py_rate, 1),
                      "evax_images_per_s": round(ev, 1), "ratio_evax_over_python": round(ev / py_rate, 2)}))


if __name__ == "__main__":
    main()
