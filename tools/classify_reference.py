"""Reference losses for tests/classify/losses_test.cpp: random logits/targets (seeded), the loss
values from torch.nn.functional and timm.loss, and their gradients w.r.t. the logits."""
import argparse
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.data.mixup import mixup_target


def grad_of(fn, x):
    x = x.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach().reshape(1), x.grad.detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(1234)
    out = {}
    b, k = 16, 14
    # Multi-label: targets with NaN = missing (as in a manifest).
    x = torch.randn(b, k, generator=g) * 3
    y = (torch.rand(b, k, generator=g) < 0.3).float()
    known = torch.rand(b, k, generator=g) < 0.7
    y_nan = torch.where(known, y, torch.full_like(y, float("nan")))
    out["bce/logits"], out["bce/labels_nan"], out["bce/labels_full"] = x, y_nan, y
    mask = known.float()
    y0 = torch.nan_to_num(y_nan, nan=0.0)
    for name, s in (("s0", 0.0), ("s01", 0.1)):
        crit = BinaryCrossEntropy(smoothing=s, smooth_dense=True, reduction="none")
        # Masked: mean of timm's per-element loss over the known labels.
        v, gr = grad_of(lambda z: (crit(z, y0) * mask).sum() / mask.sum(), x)
        out[f"bce/{name}/masked/loss"], out[f"bce/{name}/masked/grad"] = v, gr
        # All known: timm BinaryCrossEntropy(reduction='mean') as is.
        full = BinaryCrossEntropy(smoothing=s, smooth_dense=True)
        v, gr = grad_of(lambda z: full(z, y), x)
        out[f"bce/{name}/full/loss"], out[f"bce/{name}/full/grad"] = v, gr
    # torch's BCEWithLogitsLoss (EVA-X) on all-known targets.
    v, gr = grad_of(lambda z: torch.nn.BCEWithLogitsLoss()(z, y), x)
    out["bce/torch/loss"], out["bce/torch/grad"] = v, gr
    # Multi-class.
    b, k = 32, 3
    x = torch.randn(b, k, generator=g) * 2
    t = torch.randint(0, k, (b,), generator=g)
    out["ce/logits"], out["ce/target"] = x, t
    v, gr = grad_of(lambda z: F.cross_entropy(z, t), x)
    out["ce/s0/loss"], out["ce/s0/grad"] = v, gr
    v, gr = grad_of(lambda z: LabelSmoothingCrossEntropy(0.1)(z, t), x)
    out["ce/s01/loss"], out["ce/s01/grad"] = v, gr
    v, gr = grad_of(lambda z: F.cross_entropy(z, t, label_smoothing=0.1), x)
    out["ce/torch_s01/loss"], out["ce/torch_s01/grad"] = v, gr
    # Soft targets: timm's mixup target (lam 0.7, smoothing 0.1).
    soft = mixup_target(t, k, lam=0.7, smoothing=0.1)
    out["soft/target"] = soft
    v, gr = grad_of(lambda z: SoftTargetCrossEntropy()(z, soft), x)
    out["soft/loss"], out["soft/grad"] = v, gr
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file({n: v.contiguous() for n, v in out.items()}, args.out)


if __name__ == "__main__":
    main()
