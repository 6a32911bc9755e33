#!/usr/bin/env python3
"""Reference for tests/explain/gradcam_test.cpp: Grad-CAM and Grad-CAM++ maps of a timm EVA-X
classifier, computed the way the `grad-cam` package (pytorch-grad-cam 1.5.x: base_cam.py,
activations_and_gradients.py, grad_cam.py, grad_cam_plusplus.py, utils/image.py scale_cam_image,
utils/model_targets.py ClassifierOutputTarget) does for EVA-X's grad_cam/get_cams.py set-up
(target layer model.blocks[-1].norm1, reshape_transform: drop the cls token, tokens -> (B, D, H/16,
W/16)), never evax's C++.

The package is not in the pinned venv, so `package_cam` below writes its steps out with plain
torch and numpy: a forward hook on each target module stores the reshaped activation, a second
forward hook registers a tensor hook on the module output that stores the reshaped gradient
(prepended, so the list ends in forward order), the loss is the sum over the batch of each
image's raw class logit (ClassifierOutputTarget), backward; then per layer, in numpy float32,
the channel weights (GradCAM: the mean of the gradients over the grid; GradCAMPlusPlus: its
eq. 19 weights), cam = sum_c w_c A_c, max(cam, 0), scale_cam_image(cam, (W, H)) = per image
(x - min) / (1e-7 + max(x - min)) then cv2.resize(float32, (W, H)) with INTER_LINEAR (here
`cv2_resize_linear`, an explicit numpy bilinear with half-pixel centres and clamped edges, as
OpenCV computes it for float32), and the aggregation: concatenate the layers, max(., 0), mean over
the layers, scale_cam_image again. To use the real package instead (once it is in the venv),
replace the body of `package_cam` with the call shown in its docstring; nothing else changes.

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


def cv2_resize_linear(img, width, height):
    """cv2.resize(img, (width, height), interpolation=INTER_LINEAR) of a 2-D float32 array:
    source coordinate f = (d + 0.5) * in / out - 0.5 (float32), s = floor(f), weights 1 - (f - s)
    and f - s; s < 0 reads pixel 0 with weight 1, s >= in - 1 reads pixel in - 1 with weight 1;
    a horizontal pass, then a vertical one, in float32."""
    in_h, in_w = img.shape

    def taps(out, inp):
        f = ((np.arange(out, dtype=np.float64) + 0.5) * (inp / out) - 0.5).astype(np.float32)
        s = np.floor(f).astype(np.int64)
        frac = (f - s.astype(np.float32)).astype(np.float32)
        low = s < 0
        s[low], frac[low] = 0, 0
        high = s >= inp - 1
        s[high], frac[high] = inp - 1, 0
        return s, np.minimum(s + 1, inp - 1), frac

    x0, x1, fx = taps(width, in_w)
    y0, y1, fy = taps(height, in_h)
    one = np.float32(1)
    rows = img[:, x0] * (one - fx)[None, :] + img[:, x1] * fx[None, :]
    out = rows[y0, :] * (one - fy)[:, None] + rows[y1, :] * fy[:, None]
    return out.astype(np.float32)


def scale_cam_image(cam, target_size=None):
    """pytorch-grad-cam utils/image.py scale_cam_image for 2-D maps (target_size = (W, H))."""
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            img = cv2_resize_linear(np.float32(img), target_size[0], target_size[1])
        result.append(img)
    return np.float32(result)


def cam_weights(method, activations, grads):
    if method == "gradcam":  # grad_cam.py
        return np.mean(grads, axis=(2, 3))
    # grad_cam_plusplus.py
    grads_power_2 = grads ** 2
    grads_power_3 = grads_power_2 * grads
    sum_activations = np.sum(activations, axis=(2, 3))
    eps = 0.000001
    aij = grads_power_2 / (2 * grads_power_2 + sum_activations[:, :, None, None] * grads_power_3 + eps)
    aij = np.where(grads != 0, aij, 0)
    weights = np.maximum(grads, 0) * aij
    return np.sum(weights, axis=(2, 3))


def package_cam(model, target_layers, reshape_transform, input_tensor, categories, method):
    """The maps (B, H, W) and the classes the package computes for

        cls = GradCAM if method == "gradcam" else GradCAMPlusPlus   # pytorch_grad_cam
        targets = None if categories is None else [ClassifierOutputTarget(c) for c in categories]
        with cls(model=model, target_layers=target_layers,
                 reshape_transform=reshape_transform) as cam:
            maps = cam(input_tensor=input_tensor, targets=targets)

    (the classes: `categories`, or the argmax of the logits when None), written out step by step.
    """
    model.eval()
    activations, gradients, handles = [], [], []

    def save_activation(module, inp, output):
        activations.append(reshape_transform(output).cpu().detach())

    def save_gradient(module, inp, output):
        if not hasattr(output, "requires_grad") or not output.requires_grad:
            return

        def store(grad):
            gradients.insert(0, reshape_transform(grad).cpu().detach())
        output.register_hook(store)

    for layer in target_layers:
        handles.append(layer.register_forward_hook(save_activation))
        handles.append(layer.register_forward_hook(save_gradient))
    try:
        outputs = model(input_tensor)
        if categories is None:
            categories = np.argmax(outputs.cpu().data.numpy(), axis=-1)
        model.zero_grad()
        # ClassifierOutputTarget(c)(output) on one image's 1-D output: output[c].
        loss = sum([output[c] for c, output in zip(categories, outputs)])
        loss.backward(retain_graph=True)
    finally:
        for h in handles:
            h.remove()
    width, height = input_tensor.size(-1), input_tensor.size(-2)
    per_layer = []
    for a, g in zip(activations, gradients):
        a, g = a.numpy(), g.numpy()
        weights = cam_weights(method, a, g)
        cam = (weights[:, :, None, None] * a).sum(axis=1)
        cam = np.maximum(cam, 0)
        per_layer.append(scale_cam_image(cam, (width, height))[:, None, :])
    per_layer = np.maximum(np.concatenate(per_layer, axis=1), 0)
    return scale_cam_image(np.mean(per_layer, axis=1)), [int(c) for c in categories]


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
