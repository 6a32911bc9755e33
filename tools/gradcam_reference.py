#!/usr/bin/env python3
"""Reference for tests/explain/gradcam_test.cpp: Grad-CAM and Grad-CAM++ maps of a timm EVA-X
classifier from the `grad-cam` package (pytorch-grad-cam) itself, set up as EVA-X's
grad_cam/get_cams.py does (target layer model.blocks[-1].norm1, reshape_transform: drop the cls
token, tokens -> (B, D, H/16, W/16)), never evax's C++.

The maps come from the package itself (grad-cam 1.5.7, tools/requirements-extra.txt): its GradCAM /
GradCAMPlusPlus with ClassifierOutputTarget targets, EVA-X's reshape transform and the package's
own min-max scaling and cv2 bilinear resize.

Model: tools/evax_reference_common.eva_x("eva_x_tiny_patch16") (EVA-X-Ti widths, RoPE, packed
SwiGLU, global_pool 'avg' with fc_norm), 3 blocks, 5 classes, 224 px, dynamic_img_size=True so
that the same weights run at 160 x 224 (timm resamples the position embedding bicubically with
antialias and rescales RoPE to the 14 x 14 reference grid). Every parameter random (fixed seed).

Cases (<k>: height x width, batch, method, target layers, classes):
  g224       224 x 224, 4, gradcam,   blocks.2.norm1 (EVA-X's default), [0, 3, 1, 4]
  top224     224 x 224, 4, gradcam,   blocks.2.norm1, None (the top class of each image)
  g160x224   160 x 224, 3, gradcam,   blocks.2.norm1, [2, 0, 4]
  pp224      224 x 224, 4, gradcam++, blocks.2.norm1, [1, 2, 3, 0]
  pp160x224  160 x 224, 3, gradcam++, blocks.2.norm1, [4, 1, 2]
  norm2      224 x 224, 4, gradcam,   blocks.1.norm2, [0, 1, 2, 3]
  block      224 x 224, 4, gradcam,   blocks.1 (the block's output), [2, 2, 4, 1]
  multi      224 x 224, 4, gradcam,   blocks.0.norm1 + blocks.2.norm1, [3, 3, 0, 1]

Writes one safetensors file (--out):
  init/<name>      the weights (timm naming, model.named_parameters())
  <k>/x            (B, 3, H, W) float32 inputs (grey patterns of varying frequency and contrast)
  <k>/classes      (B) int64, the classes the maps explain
  <k>/logits       (B, 5) float32
  <k>/cam          (B, H, W) float32, the maps
"""
import numpy as np
import torch

from evax_reference_common import eva_x, grey_images, randomize, reference_args, save_atomic

CLASSES, DEPTH, IMG = 5, 3, 224
EVA_MEAN, EVA_STD = 0.49185243, 0.28509309
CASES = {
    "g224": (224, 224, 4, "gradcam", ["blocks.2.norm1"], [0, 3, 1, 4]),
    "top224": (224, 224, 4, "gradcam", ["blocks.2.norm1"], None),
    "g160x224": (160, 224, 3, "gradcam", ["blocks.2.norm1"], [2, 0, 4]),
    "pp224": (224, 224, 4, "gradcam++", ["blocks.2.norm1"], [1, 2, 3, 0]),
    "pp160x224": (160, 224, 3, "gradcam++", ["blocks.2.norm1"], [4, 1, 2]),
    "norm2": (224, 224, 4, "gradcam", ["blocks.1.norm2"], [0, 1, 2, 3]),
    "block": (224, 224, 4, "gradcam", ["blocks.1"], [2, 2, 4, 1]),
    "multi": (224, 224, 4, "gradcam", ["blocks.0.norm1", "blocks.2.norm1"], [3, 3, 0, 1]),
}


def vit_reshape_transform(height, width):
    """EVA-X get_cams.py's reshape_transform for a height x width grid: drop the cls token,
    (B, 1 + N, D) -> (B, H, W, D) -> (B, D, H, W)."""
    def transform(tensor):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return transform


def package_cam(model, target_layers, reshape_transform, input_tensor, categories, method):
    """The maps (B, H, W) the package computes and the classes they explain (`categories`, or
    each image's top class when None, as the package picks them)."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    if categories is None:
        with torch.no_grad():
            categories = model(input_tensor).argmax(-1).tolist()
    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    targets = [ClassifierOutputTarget(int(c)) for c in categories]
    with cls(model=model, target_layers=target_layers, reshape_transform=reshape_transform) as cam:
        maps = cam(input_tensor=input_tensor, targets=targets)
    return np.float32(maps), [int(c) for c in categories]


def module(model, name):
    parts = name.split(".")
    m = model.blocks[int(parts[1])]
    return getattr(m, parts[2]) if len(parts) == 3 else m


def images_one(i, h, w, g):
    """Image i of a case: (1, 3, h, w), a grey pattern of its own frequencies and contrast
    (EVA-X normalisation times 0.5 + 0.5 i), so that the images' top classes differ."""
    grey = grey_images(1, max(h, w), 3.0 + 4 * i, 2.0 + 3 * i, g)[:, :, :h, :w]
    return ((grey - EVA_MEAN) / EVA_STD * (0.5 + 0.5 * i)).expand(-1, 3, -1, -1).contiguous()


def main():
    args = reference_args()
    g = torch.Generator().manual_seed(2024)
    model = eva_x("eva_x_tiny_patch16", IMG, CLASSES, depth=DEPTH, global_pool="avg",
                  dynamic_img_size=True)
    randomize(model.named_parameters(), g)
    model.eval()
    out = {f"init/{n}": p.detach().clone() for n, p in model.named_parameters()}
    for k, (h, w, b, method, layers, categories) in CASES.items():
        x = torch.cat([images_one(i, h, w, g) for i in range(b)])
        with torch.no_grad():
            logits = model(x)
        cams, classes = package_cam(model, [module(model, n) for n in layers],
                                    vit_reshape_transform(h // 16, w // 16), x, categories, method)
        out[f"{k}/x"] = x
        out[f"{k}/classes"] = torch.tensor(classes, dtype=torch.int64)
        out[f"{k}/logits"] = logits
        out[f"{k}/cam"] = torch.from_numpy(cams)
    save_atomic(out, args.out)


if __name__ == "__main__":
    main()
