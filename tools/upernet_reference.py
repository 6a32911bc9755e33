#!/usr/bin/env python3
"""Reference for tests/segment/upernet_test.cpp: EVA-X's segmentation model (UperNet on an EVA-X
backbone, shared/reference/evax_finetune.md section 3.1) written in plain PyTorch, never evax's C++.

Structure and key names follow hustvl/EVA-X segmentation/models/backbone/eva_x.py (EVA_X) and
mmsegmentation 0.29's UPerHead / PPM / FCNHead / BaseDecodeHead with mmcv's ConvModule (conv
without bias, norm `bn`, ReLU), read for their facts:

  backbone   the EVA-X ViT: timm `Eva` from evax_reference_common.eva_x (the classifier's layout,
             same maths as EVA_X), run block by block; the raw residual stream after each block in
             out_indices (no final norm, cls dropped) reshaped to (B, D, G, G). use_last_feat_only:
             only the last out_index's map, fed to all four levels. Then EVA_X's simple pyramid:
             fpn1 = ConvT(k2 s2), BatchNorm, GELU, ConvT(k2 s2); fpn2 = ConvT(k2 s2); fpn3 =
             identity; fpn4 = MaxPool(2). State-dict keys are EVA_X's (EVA-02 naming: mlp.w12/w3,
             B: mlp.w1/w2/ffn_ln/w3 and bias-free q_proj/k_proj/v_proj + q_bias/v_bias), with the
             VisionRotaryEmbeddingFast buffers rope.freqs_cos/sin and, shared, every
             blocks.i.attn.rope.freqs_cos/sin, computed here from EVA-X's formula and checked
             against timm's table.
  decode     UPerHead: PPM (adaptive avg pool s, 1x1 ConvModule, bilinear back, align_corners
             False) on level 3, concat, 3x3 `bottleneck`; 1x1 `lateral_convs` on levels 0-2;
             top-down sums (bilinear); 3x3 `fpn_convs`; all levels bilinear to level 0, concat,
             3x3 `fpn_bottleneck`, Dropout2d, 1x1 `conv_seg`.
  auxiliary  FCNHead(in_index 2, channels 256, num_convs 1, concat_input False): convs.0 (3x3
             ConvModule), Dropout2d, conv_seg.

Every weight is random (fixed seed), and so are the BatchNorm running statistics, so eval-mode
BatchNorm is far from the identity. Models run in eval mode (dropout off, BatchNorm on running
statistics, no drop path), in fp32 and, from the same weights, in fp64.

Cases <c> (batch 2 each; all EVA-X-style random grey images, EVA normalisation):
  last   EVA-X-S widths, depth 3, 96 px, out_indices [0, 1] and use_last_feat_only (block 1's
         tokens feed every level; block 2 exists and must not matter), 2 classes, 1 sigmoid
         channel, no auxiliary head, decoder channels 128.
  multi  EVA-X-S widths, depth 4, 64 px, out_indices [0, 1, 2, 3] each feeding its own level,
         auxiliary FCN head (256 channels), 3 classes, 3 softmax channels, decoder channels 64.
  base   EVA-X-B widths (split q/k/v, sub-LN SwiGLU), depth 1, 64 px, out_indices [0], last
         feature only, 2 classes, 1 channel, decoder channels 64.

Writes one safetensors file (--out; atomically):
  <c>/config                int64 [depth, img, use_last_feat_only, aux_head, num_classes,
                            out_channels, channels, dim]
  <c>/out_indices           int64
  <c>/weights/<mmseg key>   fp32: every state-dict entry (parameters, BatchNorm buffers with
                            num_batches_tracked, rope buffers) under EVA-X/mmseg names
  <c>/input                 (2, 3, img, img) fp32
  <c>/<p>/logits            decode-head logits (2, out_channels, img/4, img/4); p in fp32, fp64
  <c>/<p>/resized           logits resized to the input (bilinear, align_corners False)
  <c>/<p>/aux_logits        auxiliary logits (2, out_channels, img/16, img/16), multi only
  <c>/<p>/features/<l>      the pyramid's four maps (l = 0..3)
and, next to it, <out stem>_mmseg.pth: case `last`'s weights as an mmseg checkpoint file
({meta, state_dict, optimizer}, torch.save).
"""
import math
import os
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from evax_reference_common import eva_x, grey_images, randomize, reference_args, save_atomic

EVA_MEAN, EVA_STD = 0.49185243, 0.28509309
BATCH = 2
AUX_CHANNELS = 256   # mmseg's usual FCNHead auxiliary channels
POOL_SCALES = (1, 2, 3, 6)
PT_SEQ_LEN = 14      # EVA_X pt_hw_seq_len (RoPE reference grid)

# Decoder widths below EVA-X's 256 keep the file small; the code path is the same.
CASES = {
    "last": dict(arch="eva_x_small_patch16", depth=3, img=96, out_indices=[0, 1],
                 last_only=True, aux=False, num_classes=2, out_channels=1, channels=128),
    "multi": dict(arch="eva_x_small_patch16", depth=4, img=64, out_indices=[0, 1, 2, 3],
                  last_only=False, aux=True, num_classes=3, out_channels=3, channels=64),
    "base": dict(arch="eva_x_base_patch16", depth=1, img=64, out_indices=[0],
                 last_only=True, aux=False, num_classes=2, out_channels=1, channels=64),
}


# --- mmcv / mmseg structure ------------------------------------------------------------------

class ConvModule(nn.Module):
    """mmcv ConvModule with norm_cfg BN and act_cfg ReLU: conv (no bias, a norm follows), `bn`,
    ReLU."""

    def __init__(self, cin, cout, k, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU()

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


def resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PPM(nn.ModuleList):
    def __init__(self, scales, cin, ch):
        super().__init__()
        for s in scales:
            self.append(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(cin, ch, 1)))

    def forward(self, x):
        return [resize(m(x), x.shape[2:]) for m in self]


class UPerHead(nn.Module):
    def __init__(self, in_channels, ch, num_out, scales=POOL_SCALES, dropout=0.1):
        super().__init__()
        # BaseDecodeHead registers conv_seg and dropout first.
        self.conv_seg = nn.Conv2d(ch, num_out, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.psp_modules = PPM(scales, in_channels[-1], ch)
        self.bottleneck = ConvModule(in_channels[-1] + len(scales) * ch, ch, 3, padding=1)
        self.lateral_convs = nn.ModuleList([ConvModule(c, ch, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([ConvModule(ch, ch, 3, padding=1) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvModule(len(in_channels) * ch, ch, 3, padding=1)

    def forward(self, inputs):
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        x = inputs[-1]
        laterals.append(self.bottleneck(torch.cat([x] + self.psp_modules(x), dim=1)))
        n = len(laterals)
        for i in range(n - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n - 1)] + [laterals[-1]]
        for i in range(n - 1, 0, -1):
            outs[i] = resize(outs[i], outs[0].shape[2:])
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
    def __init__(self, cin, ch, num_out, dropout=0.1):
        super().__init__()
        self.conv_seg = nn.Conv2d(ch, num_out, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.convs = nn.Sequential(ConvModule(cin, ch, 3, padding=1))

    def forward(self, inputs):
        return self.conv_seg(self.dropout(self.convs(inputs[2])))


class Pyramid(nn.Module):
    """EVA_X's fpn1..fpn4 for patch 16 (named as in EVA_X, under `backbone.`)."""

    def __init__(self, d):
        super().__init__()
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2), nn.BatchNorm2d(d), nn.GELU(),
                                  nn.ConvTranspose2d(d, d, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)

    def forward(self, maps):
        return [op(m) for op, m in zip([self.fpn1, self.fpn2, self.fpn3, self.fpn4], maps)]


# --- EVA-X backbone through timm's Eva ---------------------------------------------------------

def vit_maps(eva, x, out_indices, last_only):
    """EVA_X.forward_features up to the pyramid: raw block outputs, cls dropped, (B, D, G, G)."""
    b, _, h, w = x.shape
    gh, gw = h // 16, w // 16
    t = eva.patch_embed(x)
    t, rope = eva._pos_embed(t)
    t = eva.norm_pre(t)
    maps = []
    for i, blk in enumerate(eva.blocks):
        t = blk(t, rope=rope)
        if i in out_indices:
            maps.append(t[:, 1:, :].permute(0, 2, 1).reshape(b, -1, gh, gw))
    if last_only:
        maps = [maps[-1]] * 4
    assert len(maps) == 4
    return maps


def eva_x_rope(grid, head_dim):
    """EVA-X's VisionRotaryEmbeddingFast(dim=head_dim/2, pt_seq_len=14, ft_seq_len=grid):
    (grid^2, head_dim) cos and sin; first half the row angle, second half the column, each
    frequency twice in a row."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    t = torch.arange(grid) / grid * PT_SEQ_LEN
    f = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)     # (G, dim)
    f = torch.cat([f[:, None, :].expand(grid, grid, dim),                  # row
                   f[None, :, :].expand(grid, grid, dim)], dim=-1)          # column
    f = f.reshape(-1, 2 * dim)
    return f.cos(), f.sin()


def eva02_keys(eva, depth, grid, head_dim):
    """timm Eva state dict -> EVA_X (EVA-02) names, with EVA_X's rope buffers."""
    split = hasattr(eva.blocks[0].attn, "q_proj") and eva.blocks[0].attn.q_proj is not None
    cos, sin = eva_x_rope(grid, head_dim)
    out = {}
    for k, v in eva.state_dict().items():
        if k.startswith(("norm.", "fc_norm.", "head.")) or k.endswith("attn.k_bias"):
            continue  # EVA_X has no final norm, pooling or head; timm's k_bias is a zero buffer
        k = (k.replace("mlp.fc1_g.", "mlp.w1.").replace("mlp.fc1_x.", "mlp.w2.")
              .replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.")
              .replace("mlp.norm.", "mlp.ffn_ln."))
        if split:
            k = (k.replace("attn.q_proj.bias", "attn.q_bias")
                  .replace("attn.v_proj.bias", "attn.v_bias"))
        out[k] = v
        if k == "patch_embed.proj.bias":
            out["rope.freqs_cos"], out["rope.freqs_sin"] = cos, sin
    for i in range(depth):
        out[f"blocks.{i}.attn.rope.freqs_cos"], out[f"blocks.{i}.attn.rope.freqs_sin"] = cos, sin
    return out


# --- random weights ----------------------------------------------------------------------------

def randomize_head(module, g):
    """Convs ~ N(0, 1/fan_in) (ConvT: fan_in = input channels, one tap per output pixel), biases
    ~0.1, BatchNorm gains 1 +- 0.2 and shifts ~0.1, running mean ~0.2, running var in [0.5, 1.5],
    num_batches_tracked 7."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                is_t = isinstance(m, nn.ConvTranspose2d)
                fan_in = m.weight.shape[0] if is_t else m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(1.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


# --- one case ----------------------------------------------------------------------------------

class Segmentor(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.eva = eva_x(c["arch"], c["img"], 0, depth=c["depth"], global_pool="token",
                         drop_path_rate=0.0)
        d = self.eva.embed_dim
        self.pyramid = Pyramid(d)
        self.decode_head = UPerHead([d] * 4, c["channels"], c["out_channels"])
        self.auxiliary_head = FCNHead(d, AUX_CHANNELS, c["out_channels"]) if c["aux"] else None

    def forward(self, x):
        feats = self.pyramid(vit_maps(self.eva, x, self.c["out_indices"], self.c["last_only"]))
        aux = self.auxiliary_head(feats) if self.auxiliary_head is not None else None
        return self.decode_head(feats), aux, feats

    def mmseg_state_dict(self):
        grid = self.c["img"] // 16
        head_dim = self.eva.embed_dim // self.eva.blocks[0].attn.num_heads
        vit = eva02_keys(self.eva, self.c["depth"], grid, head_dim)
        sd = {f"backbone.{k}": v for k, v in vit.items()}
        sd.update({f"backbone.{k}": v for k, v in self.pyramid.state_dict().items()})
        sd.update({f"decode_head.{k}": v for k, v in self.decode_head.state_dict().items()})
        if self.auxiliary_head is not None:
            aux = self.auxiliary_head.state_dict()
            sd.update({f"auxiliary_head.{k}": v for k, v in aux.items()})
        return sd


def run_case(name, c, g):
    model = Segmentor(c)
    randomize(model.eva.named_parameters(), g)
    randomize_head(model, g)
    model.eval()

    # EVA-X's rope layout is timm's RotaryEmbeddingCat table ([sin | cos], (G^2, 2*head_dim)).
    grid = c["img"] // 16
    head_dim = model.eva.embed_dim // model.eva.blocks[0].attn.num_heads
    cos, sin = eva_x_rope(grid, head_dim)
    timm_table = model.eva.rope.get_embed()
    assert torch.equal(torch.cat([sin, cos], -1), timm_table), "EVA-X and timm RoPE tables differ"

    grey = grey_images(BATCH, c["img"], 6.0 + len(name), 5.0, g)
    x = ((grey - EVA_MEAN) / EVA_STD).expand(BATCH, 3, c["img"], c["img"]).contiguous()

    out = {f"{name}/config": torch.tensor(
               [c["depth"], c["img"], int(c["last_only"]), int(c["aux"]), c["num_classes"],
                c["out_channels"], c["channels"], model.eva.embed_dim], dtype=torch.int64),
           f"{name}/out_indices": torch.tensor(c["out_indices"], dtype=torch.int64),
           f"{name}/input": x}
    for k, v in model.mmseg_state_dict().items():
        out[f"{name}/weights/{k}"] = v.detach().clone()

    for prec, dtype in (("fp32", torch.float32), ("fp64", torch.float64)):
        model.to(dtype)
        with torch.no_grad():
            logits, aux, feats = model(x.to(dtype))
        out[f"{name}/{prec}/logits"] = logits
        out[f"{name}/{prec}/resized"] = resize(logits, x.shape[2:])
        if aux is not None:
            out[f"{name}/{prec}/aux_logits"] = aux
        for i, f in enumerate(feats):
            out[f"{name}/{prec}/features/{i}"] = f
        print(f"{name} {prec}: logits {tuple(logits.shape)} |max| {logits.abs().max().item():.3f}"
              f" std {logits.std().item():.3f}"
              + (f", aux |max| {aux.abs().max().item():.3f}" if aux is not None else ""))
    model.to(torch.float32)
    return out


def save_mmseg_checkpoint(out, case, path):
    """Case `case`'s weights as mmseg/mmcv save them (torch.save of {meta, state_dict (an
    OrderedDict), optimizer}), written before the safetensors file so that it is never older."""
    prefix = f"{case}/weights/"
    sd = OrderedDict((k[len(prefix):], v) for k, v in out.items() if k.startswith(prefix))
    first = next(iter(sd.values()))
    ckpt = {"meta": {"mmseg_version": "0.29.1", "CLASSES": ("normal", "pneumothorax"),
                     "PALETTE": [[0, 0, 0], [255, 255, 255]], "epoch": 10, "iter": 1250},
            "state_dict": sd,
            "optimizer": {"state": {0: {"step": torch.tensor(3.0),
                                        "exp_avg": torch.zeros_like(first)}},
                          "param_groups": [{"lr": 6e-5, "weight_decay": 0.05, "params": [0]}]}}
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def main():
    args = reference_args()
    g = torch.Generator().manual_seed(2468)
    out = {}
    for name, c in CASES.items():
        out.update(run_case(name, c, g))
    save_mmseg_checkpoint(out, "last", os.path.splitext(args.out)[0] + "_mmseg.pth")
    save_atomic(out, args.out)


if __name__ == "__main__":
    main()
