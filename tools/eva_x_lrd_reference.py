#!/usr/bin/env python3
"""Reference layer-decay groups for tests/models/layer_decay_test.cpp.

Builds timm's Eva as the EVA-X classifiers (global_pool='avg', fc_norm + head; Ti/S/B settings of
tools/evax_reference_common.py) and assigns each trainable parameter EVA-X's (lr_scale,
weight_decay) following classification/utils/lr_decay.py (param_groups_lrd, get_layer_id_for_vit)
with the no-weight-decay names of EVA-X's models_eva.py no_weight_decay(): {'pos_embed',
'cls_token'}.
Layer decays: 0.55 (every shipped EVA-X run), 0.65, 0.75 (train.py default). weight_decay 0.05.

Writes JSON: {"weight_decay": wd, "cases": [{"arch", "depth", "layer_decay", "params":
{name: [lr_scale, weight_decay]}}]}.
"""
import argparse
import json
import os

from evax_reference_common import EVA_X_ARCHS, eva_x

EVA_X_NO_WEIGHT_DECAY = {"pos_embed", "cls_token"}
WEIGHT_DECAY = 0.05


def layer_id(name, num_layers):
    # get_layer_id_for_vit
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def groups(model, layer_decay):
    # param_groups_lrd: num_layers = len(blocks) + 1, scales layer_decay ** (num_layers - id)
    num_layers = len(model.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    out = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if (p.ndim == 1 or n in EVA_X_NO_WEIGHT_DECAY) else WEIGHT_DECAY
        out[n] = [scales[layer_id(n, num_layers)], wd]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cases = []
    for arch in EVA_X_ARCHS:
        model = eva_x(arch, 224, 14, global_pool="avg")
        for decay in (0.55, 0.65, 0.75):
            cases.append(dict(arch=arch, depth=len(model.blocks), layer_decay=decay,
                              params=groups(model, decay)))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        json.dump({"weight_decay": WEIGHT_DECAY, "cases": cases}, f)
    os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
