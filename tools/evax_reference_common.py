"""Pieces shared by the reference scripts (finetune_reference.py, mim_reference.py,
make_model_fixtures.py, eva_x_lrd_reference.py): the EVA-X and ViT models as timm builds them,
their fixed-seed random weights, the synthetic grey images, and the script's --out handling.

Imported as `evax_reference_common`: Python puts a script's own folder first on sys.path, so
`python tools/<script>.py` finds it from any working directory. Changing anything here changes the
references of every script that uses it (tests/python_reference.h and make_model_fixtures.py's
stamp regenerate them).
"""
import argparse
import os

import torch
from safetensors.torch import save_file
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer

# EVA-X's eva_x.py widths per architecture (timm Eva arguments).
EVA_X_ARCHS = {
    "eva_x_tiny_patch16": dict(embed_dim=192, num_heads=3),
    "eva_x_small_patch16": dict(embed_dim=384, num_heads=6),
    "eva_x_base_patch16": dict(embed_dim=768, num_heads=12, qkv_fused=False, scale_mlp=True),
}


def eva_x(arch, img_size, num_classes, depth=12, **kwargs):
    """timm `Eva` with eva_x.py's EVA-X settings (16 px patches, packed SwiGLU 4*2/3, 2-D RoPE on
    the 14x14 reference grid); `kwargs` adds to them (global_pool, drop_path_rate, ...)."""
    return Eva(img_size=img_size, patch_size=16, depth=depth, mlp_ratio=4 * 2 / 3, swiglu_mlp=True,
               use_rot_pos_emb=True, ref_feat_shape=(14, 14), num_classes=num_classes,
               **EVA_X_ARCHS[arch], **kwargs)


def vit(img_size, embed_dim, depth, num_heads, num_classes=0):
    """timm `VisionTransformer` with 16 px patches and qkv biases (the MGCA / teacher ViTs)."""
    return VisionTransformer(img_size=img_size, patch_size=16, embed_dim=embed_dim, depth=depth,
                             num_heads=num_heads, qkv_bias=True, num_classes=num_classes)


def randomize(named_params, g, fp16=False):
    """Every parameter random from generator `g`, in order: LayerNorm gains around 1, other vectors
    and pos_embed / cls_token ~0.02, matrices ~1/sqrt(fan_in). `fp16`: rounded through fp16, so
    that fp16 files hold exactly the values the references were computed with."""
    with torch.no_grad():
        for name, p in named_params:
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and "norm" in name and name.endswith("weight"):
                v = 1.0 + 0.1 * noise
            elif p.dim() == 1:
                v = 0.02 * noise
            elif name in ("pos_embed", "cls_token"):
                v = 0.02 * noise
            else:
                v = noise / p[0].numel() ** 0.5
            p.copy_(v.half().float() if fp16 else v)


def grey_images(batch, size, fx, fy, g):
    """(batch, 1, size, size) grey images in [0, 1]: a smooth pattern sin(fx*x + 4*y)*cos(fy*y)
    plus per-sample uniform noise from `g`."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.5 + 0.2 * torch.sin(fx * xx + 4 * yy) * torch.cos(fy * yy)
    return (base + 0.15 * torch.rand(batch, 1, size, size, generator=g)).clamp(0, 1)


def reference_args():
    """The script's --out (its folder made), with the settings every reference runs under:
    2 threads, torch's global seed 0."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="the safetensors file to write")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    return args


def save_atomic(tensors, path):
    """Writes `tensors` (name -> tensor) as safetensors through a temporary file and a rename, so
    concurrent test processes may share the file."""
    tmp = f"{path}.tmp{os.getpid()}"
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)
