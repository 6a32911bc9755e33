#!/usr/bin/env python3
"""pydicom reference values for the DICOM decoder parity test (tests/io/dicom_read_test.cpp).

For every file of pydicom's own test corpus (pydicom/data/test_files, recursively: *.dcm and
files without an extension) the script tries to decode the first frame with pydicom and whatever
pixel-data plugins are installed (numpy always; Pillow, pylibjpeg or gdcm when present), applies
pydicom.pixels.apply_modality_lut, and writes --out/NNNN.safetensors with
  pixels    float64 (rows, cols) or (rows, cols, 3): the modality values (RGB as pydicom
            returns colour, YBR converted to RGB), MONOCHROME1 *not* inverted;
  metadata  file, decoded ("1"/"0"), error, photometric, transfer_syntax, samples_per_pixel,
            frames.
Files pydicom cannot decode get a safetensors with the metadata only. --out/index.json lists
every file: {"file": path relative to test_files, "path": absolute path, "decoded": bool,
"error": str, "photometric": str, "transfer_syntax": str, "tensors": "NNNN.safetensors"}.

Only numpy, pydicom and safetensors are imported (no torch), so a run takes about a second.
"""
import argparse
import json
import os
import warnings

import numpy as np
import pydicom
import pydicom.data
from pydicom.pixels import apply_modality_lut
from safetensors.numpy import save_file


def corpus_files(root):
    """Every *.dcm and extension-less file under root, sorted for a stable numbering."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(".dcm") or "." not in name:
                out.append(os.path.join(dirpath, name))
    return sorted(out)


def decode(path):
    """(pixels float64 or None, info dict) for one file."""
    info = {"photometric": "", "transfer_syntax": "", "samples_per_pixel": "", "frames": ""}
    try:
        ds = pydicom.dcmread(path, force=True)
        meta = getattr(ds, "file_meta", None)
        info["transfer_syntax"] = str(getattr(meta, "TransferSyntaxUID", "") or "")
        info["photometric"] = str(ds.get("PhotometricInterpretation", "") or "")
        info["samples_per_pixel"] = str(ds.get("SamplesPerPixel", "") or "")
        info["frames"] = str(ds.get("NumberOfFrames", "") or "")
        if "PixelData" not in ds:
            return None, dict(info, error="no PixelData")
        ds.pixel_array_options(index=0)  # the first frame only
        arr = ds.pixel_array
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        return np.ascontiguousarray(values), dict(info, error="")
    except Exception as e:  # pydicom raises many types; all mean "cannot decode"
        return None, dict(info, error=f"{type(e).__name__}: {e}".splitlines()[0][:300])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (created)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    warnings.simplefilter("ignore")
    root = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
    index = []
    for i, path in enumerate(corpus_files(root)):
        pixels, info = decode(path)
        rel = os.path.relpath(path, root)
        name = f"{i:04d}.safetensors"
        meta = {"file": rel, "decoded": "1" if pixels is not None else "0", **info}
        save_file({"pixels": pixels} if pixels is not None else {}, os.path.join(args.out, name),
                  metadata=meta)
        index.append({"file": rel, "path": os.path.abspath(path), "decoded": pixels is not None,
                      "error": info["error"], "photometric": info["photometric"],
                      "transfer_syntax": info["transfer_syntax"], "tensors": name})
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump({"pydicom": pydicom.__version__, "root": root, "files": index}, f, indent=1)
    print(f"{len(index)} files, {sum(e['decoded'] for e in index)} decoded by pydicom "
          f"{pydicom.__version__}")


if __name__ == "__main__":
    main()
