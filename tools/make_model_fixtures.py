#!/usr/bin/env python3
"""Reference fixtures for the model tests: timm models with fixed-seed weights, their outputs, and
the same weights saved in every checkpoint naming evax must load.

For each case <name> under --out:
  <name>.ref.safetensors      pixel_values (B,3,S,S), tokens (timm forward_features),
                              pooled (timm forward_head(pre_logits=True)), logits when a head exists
  <name>.timm.safetensors     weights in timm naming (fp32), at the model's own size
and per architecture (weights shared by its 224 and 480 cases):
  <arch>.eva02_mim.pt         EVA-02/asuka naming, fp16, under `model`, with mask_token, lm_head,
                              final norm, rope buffers, args=argparse.Namespace, epoch, optimizer
  <arch>.eva02_ft.pth         EVA-02 naming, fp32, under `module`, fc_norm + head, extra entries
  mgca_vit_base_patch16.mgca.ckpt   Lightning-style MGCA file (state_dict, img_encoder_q.model.)

Weights are random (fixed seed) and rounded through fp16 so that the fp16 files hold exactly the
values the references were computed with.
"""
import argparse
import hashlib
import os
from collections import OrderedDict

import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import evax_reference_common
from evax_reference_common import EVA_X_ARCHS, eva_x, randomize, vit


def randomize_fp16(model, seed):
    """Every parameter random (LayerNorm gains around 1), rounded through fp16."""
    randomize(model.named_parameters(), torch.Generator().manual_seed(seed), fp16=True)


def to_eva02(sd, arch, mim):
    """timm Eva naming -> EVA-02/asuka naming (the released EVA-X files)."""
    out = OrderedDict()
    base = "base" in arch
    for k, v in sd.items():
        n = k
        n = n.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2")
        n = n.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3").replace("mlp.norm", "mlp.ffn_ln")
        if base:
            n = n.replace("attn.q_proj.bias", "attn.q_bias").replace("attn.v_proj.bias", "attn.v_bias")
        if mim:
            if n.startswith("fc_norm."):
                n = n.replace("fc_norm.", "norm.")
            if n.startswith("head."):
                continue
        out[n] = v
    return out


def save_ref(path, x, model):
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
        ref = {"pixel_values": x, "tokens": tokens, "pooled": pooled}
        if getattr(model, "num_classes", 0):
            ref["logits"] = model.forward_head(tokens)
    save_file({k: v.contiguous() for k, v in ref.items()}, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", default="eva_x_tiny_patch16,eva_x_small_patch16,eva_x_base_patch16,mgca")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    # Skip when this script already produced the fixtures (the stamp holds the hash of its code).
    code = b""
    for path in (__file__, evax_reference_common.__file__):
        with open(path, "rb") as f:
            code += f.read()
    stamp = hashlib.sha256(code + args.archs.encode()).hexdigest()
    stamp_path = os.path.join(args.out, ".stamp")
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        print("fixtures up to date:", args.out)
        return
    torch.set_num_threads(2)
    archs = args.archs.split(",")

    for i, arch in enumerate(a for a in archs if a in EVA_X_ARCHS):
        num_classes = 14 if arch == "eva_x_small_patch16" else 0
        m224 = eva_x(arch, 224, num_classes).eval()
        randomize_fp16(m224, seed=100 + i)
        sd = OrderedDict((k, v.detach().clone()) for k, v in m224.state_dict().items())
        save_file(dict(sd), os.path.join(args.out, f"{arch}_224.timm.safetensors"))
        g = torch.Generator().manual_seed(7)
        save_ref(os.path.join(args.out, f"{arch}_224.ref.safetensors"),
                 torch.randn(2, 3, 224, 224, generator=g), m224)

        # 480: the 224 weights with the position embedding resampled as eva_x.py does.
        m480 = eva_x(arch, 480, num_classes).eval()
        sd480 = OrderedDict(sd)
        sd480["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=(30, 30),
                                                    num_prefix_tokens=1)
        m480.load_state_dict(sd480, strict=True)
        save_ref(os.path.join(args.out, f"{arch}_480.ref.safetensors"),
                 torch.randn(1, 3, 480, 480, generator=g), m480)

        dim = m224.embed_dim
        grid = 14 * 14
        # Released MIM-style file: fp16 under `model`, MIM extras, non-tensor entries.
        mim = to_eva02(sd, arch, mim=True)
        mim["mask_token"] = torch.randn(1, 1, dim, generator=g) * 0.02
        mim["lm_head.weight"] = torch.randn(768, dim, generator=g) * 0.02
        mim["lm_head.bias"] = torch.zeros(768)
        mim["rope.freqs_cos"] = torch.randn(grid, 64, generator=g)
        mim["rope.freqs_sin"] = torch.randn(grid, 64, generator=g)
        for b in range(12):
            mim[f"blocks.{b}.attn.rope.freqs_cos"] = mim["rope.freqs_cos"]
            mim[f"blocks.{b}.attn.rope.freqs_sin"] = mim["rope.freqs_sin"]
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
        opt.step()
        torch.save({"model": OrderedDict((k, v.half()) for k, v in mim.items()),
                    "args": argparse.Namespace(model=arch, lr=1.5e-3, input_size=224),
                    "epoch": 599, "optimizer": opt.state_dict(), "scaler": {"scale": 65536.0}},
                   os.path.join(args.out, f"{arch}.eva02_mim.pt"))
        # Finetuned-style file: fp32 under `module`, fc_norm and head kept.
        ft = to_eva02(sd, arch, mim=False)
        torch.save({"module": ft, "epoch": 9, "args": argparse.Namespace(nb_classes=num_classes)},
                   os.path.join(args.out, f"{arch}.eva02_ft.pth"))

    if "mgca" in archs:
        m = vit(224, 768, 12, 12).eval()  # MGCA's ViT-B/16
        randomize_fp16(m, seed=200)
        sd = OrderedDict((k, v.detach().clone()) for k, v in m.state_dict().items())
        save_file(dict(sd), os.path.join(args.out, "mgca_vit_base_patch16_224.timm.safetensors"))
        g = torch.Generator().manual_seed(8)
        save_ref(os.path.join(args.out, "mgca_vit_base_patch16_224.ref.safetensors"),
                 torch.randn(2, 3, 224, 224, generator=g), m)
        state = OrderedDict()
        for k, v in sd.items():
            state["img_encoder_q.model." + k] = v
        state["img_encoder_q.global_embed.head.0.weight"] = torch.randn(2048, 768, generator=g)
        state["img_encoder_q.global_embed.head.1.running_mean"] = torch.zeros(2048)
        state["text_encoder_q.model.embeddings.word_embeddings.weight"] = torch.randn(10, 8)
        state["prototype_layer.weight"] = torch.randn(5, 128, generator=g)
        torch.save({"epoch": 49, "global_step": 1000, "pytorch-lightning_version": "1.9.0",
                    "state_dict": state, "hyper_parameters": {"img_encoder": "vit_base", "lr": 2e-5},
                    "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}},
                    "optimizer_states": [], "lr_schedulers": []},
                   os.path.join(args.out, "mgca_vit_base_patch16.mgca.ckpt"))
    with open(stamp_path, "w") as f:
        f.write(stamp)


if __name__ == "__main__":
    main()
