#!/usr/bin/env python3
"""Small checkpoints for the checkpoint-reader tests (tests/io/weight_file_test.cpp).

For each case <name>.<ext> under --out the script also writes <name>.expected.safetensors: every
tensor the C++ reader must find, under the name it must give it (keys joined with '.', list and
tuple items by index, objects through their pickled state), as contiguous copies in the original
dtype (uint16 stored as int32: the C++ safetensors reader does not take U16). Its metadata holds
`file` (the checkpoint's file name) and `state_dict_key`: the key weight_file_state_dict must pick
("" = the top level, "-" = it must fail), and `state_dict_names`: the names it must return, one a
line. For pickled modules <name>.state_dict.safetensors holds module.state_dict() itself.

Corrupt files go to --out/corrupt/; the C++ tests expect a DataError from each, and
corrupt/expected_errors.txt lists "<file>\t<substring of the message>".

Fixed seeds; the output depends only on torch, numpy and safetensors versions.
"""
import argparse
import io
import os
import random
import shutil
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from safetensors.torch import save_file


class AttributeDict(dict):
    """Like Lightning's hyper_parameters container: a dict subclass the reader does not know."""


class MyTensor(torch.Tensor):
    """A tensor subclass: pickled through torch._tensor._rebuild_from_type_v2."""


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def key_text(k):
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "True" if k else "False"
    if isinstance(k, int):
        return str(k)
    return "<%s>" % type(k).__name__


def walk(v, name, out, depth=0):
    """Every tensor reachable the way the C++ reader walks: mirrors Walker in src/evax/io/weight_file.cpp."""
    child = lambda k: k if not name else name + "." + k
    if isinstance(v, torch.Tensor):
        if name not in out:
            out[name] = v
        return
    if isinstance(v, dict):
        for k, x in v.items():
            walk(x, child(key_text(k)), out, depth + 1)
        if type(v) in (dict, OrderedDict):
            return
    if isinstance(v, (list, tuple)) and type(v) in (list, tuple, torch.Size):
        for i, x in enumerate(v):
            walk(x, child(str(i)), out, depth + 1)
        return
    if isinstance(v, (str, bytes, int, float, bool, type(None), set, frozenset, torch.device,
                      torch.dtype)):
        return
    # Any other object: what pickle records for it (protocol 2), items first, then state.
    rv = v.__reduce_ex__(2)
    if isinstance(rv, str):
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            walk(x, child(str(i)), out, depth + 1)
    if len(rv) > 2 and rv[2] is not None:
        walk(rv[2], name, out, depth + 1)


def walk_mappings(v, name, out):
    """The state-dict walk: through dicts only, tensors kept, everything else skipped."""
    if isinstance(v, torch.Tensor):
        out.append(name)
    elif isinstance(v, dict):
        for k, x in v.items():
            walk_mappings(x, key_text(k) if not name else name + "." + key_text(k), out)


def write_expected(out_dir, fname, obj, state_dict_key, state_names=None):
    found = OrderedDict()
    walk(obj, "", found)
    if state_names is None:
        state_names = []
        if state_dict_key != "-":
            walk_mappings(obj[state_dict_key] if state_dict_key else obj, "", state_names)
    tensors = OrderedDict()
    for k, t in found.items():
        t = t.detach().clone().contiguous()
        if type(t) is not torch.Tensor:
            t = t.as_subclass(torch.Tensor)
        if t.dtype == torch.uint16:
            t = t.to(torch.int32)
        tensors[k] = t
    stem = fname.rsplit(".", 1)[0]
    if isinstance(obj, torch.nn.Module) or isinstance(obj.get(state_dict_key), torch.nn.Module):
        module = obj if isinstance(obj, torch.nn.Module) else obj[state_dict_key]
        save_file({k: v.detach().clone().contiguous() for k, v in module.state_dict().items()},
                  os.path.join(out_dir, stem + ".state_dict.safetensors"))
    save_file(tensors, os.path.join(out_dir, stem + ".expected.safetensors"),
              metadata={"file": fname, "state_dict_key": state_dict_key,
                        "state_dict_names": "\n".join(state_names)})


def adamw_state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return opt.state_dict()


def rewrite_zip(src, dst, change):
    """Copies a zip record by record; change(name, data) returns new data or None to drop."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def record_data_offset(path, suffix):
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        h = f.read(30)
    name_len, extra_len = struct.unpack("<HH", h[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(os.path.join(out, "corrupt"), exist_ok=True)
    torch.manual_seed(0)
    np.random.seed(0)

    def save(fname, obj, state_dict_key, state_names=None, **kw):
        torch.save(obj, os.path.join(out, fname), **kw)
        write_expected(out, fname, obj, state_dict_key, state_names)

    # 1. A plain dict of fp32 tensors.
    plain = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4),
             "fc.weight": torch.randn(2, 4)}
    save("plain_fp32.pt", plain, "")

    # 2. A module's state_dict(): an OrderedDict carrying _metadata, int64 num_batches_tracked.
    net = SmallNet()
    net.train()
    net(torch.randn(2, 3, 8, 8))  # moves the BatchNorm running stats
    save("module_state.pth", net.state_dict(), "")

    # 3. EVA-02 style: fp16 + bf16 weights nested under `model`, plus training state.
    model = {
        "patch_embed.proj.weight": torch.randn(8, 3, 4, 4).half(),
        "cls_token": torch.nn.Parameter(torch.randn(1, 1, 8).half()),
        "blocks": {"0": {"attn.qkv.weight": torch.randn(24, 8).bfloat16(),
                         "attn.qkv.bias": torch.randn(24).bfloat16()},
                   "1": {"mlp.fc1.weight": torch.randn(16, 8).half()}},
        "rope.freqs": torch.randn(4),
    }
    save("eva_style.pt", {
        "model": model,
        "args": argparse.Namespace(lr=1.5e-3, model="eva02_base", layers=[1, 2], drop=None),
        "epoch": 3,
        "optimizer": adamw_state(SmallNet()),
        "np_scalar": np.float64(0.25),
        "np_int": np.int64(7),
        "input_size": torch.Size([3, 224, 224]),
        "device": torch.device("cuda", 0),
        "dtype": torch.float16,
        "tags": {"a", "b"},
        "big_int": 2 ** 80,
        "neg": -123456789012,
        "raw": b"\x00\x01\xff",
    }, "model")

    # 4. Lightning style: prefixed keys under state_dict and framework entries around them.
    small = SmallNet()
    sd = OrderedDict(("model." + k, v) for k, v in small.state_dict().items())
    save("lightning.ckpt", {
        "epoch": 5,
        "global_step": 120,
        "pytorch-lightning_version": "2.2.0",
        "state_dict": sd,
        "hyper_parameters": AttributeDict(lr=1e-4, backbone="vit_base", img_size=224),
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.125), "best_model_path": "/runs/x.ckpt"}},
        "optimizer_states": [adamw_state(small)],
        "lr_schedulers": [{"last_epoch": 5, "_step_count": 6}],
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 6}}}},
    }, "state_dict")

    # 5. Shared storages: views with offsets, a transposed (non-contiguous) one, a repeat.
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    save("shared.pt", {"base": base, "rows": base[1:], "col": base[:, 2], "tr": base.t(),
                       "again": base, "other": torch.ones(3)}, "")

    # 6. Integer, bool, float64, 0-dim and empty tensors; uint16 goes through _rebuild_tensor_v3.
    save("dtypes.pt", {
        "i64": torch.arange(-5, 5, dtype=torch.int64), "i32": torch.arange(6, dtype=torch.int32),
        "i16": torch.tensor([-3, 0, 3], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "mask": torch.tensor([[True, False], [False, True]]),
        "f64": torch.randn(3, dtype=torch.float64), "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3), "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),
    }, "")

    # 7. Pickle protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL) and protocol 5.
    p4 = {"w": torch.randn(3, 2), "meta": {"name": "p4", "values": (1, 2.5, None)},
          "nested": [torch.arange(3), {"t": torch.ones(2, dtype=torch.float16)}]}
    save("proto4.pt", p4, "", pickle_protocol=4)
    save("proto5.pt", {"w": torch.randn(2), "s": {1, 2}, "f": frozenset({3})}, "",
         pickle_protocol=5)

    # 8. Parameters and a tensor subclass.
    save("subclass.pt", {"p": torch.nn.Parameter(torch.randn(3)),
                         "sub": torch.randn(2, 2).as_subclass(MyTensor)}, "")

    # 9. Whole pickled modules: the state dict comes from their _parameters/_buffers/_modules.
    whole = SmallNet()
    whole.register_buffer("scratch", torch.zeros(2), persistent=False)
    save("whole_module.pt", whole, "", list(whole.state_dict().keys()))
    inner = SmallNet()
    save("module_object.pt", {"model": inner, "epoch": 1}, "model", list(inner.state_dict()))
    save("no_state_dict.pt", {"epoch": 1, "names": ["a", "b"], "ns": argparse.Namespace(x=1)}, "-")

    # 10. safetensors from the reference library, with metadata.
    st = {"a.weight": torch.randn(3, 4), "a.half": torch.randn(5).half(),
          "a.bf": torch.randn(2, 2).bfloat16(), "ids": torch.arange(4),
          "flags": torch.tensor([True, False]), "bytes": torch.tensor([1, 2, 3], dtype=torch.uint8),
          "scalar": torch.tensor(2.0)}
    save_file(st, os.path.join(out, "reference.safetensors"),
              metadata={"format": "pt", "note": "fixture"})
    write_expected(out, "reference.safetensors", st, "")

    # Corrupt variants.
    cdir = os.path.join(out, "corrupt")
    errors = []
    good = os.path.join(out, "plain_fp32.pt")
    raw = open(good, "rb").read()
    with open(os.path.join(cdir, "truncated.pt"), "wb") as f:
        f.write(raw[: len(raw) // 2])
    errors.append(("truncated.pt", "checkpoint"))
    off, size = record_data_offset(good, "data.pkl")
    flipped = bytearray(raw)
    for i in range(off + 2, off + size - 1, 3):
        flipped[i] ^= 0x5A
    with open(os.path.join(cdir, "flipped_pkl.pt"), "wb") as f:
        f.write(bytes(flipped))
    errors.append(("flipped_pkl.pt", "checkpoint"))
    rewrite_zip(good, os.path.join(cdir, "missing_record.pt"),
                lambda n, d: None if n.endswith("/data/1") else d)
    errors.append(("missing_record.pt", "record"))
    rewrite_zip(good, os.path.join(cdir, "big_endian.pt"),
                lambda n, d: b"big" if n.endswith("/byteorder") else d)
    errors.append(("big_endian.pt", "big-endian"))
    rewrite_zip(good, os.path.join(cdir, "short_storage.pt"),
                lambda n, d: d[:-4] if n.endswith("/data/0") else d)
    errors.append(("short_storage.pt", "should hold"))
    torch.save(plain, os.path.join(cdir, "legacy.pt"), _use_new_zipfile_serialization=False)
    errors.append(("legacy.pt", "legacy (pre-1.6)"))

    st_raw = open(os.path.join(out, "reference.safetensors"), "rb").read()
    with open(os.path.join(cdir, "header_too_long.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(st_raw) + 100) + st_raw[8:])
    errors.append(("header_too_long.safetensors", "exceeds the file size"))
    header = (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}')
    header += b" " * (-len(header) % 8)
    with open(os.path.join(cdir, "overlap.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + bytes(12))
    errors.append(("overlap.safetensors", "overlaps"))
    with open(os.path.join(cdir, "truncated.safetensors"), "wb") as f:
        f.write(st_raw[:-3])
    errors.append(("truncated.safetensors", "data section"))
    rng = random.Random(1234)
    with open(os.path.join(cdir, "random.bin"), "wb") as f:
        f.write(bytes([0x13]) + bytes(rng.randrange(256) for _ in range(4095)))
    errors.append(("random.bin", "unrecognized format"))
    open(os.path.join(cdir, "empty.pt"), "wb").close()
    errors.append(("empty.pt", "empty file"))
    with open(os.path.join(cdir, "expected_errors.txt"), "w") as f:
        for name, msg in errors:
            f.write("%s\t%s\n" % (name, msg))


if __name__ == "__main__":
    main()
