#!/usr/bin/env python3
"""Reference for tests/classify/finetune_step_test.cpp: TWO EVA-X finetuning steps written in
PyTorch with timm's Eva, following EVA-X's classification code (train.py, utils/lr_decay.py
param_groups_lrd + get_layer_id_for_vit, utils/lr_sched.py, engines/engine_finetune.py; see
shared/reference/evax_finetune.md sections 1.5, 2.1-2.4), never evax's C++.

Model: timm `Eva` as EVA-X's classifier (eva_x.py / tools/make_model_fixtures.py arguments):
EVA-X-Ti widths (192 wide, 3 heads, packed SwiGLU 512, fused qkv + q/v biases, 2-D RoPE on the
14x14 reference grid, LayerNorm eps 1e-6), global_pool='avg' (no final norm, fc_norm), head of 5
classes, drop_path 0; but depth 3 and 64 px input (4x4 patches, so RoPE positions are scaled by
14/4) to keep it fast. Every parameter is random (fixed seed; LayerNorm gains around 1, biases
non-zero, a head far from EVA-X's x0.001 init) so that no block's gradient is negligible.

The step (engine_finetune.train_one_epoch without AMP; no clipping, no accumulation):
  param_groups_lrd(model, weight_decay, no_weight_decay_list={pos_embed, cls_token}, layer_decay)
  torch.optim.AdamW(groups, lr, betas (0.9, 0.999), eps 1e-8)  (train.py's defaults)
  per step: group lr = lr * lr_scale (adjust_learning_rate after warmup with --fixed_lr);
            zero_grad; loss = criterion(model(images), targets); backward; step.
Two steps on two different batches, so that the second uses Adam's moments and bias corrections.

Precision. Adam's first update is lr * g / (|g| + eps) with eps 1e-8: for the (many) weights whose
gradient is within a few eps of zero, fp32 rounding of g (~1e-9 here) moves the update by a large
fraction of lr. PyTorch's own fp32 step differs from the same step in fp64 by up to ~8e-5 in the
weights, so an fp32-vs-fp32 weight comparison at 1e-5 is ill-posed. The exact comparisons are
therefore made in fp64 (model and inputs cast after loading the fp32 initial weights; the RoPE
table stays fp32-valued on both sides), and one fp32 case checks the training precision.

Cases, <k>:
  evax       fp64. EVA-X's shipped settings: weight_decay 0.05, layer_decay 0.55, every label
             known, criterion torch.nn.BCEWithLogitsLoss() (mean over batch x classes).
  masked     fp64. Labels with missing entries (NaN, as in a manifest): BCE-with-logits averaged
             over the known entries only (F.binary_cross_entropy_with_logits(logits[known],
             y[known])); train.py's default layer_decay 0.75 and a larger weight_decay 0.3.
  evax_fp32  as evax, in fp32.

Writes one safetensors file (--out; atomically, so concurrent test processes may share it):
  init/<name>                   weights before step 1 (timm naming, model.named_parameters())
  images1, images2              (4, 3, 64, 64) the two batches (EVA normalisation)
  targets1, targets2            (4, 5) float32 in {0, 1} (case evax)
  labels_nan1, labels_nan2      (4, 5) float32, NaN = missing (case masked)
  <k>/hp                        float64 [lr, beta1, beta2, eps, weight_decay, layer_decay, bits]
                                (bits: 64 or 32, the case's floating-point precision)
  <k>/lr_scale/<name>           float64 scalar: the parameter's group lr_scale
  <k>/weight_decay/<name>       float64 scalar: the parameter's group weight decay
  <k>/step<s>/logits            (4, 5) logits of step s (s = 1, 2) before its update
  <k>/step<s>/loss              scalar
  (logits, loss, gradients and weights in the case's precision)
  <k>/step1/grad/<name>         gradients of step 1
  <k>/step<s>/weights/<name>    weights after step s
"""
import torch
import torch.nn.functional as F

from evax_reference_common import eva_x, grey_images, randomize, reference_args, save_atomic

IMG, BATCH, CLASSES, DEPTH = 64, 4, 5, 3  # 16 px patches: a 4x4 grid
EVA_MEAN, EVA_STD = 0.49185243, 0.28509309  # evax_finetune.md section 2.5
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8  # train.py: blr 1e-3 (= lr), torch AdamW defaults
EVA_X_NO_WEIGHT_DECAY = ["pos_embed", "cls_token"]  # EVA-X models_eva.py no_weight_decay()
# (weight_decay, layer_decay, dtype, labels)
CASES = {"evax": (0.05, 0.55, torch.float64, "targets"),
         "masked": (0.3, 0.75, torch.float64, "labels_nan"),
         "evax_fp32": (0.05, 0.55, torch.float32, "targets")}


def make_model():
    # eva_x.py's EVA-X-Ti classifier at reduced depth and size.
    return eva_x("eva_x_tiny_patch16", IMG, CLASSES, depth=DEPTH, global_pool="avg",
                 drop_path_rate=0.0)


def get_layer_id_for_vit(name, num_layers):
    # EVA-X utils/lr_decay.py (MAE's)
    if name in ["cls_token", "pos_embed"]:
        return 0
    elif name.startswith("patch_embed"):
        return 0
    elif name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    else:
        return num_layers


def param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=[], layer_decay=0.75):
    # EVA-X utils/lr_decay.py, verbatim in substance; also returns name -> (lr_scale, wd).
    param_groups = {}
    per_name = {}
    num_layers = len(model.blocks) + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = get_layer_id_for_vit(n, num_layers)
        group_name = "layer_%d_%s" % (layer_id, g_decay)
        if group_name not in param_groups:
            param_groups[group_name] = {"lr_scale": layer_scales[layer_id],
                                        "weight_decay": this_decay, "params": []}
        param_groups[group_name]["params"].append(p)
        per_name[n] = (layer_scales[layer_id], this_decay)
    return list(param_groups.values()), per_name


def criterion(labels_kind, logits, labels):
    if labels_kind == "targets":
        return torch.nn.BCEWithLogitsLoss()(logits, labels)
    known = ~torch.isnan(labels)
    return F.binary_cross_entropy_with_logits(logits[known], labels[known])


def run_case(kind, init, batches):
    weight_decay, layer_decay, dtype, labels_kind = CASES[kind]
    model = make_model()
    model.load_state_dict(init, strict=True)
    model.to(dtype)
    model.train()  # drop_path 0 and no dropout: train mode is deterministic
    groups, per_name = param_groups_lrd(model, weight_decay, EVA_X_NO_WEIGHT_DECAY, layer_decay)
    opt = torch.optim.AdamW(groups, lr=LR, betas=(BETA1, BETA2), eps=EPS)

    bits = torch.finfo(dtype).bits
    res = {f"{kind}/hp": torch.tensor([LR, BETA1, BETA2, EPS, weight_decay, layer_decay, bits],
                                      dtype=torch.float64)}
    for n, (scale, wd) in per_name.items():
        res[f"{kind}/lr_scale/{n}"] = torch.tensor(scale, dtype=torch.float64)
        res[f"{kind}/weight_decay/{n}"] = torch.tensor(wd, dtype=torch.float64)
    for s, batch in enumerate(batches, start=1):
        images, labels = batch["images"].to(dtype), batch[labels_kind].to(dtype)
        for group in opt.param_groups:  # lr_sched.adjust_learning_rate (constant lr)
            group["lr"] = LR * group["lr_scale"]
        opt.zero_grad()
        logits = model(images)
        loss = criterion(labels_kind, logits, labels)
        loss.backward()
        if s == 1:
            for n, p in model.named_parameters():
                res[f"{kind}/step1/grad/{n}"] = p.grad.detach().clone()
        opt.step()
        res[f"{kind}/step{s}/logits"] = logits.detach().clone()
        res[f"{kind}/step{s}/loss"] = loss.detach().clone()
        for n, p in model.named_parameters():
            res[f"{kind}/step{s}/weights/{n}"] = p.detach().clone()
        print(f"{kind}: step {s} loss {loss.item():.6f}")
    return res


def main():
    args = reference_args()
    g = torch.Generator().manual_seed(4321)

    model = make_model()
    randomize(model.named_parameters(), g)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}

    # Grey images (three equal channels) with structure and per-sample noise, EVA normalisation.
    out = {f"init/{n}": v for n, v in init.items()}
    batches = []
    for s in (1, 2):
        grey = grey_images(BATCH, IMG, 7 + s, 5 + 2 * s, g)
        images = ((grey - EVA_MEAN) / EVA_STD).expand(BATCH, 3, IMG, IMG).contiguous()
        targets = (torch.rand(BATCH, CLASSES, generator=g) < 0.4).float()
        missing = torch.rand(BATCH, CLASSES, generator=g) < 0.3
        missing[0, 0], missing[0, 1] = True, False  # some missing and some known, always
        labels_nan = torch.where(missing, torch.full_like(targets, float("nan")), targets)
        out[f"images{s}"], out[f"targets{s}"], out[f"labels_nan{s}"] = images, targets, labels_nan
        batches.append({"images": images, "targets": targets, "labels_nan": labels_nan})
    for kind in CASES:
        out.update(run_case(kind, init, batches))

    save_atomic(out, args.out)


if __name__ == "__main__":
    main()
