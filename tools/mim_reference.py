#!/usr/bin/env python3
"""Reference for tests/pretrain/mim_reference_test.cpp: ONE EVA-X MIM pretraining step written in
PyTorch with timm modules, following EVA-02/asuka (modeling_pretrain.py, engine_for_pretraining.py,
optim_factory.py; see shared/reference/evax_pretrain.md sections 1-4), never evax's C++.

Models (tiny, so the step takes well under a second):
  student  timm `Eva` with EVA-X-Ti settings (192 wide, 3 heads, SwiGLU 512, 2-D RoPE on the 14x14
           reference grid, q/v biases, LayerNorm eps 1e-6) but depth 2 and 64 px input (4x4
           patches), with a final `norm` (no fc_norm), plus a `mask_token` (1, 1, 192) and an
           nn.Linear `lm_head` (192 -> target width);
  teacher  timm `VisionTransformer` = vit_tiny_patch16_224's layout at 64 px (192 wide, 12 blocks,
           qkv bias, final norm), frozen, eval mode.
Every parameter is random (fixed seed; LayerNorm gains around 1, biases non-zero) so that no term
of the forward is trivially zero.

The step (asuka, fp32):
  x = patch_embed(img); x = x.detach()*0.9 + x*0.1            (stop_grad_conv1)
  x = x*(1-w) + mask_token*w                                   (w: the fixed bool mask)
  x = cat(cls, x) + pos_embed; blocks with RoPE; x = norm(x)
  pred = lm_head(x[:, 1:][mask])
  targets: teacher.forward_features(teacher_img)[:, 1:][mask]  (no_grad), or
           pixels: MAE's patchify + norm_pix of the grey (first) channel of the teacher view:
           per patch (p, q) row-major, (x - mean) / sqrt(var + 1e-6), var unbiased. The cosine
           loss is scale-invariant per token, so the division (biased or unbiased var) is
           invisible here; the patch order, the channel and the mean subtraction are not.
  loss = -cosine_similarity(pred.float(), target.float(), dim=-1).mean()
  loss.backward(); clip_grad_norm_(all student params, clip)
  torch.optim.AdamW with asuka's groups: no weight decay when len(shape) == 1, name endswith
  ".bias" or name in {pos_embed, cls_token} (model.no_weight_decay()); mask_token and lm_head.weight
  are decayed.

Writes one safetensors file (--out; atomically, so concurrent test processes may share it):
  teacher_weights/<name>       teacher weights, timm naming (pos_embed already at the 4x4 grid)
  images (B,3,64,64) student view, teacher_images (B,3,64,64), mask (B,16) uint8,
  hp float64 [lr, beta1, beta2, eps, weight_decay, clip_grad], and for <k> in {teacher, pixels}:
                                 <k>/init/<name>     student weights before the step (timm naming
                                                     + mask_token, lm_head.*)
                                 <k>/loss            float32 scalar
                                 <k>/grad_norm       float64 scalar (before clipping)
                                 <k>/grad/<name>     gradients before clipping
                                 <k>/updated/<name>  weights after the AdamW step
                                 <k>/no_decay/<name> uint8 scalar: 1 in the no-weight-decay group
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from evax_reference_common import eva_x, grey_images, randomize, reference_args, save_atomic, vit

IMG, PATCH, BATCH = 64, 16, 2
GRID = IMG // PATCH
DIM, HEADS = 192, 3
STUDENT_DEPTH, TEACHER_DEPTH = 2, 12
STUDENT_MEAN, STUDENT_STD = 0.49185243, 0.28509309  # Merged520k (evax_pretrain.md section 2)
TEACHER_MEAN, TEACHER_STD = 0.5, 0.5                # MGCA's normalisation
# AdamW: EVA-02's betas/eps and B/L peak lr. The weight decay is far above EVA-02's 0.05 on purpose:
# lr * wd * |w| must be well above the test's 1e-5 tolerance for pos_embed/cls_token-sized weights
# (|w| ~ 0.02), so that a parameter in the wrong group changes the result visibly.
LR, BETA1, BETA2, EPS, WEIGHT_DECAY = 1.5e-3, 0.9, 0.98, 1e-6, 5.0
# Below both steps' gradient norms (asserted), so that clipping is exercised.
CLIP_GRAD = 1.0


def make_student():
    # EVA-X-Ti (192 wide, 3 heads) at reduced depth and size.
    return eva_x("eva_x_tiny_patch16", IMG, 0, depth=STUDENT_DEPTH, use_fc_norm=False)


def make_teacher():
    return vit(IMG, DIM, TEACHER_DEPTH, HEADS)


def no_weight_decay(name, p):
    # asuka optim_factory.get_parameter_groups with skip_list = model.no_weight_decay()
    return len(p.shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")


def pixel_targets(imgs):
    # MAE (models_mae.py): patchify to (N, L, p*p*C) in 'nchpwq->nhwpqc' order, then norm_pix_loss.
    # The images are grey (three equal channels), so one channel: C = 1.
    x = imgs[:, :1]
    n, c, p = x.shape[0], x.shape[1], PATCH
    h = w = x.shape[2] // p
    x = x.reshape(n, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    x = x.reshape(n, h * w, p * p * c)
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return (x - mean) / (var + 1.0e-6) ** 0.5


class MimStudent(nn.Module):
    """asuka's VisionTransformerForMaskedImageModeling built from timm Eva modules."""

    def __init__(self, eva, out_dim):
        super().__init__()
        self.eva = eva
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.lm_head = nn.Linear(DIM, out_dim)

    def named_student_params(self):
        """(name, param) in evax's (timm) naming: Eva's own names, mask_token, lm_head.*"""
        out = [("mask_token", self.mask_token)]
        out += list(self.eva.named_parameters())
        out += [("lm_head." + n, p) for n, p in self.lm_head.named_parameters()]
        return out

    def forward(self, img, bool_masked_pos):
        e = self.eva
        x = e.patch_embed(img)  # (B, N, D)
        x = x.detach() * 0.9 + x * 0.1  # stop_grad_conv1
        b, n, _ = x.shape
        mask_token = self.mask_token.expand(b, n, -1)
        w = bool_masked_pos.unsqueeze(-1).type_as(mask_token)
        x = x * (1 - w) + mask_token * w
        x, rope = e._pos_embed(x)  # cls token, absolute pos_embed, RoPE table
        x = e.norm_pre(x)
        for blk in e.blocks:
            x = blk(x, rope=rope)
        x = e.norm(x)
        return self.lm_head(x[:, 1:][bool_masked_pos])


def one_step(kind, student_init, mask_token, teacher, images, teacher_images, mask, g):
    out_dim = DIM if kind == "teacher" else PATCH * PATCH
    model = MimStudent(make_student(), out_dim)
    model.eva.load_state_dict(student_init, strict=True)
    with torch.no_grad():
        model.mask_token.copy_(mask_token)
        model.lm_head.weight.copy_(torch.randn(out_dim, DIM, generator=g) / DIM ** 0.5)
        model.lm_head.bias.copy_(0.02 * torch.randn(out_dim, generator=g))
    model.train()
    named = model.named_student_params()
    init = {n: p.detach().clone() for n, p in named}

    if kind == "teacher":
        with torch.no_grad():
            teacher.eval()
            feats = teacher.forward_features(teacher_images)[:, 1:]
    else:
        with torch.no_grad():
            feats = pixel_targets(teacher_images)
    labels = feats[mask]

    decay = [p for n, p in named if not no_weight_decay(n, p)]
    no_decay = [p for n, p in named if no_weight_decay(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2), eps=EPS)
    opt.zero_grad()
    pred = model(images, mask)
    loss = -F.cosine_similarity(pred.float(), labels.float(), dim=-1).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in named}
    grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], CLIP_GRAD)
    assert grad_norm.item() > CLIP_GRAD, f"{kind}: grad norm {grad_norm.item()} does not clip"
    opt.step()

    res = {f"{kind}/loss": loss.detach().clone(),
           f"{kind}/grad_norm": grad_norm.detach().to(torch.float64)}
    for n, p in named:
        res[f"{kind}/init/{n}"] = init[n]
        res[f"{kind}/grad/{n}"] = grads[n]
        res[f"{kind}/updated/{n}"] = p.detach().clone()
        res[f"{kind}/no_decay/{n}"] = torch.tensor(int(no_weight_decay(n, p)), dtype=torch.uint8)
    print(f"{kind}: loss {loss.item():.6f}, grad norm {grad_norm.item():.4f}, "
          f"{len(named)} tensors ({len(no_decay)} without weight decay)")
    return res


def main():
    args = reference_args()
    g = torch.Generator().manual_seed(1234)

    teacher = make_teacher()
    randomize(teacher.named_parameters(), g)
    teacher.eval()

    eva = make_student()
    randomize(eva.named_parameters(), g)
    student_init = {k: v.detach().clone() for k, v in eva.state_dict().items()}
    mask_token = 0.02 * torch.randn(1, 1, DIM, generator=g)

    # A grey image (three equal channels) with structure and noise, in the two normalisations.
    grey = grey_images(BATCH, IMG, 9, 7, g).expand(BATCH, 3, IMG, IMG).contiguous()
    images = (grey - STUDENT_MEAN) / STUDENT_STD
    teacher_images = (grey - TEACHER_MEAN) / TEACHER_STD

    # A fixed mask, different counts per image (the loss averages over the whole batch):
    # image 0 a 2x3 block (6 patches), image 1 five scattered patches.
    mask = torch.zeros(BATCH, GRID, GRID, dtype=torch.bool)
    mask[0, 1:3, 0:3] = True
    for r, c in [(0, 0), (0, 3), (1, 2), (2, 1), (3, 3)]:
        mask[1, r, c] = True
    mask = mask.flatten(1)

    hp = [LR, BETA1, BETA2, EPS, WEIGHT_DECAY, CLIP_GRAD]
    out = {"images": images, "teacher_images": teacher_images, "mask": mask.to(torch.uint8),
           "hp": torch.tensor(hp, dtype=torch.float64)}
    out.update({f"teacher_weights/{k}": v for k, v in teacher.state_dict().items()})
    for kind in ("teacher", "pixels"):
        out.update(one_step(kind, student_init, mask_token, teacher, images, teacher_images, mask,
                            g))

    save_atomic(out, args.out)


if __name__ == "__main__":
    main()
