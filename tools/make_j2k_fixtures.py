#!/usr/bin/env python3
"""JPEG 2000 DICOM fixtures and pydicom reference values (tests/io/dicom_j2k_test.cpp).

Writes into --out, for every fixture NAME:
  NAME.dcm           the DICOM file: transfer syntax 1.2.840.10008.1.2.4.90 (JPEG 2000 lossless),
                     .91 (JPEG 2000 lossy), or 1.2.840.10008.1.2.1 for the uncompressed originals;
                     codestreams from pylibjpeg-openjpeg (OpenJPEG), wrapped by pydicom.encaps;
  NAME.safetensors   float64 tensors:
                       truth     the stored values that were encoded, (frames, rows, cols[, 3]);
                       pixels    pydicom.Dataset.pixel_array of every frame (pydicom 3 with the
                                 pylibjpeg-openjpeg plugin), same shape (absent when pydicom
                                 cannot decode the file: `pydicom_error` says why);
                       modality  pydicom.pixels.apply_modality_lut(pixels), MONOCHROME1 not
                                 inverted;
and index.json: {"pydicom": version, "openjpeg": version, "fixtures": {NAME: {"file",
"reference", "transfer_syntax", "original" (the uncompressed twin, or ""), "lossless", "frames",
"photometric", "pydicom_error", "max_abs_error" (lossy: vs truth), "psnr"}}}.

The main fixture stands in for a real computed radiograph: a 16-bit PA chest, 15 bits stored,
MONOCHROME1, with a window, as CR modalities write them. The others cover signed data with a
rescale, a codestream precision above BitsStored, a codestream whose signedness contradicts
PixelRepresentation, multi-frame data split into several fragments per frame (Basic Offset Table,
Extended Offset Table, or neither), a JP2 file instead of a raw codestream, RGB with the
reversible (YBR_RCT) and irreversible (YBR_ICT) colour transforms, and damaged codestreams.

Fails (exit 1, a line on stderr) when pydicom, numpy, safetensors or pylibjpeg-openjpeg are
missing: the test that runs this must not pass without its reference.
"""
import argparse
import json
import os
import sys
import warnings

try:
    import numpy as np
    import openjpeg
    from openjpeg.utils import encode_array
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate, encapsulate_extended
    from pydicom.pixels import apply_modality_lut
    from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000, JPEG2000Lossless,
                             SecondaryCaptureImageStorage, generate_uid)
    from safetensors.numpy import save_file
except ImportError as e:  # the reference is missing: say so and fail
    sys.stderr.write(f"make_j2k_fixtures.py: missing reference package: {e}\n")
    sys.exit(1)


def chest(rows, cols, rng):
    """A PA chest-like density map in [0, 1] (1 = densest): mediastinum, lungs, ribs, spine,
    clavicles, diaphragm, exposure falloff and quantum noise."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    u, v = (x - cols / 2) / (cols / 2), (y - rows / 2) / (rows / 2)  # [-1, 1]
    d = 0.55 + 0.15 * (1 - u * u)  # soft tissue, thicker in the middle
    lungs = np.zeros_like(d)
    for side in (-1, 1):
        lungs = np.maximum(lungs, np.clip(1 - ((u - 0.42 * side) / 0.33) ** 2
                                          - ((v + 0.05) / 0.62) ** 2, 0, 1) ** 0.5)
    d -= 0.42 * lungs
    d += 0.25 * np.exp(-((u + 0.05) / 0.16) ** 2) * (v > -0.5)  # mediastinum / heart
    d += 0.18 * np.exp(-((u + 0.1) / 0.3) ** 2 - ((v - 0.25) / 0.3) ** 2)  # heart
    ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (v * 5.5 + 0.6 * u * u))
    d += 0.07 * lungs * ribs ** 8
    d += 0.2 * np.exp(-(u / 0.06) ** 2)  # spine
    d += 0.12 * np.exp(-((v + 0.72 + 0.25 * np.abs(u)) / 0.04) ** 2) * (np.abs(u) < 0.7)
    d += 0.3 * (v > 0.62 + 0.08 * np.cos(3 * u))  # diaphragm / abdomen
    d *= 1 - 0.12 * (u * u + v * v)
    d += rng.normal(0, 0.01, d.shape)
    return np.clip(d, 0, 1)


def base_dataset(rows, cols, bits_stored, signed=False, photometric="MONOCHROME2", spp=1,
                 bits_allocated=16, frames=1):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        prefix="1.2.826.0.1.3680043.10.543.", entropy_srcs=[str(rows), str(cols), photometric])
    ds.Modality = "CR"
    ds.PatientID = "J2K"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    if spp == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    return ds


def write(path, ds, tsyntax, frames_data=None, native=None, layout="bot", fragments=1):
    """Saves `ds` with encapsulated `frames_data` (list of codestreams) or `native` pixels."""
    ds.file_meta.TransferSyntaxUID = tsyntax
    if native is not None:
        ds.PixelData = native.tobytes()
        ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    else:
        if layout == "eot":
            data, offsets, lengths = encapsulate_extended(frames_data)
            ds.PixelData = data
            ds.ExtendedOffsetTable = offsets
            ds.ExtendedOffsetTableLengths = lengths
        else:
            ds.PixelData = encapsulate(frames_data, fragments_per_frame=fragments,
                                       has_bot=layout == "bot")
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)


def pydicom_values(path):
    """(pixels, modality, error) as pydicom + pylibjpeg-openjpeg decode every frame."""
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames == 1:
            arr = arr[np.newaxis]
        pixels = np.asarray(arr, dtype=np.float64)
        if ds.SamplesPerPixel == 1:
            modality = np.stack([np.asarray(apply_modality_lut(a, ds), dtype=np.float64)
                                 for a in arr])
        else:
            modality = pixels
        return np.ascontiguousarray(pixels), np.ascontiguousarray(modality), ""
    except Exception as e:  # pydicom raises many types; all mean "cannot decode"
        return None, None, f"{type(e).__name__}: {e}".splitlines()[0][:300]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (created)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(20240609)
    index = {}

    def add(name, ds, truth, tsyntax, codestreams=None, original="", lossless=True, **kw):
        path = os.path.join(args.out, name + ".dcm")
        native = truth if codestreams is None else None
        write(path, ds, tsyntax, codestreams, native, **kw)
        truth = truth if truth.ndim == (4 if ds.SamplesPerPixel == 3 else 3) else truth[np.newaxis]
        pixels, modality, error = pydicom_values(path)
        tensors = {"truth": np.ascontiguousarray(truth, dtype=np.float64)}
        entry = {"file": path, "reference": os.path.join(args.out, name + ".safetensors"),
                 "transfer_syntax": str(tsyntax), "original": original, "lossless": lossless,
                 "frames": int(truth.shape[0]), "photometric": str(ds.PhotometricInterpretation),
                 "pydicom_error": error, "max_abs_error": 0.0, "psnr": 0.0}
        if pixels is not None:
            tensors["pixels"] = pixels
            tensors["modality"] = modality
            if pixels.shape == truth.shape:
                err = np.abs(pixels - truth)
                entry["max_abs_error"] = float(err.max())
                mse = float((err ** 2).mean())
                peak = float(2 ** int(ds.BitsStored) - 1)
                entry["psnr"] = 99.0 if mse == 0 else float(10 * np.log10(peak ** 2 / mse))
        save_file(tensors, entry["reference"], metadata={"name": name, "error": error})
        index[name] = entry

    # 1. The computed radiograph: 16 bits allocated, 15 stored, MONOCHROME1, with a window.
    rows, cols, bits = 320, 256, 15
    m = 2 ** bits - 1
    density = chest(rows, cols, rng)
    cr = np.round(m * (1 - density)).astype(np.uint16)  # MONOCHROME1: dense = low values
    cr[0, 0], cr[0, 1] = 0, m  # both ends of the stored range

    def cr_ds():
        ds = base_dataset(rows, cols, bits, photometric="MONOCHROME1")
        ds.WindowCenter, ds.WindowWidth = 16000, 24000
        return ds

    add("cr_native", cr_ds(), cr, ExplicitVRLittleEndian)
    add("cr_lossless", cr_ds(), cr, JPEG2000Lossless,
        [encode_array(cr, bits_stored=bits)], original="cr_native")
    add("cr_lossy", cr_ds(), cr, JPEG2000,
        [encode_array(cr, bits_stored=bits, compression_ratios=[12])],
        original="cr_native", lossless=False)
    add("cr_lossy_psnr", cr_ds(), cr, JPEG2000,
        [encode_array(cr, bits_stored=bits, signal_noise_ratios=[45])],
        original="cr_native", lossless=False)
    # Fragments of 4 KiB (pydicom splits one codestream into `fragments` pieces).
    add("cr_lossless_fragments", cr_ds(), cr, JPEG2000Lossless,
        [encode_array(cr, bits_stored=bits)], original="cr_native", fragments=5)
    # The codestream in a JP2 file (non-conformant, seen in the wild), no offset table.
    add("cr_lossless_jp2", cr_ds(), cr, JPEG2000Lossless,
        [encode_array(cr, bits_stored=bits, codec_format=1)], original="cr_native",
        layout="none")

    # 2. Signed 12 of 16 bits with a rescale (CT-like), MONOCHROME2.
    s12 = (np.round(3500 * density - 1800) + rng.integers(-40, 40, density.shape)).clip(
        -2048, 2047).astype(np.int16)
    s12[0, 0], s12[0, 1] = -2048, 2047

    def s12_ds():
        ds = base_dataset(rows, cols, 12, signed=True)
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-1024"
        return ds

    add("signed_native", s12_ds(), s12, ExplicitVRLittleEndian)
    add("signed_lossless", s12_ds(), s12, JPEG2000Lossless,
        [encode_array(s12, bits_stored=12)], original="signed_native")
    add("signed_lossy", s12_ds(), s12, JPEG2000,
        [encode_array(s12, bits_stored=12, compression_ratios=[10])],
        original="signed_native", lossless=False)
    # PixelRepresentation 1 but an unsigned 12-bit codestream of the two's complement bits
    # (as pydicom's J2K_pixelrep_mismatch.dcm): read back as signed.
    add("signed_as_unsigned", s12_ds(), s12, JPEG2000Lossless,
        [encode_array((s12.astype(np.int32) & 0xFFF).astype(np.uint16), bits_stored=12)],
        original="signed_native")

    # 3. Codestream precision 16 for 12 bits stored (as pydicom's 693_J2KI.dcm), unsigned.
    u12 = np.round(4095 * density).astype(np.uint16)
    u12[0, 0], u12[0, 1] = 0, 4095
    add("prec16_native", base_dataset(rows, cols, 12), u12, ExplicitVRLittleEndian)
    add("prec16_lossless", base_dataset(rows, cols, 12), u12, JPEG2000Lossless,
        [encode_array(u12, bits_stored=16)], original="prec16_native")
    add("prec16_lossy", base_dataset(rows, cols, 12), u12, JPEG2000,
        [encode_array(u12, bits_stored=16, compression_ratios=[20])],
        original="prec16_native", lossless=False)

    # 4. Three frames, each split into 3 fragments: with a Basic Offset Table, without one, and
    # one fragment per frame with an Extended Offset Table.
    fr, fc, nframes = 64, 96, 3
    mf = np.stack([np.round(65535 * chest(fr, fc, rng) * (0.5 + 0.25 * k)).clip(0, 65535)
                   for k in range(nframes)]).astype(np.uint16)
    mf[0, 0, 0], mf[1, 0, 0] = 0, 65535
    streams = [encode_array(f, bits_stored=16) for f in mf]
    mf_ds = lambda: base_dataset(fr, fc, 16, frames=nframes)  # noqa: E731
    add("multiframe_native", mf_ds(), mf, ExplicitVRLittleEndian)
    add("multiframe_bot", mf_ds(), mf, JPEG2000Lossless, streams, original="multiframe_native",
        layout="bot", fragments=3)
    add("multiframe_nobot", mf_ds(), mf, JPEG2000Lossless, streams,
        original="multiframe_native", layout="none", fragments=3)
    add("multiframe_eot", mf_ds(), mf, JPEG2000Lossless, streams, original="multiframe_native",
        layout="eot")
    add("multiframe_lossy", mf_ds(), mf, JPEG2000,
        [encode_array(f, bits_stored=16, compression_ratios=[8]) for f in mf],
        original="multiframe_native", lossless=False, layout="none")

    # 5. RGB, 8 bits: reversible colour transform (lossless, YBR_RCT), irreversible (lossy,
    # YBR_ICT), and none (lossless, RGB).
    rgb = np.stack([np.round(255 * density), np.round(255 * density ** 2),
                    np.round(255 * (1 - density))], axis=-1).astype(np.uint8)
    rgb_ds = lambda pi: base_dataset(rows, cols, 8, photometric=pi, spp=3,  # noqa: E731
                                     bits_allocated=8)
    add("rgb_native", rgb_ds("RGB"), rgb, ExplicitVRLittleEndian)
    add("rgb_rct", rgb_ds("YBR_RCT"), rgb, JPEG2000Lossless,
        [encode_array(rgb, bits_stored=8, photometric_interpretation=1, use_mct=True)],
        original="rgb_native")
    add("rgb_plain", rgb_ds("RGB"), rgb, JPEG2000Lossless,
        [encode_array(rgb, bits_stored=8, photometric_interpretation=1, use_mct=False)],
        original="rgb_native")
    add("rgb_ict", rgb_ds("YBR_ICT"), rgb, JPEG2000,
        [encode_array(rgb, bits_stored=8, photometric_interpretation=1, use_mct=True,
                               compression_ratios=[10])],
        original="rgb_native", lossless=False)

    # 6. Damaged: the codestream cut at 60 % (even length), and a fragment that is no codestream.
    whole = encode_array(cr, bits_stored=bits)
    cut = whole[: (len(whole) * 6 // 10) & ~1]
    add("cr_truncated", cr_ds(), cr, JPEG2000Lossless, [cut], original="cr_native")
    add("cr_not_j2k", cr_ds(), cr, JPEG2000Lossless, [b"\x00\x01" * 64], original="cr_native")

    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump({"pydicom": pydicom.__version__, "openjpeg": openjpeg.__version__,
                   "fixtures": index}, f, indent=1)
    print(f"{len(index)} fixtures; pydicom {pydicom.__version__}, pylibjpeg-openjpeg "
          f"{openjpeg.__version__}")
    for name, e in index.items():
        print(f"  {name}: {e['transfer_syntax']} max abs error {e['max_abs_error']:g}"
              f" psnr {e['psnr']:.1f} {e['pydicom_error']}")


if __name__ == "__main__":
    main()
