#!/usr/bin/env python3
"""Reference PNGs and JPEGs, decoded by Pillow, for evax's codecs (tests/io/image_codec_test.cpp).

The pixels are given in OpenCV's convention, what cv::imdecode(buf, IMREAD_UNCHANGED) gave and
evax's decoders give (src/evax/io/png.h, jpeg.h): H x W x C with C = 1 (grey), 3 (BGR) or 4
(BGRA); grey + alpha as B = G = R = grey plus alpha; palette and RGB images with a tRNS chunk as
BGRA; a grey tRNS key ignored; CMYK JPEGs as BGR by OpenCV's formula (below).

--out FILE.safetensors writes, for every case NAME:
  png/NAME/file, jpeg/NAME/file   uint8 (n,): the encoded file;
  png/NAME/pixels                 int32 (H, W, C): the decoded samples (8- or 16-bit values);
  png/NAME/bits                   int32 (1,): 8 or 16, the depth evax must decode to;
  jpeg/NAME/pixels                uint8 (H, W, C).

PNGs: most are written by this script's own encoder (every colour type and bit depth, Adam7
interlacing, palettes with and without tRNS, colour keys, random row filters, split IDATs and
ancillary chunks), a few by Pillow's. Each one's pixels are Pillow's decode; the script also
checks them against the samples it encoded and, where torchvision's libpng reader returns the
samples unchanged, against libpng. Pillow reads 16-bit colour (RGB, RGBA, grey + alpha) as 8 bits:
there the reference is the encoded samples, whose high bytes must equal Pillow's values and whose
full values must equal libpng's.

JPEGs are written and decoded by Pillow (libjpeg-turbo, accurate integer IDCT, fancy upsampling):
grey, 4:4:4, 4:2:2 and 4:2:0 colour (Pillow writes no other), progressive, restart intervals,
optimised Huffman tables, odd sizes, an EXIF orientation (not applied), and CMYK. A CMYK JPEG
(Pillow writes the Adobe-inverted form) decodes in Pillow to ink values C, M, Y, K; the file stores
c = 255 - C etc., and OpenCV turns stored values into R = k - ((255 - c) * k >> 8) (G from m, B
from y).

--check-png DIR verifies PNGs written by evax's encoder (tests/io/png_test.cpp): every
DIR/<name>__<H>x<W>x<C>x<bits>.png must pass Pillow's verify() (every chunk CRC), decode in Pillow
and in torchvision's libpng to the raw host-order OpenCV pixels in DIR/<same name>.raw (Pillow's
16-bit colour to their high bytes); prints what differs and exits 1 if anything does.

Deterministic (fixed seeds, zlib and Pillow defaults); takes a few seconds (imports included).
"""
import argparse
import glob
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

try:  # libpng as a second reference where it returns samples unchanged
    import torch
    import torchvision.io as tvio
except ImportError:  # pragma: no cover - the pinned venv has both
    torch = tvio = None

SIG = b"\x89PNG\r\n\x1a\n"
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def pack_rows(samples, depth):
    """PNG scanlines (no filter byte) of an (h, w, c) array of samples."""
    h, w, c = samples.shape
    if depth == 16:
        return [samples[y].astype(">u2").tobytes() for y in range(h)]
    if depth == 8:
        return [samples[y].astype(np.uint8).tobytes() for y in range(h)]
    rows = []
    for y in range(h):
        v = samples[y, :, 0].astype(np.uint8)
        bits = (v[:, None] >> np.arange(depth - 1, -1, -1, dtype=np.uint8)) & 1
        rows.append(np.packbits(bits.reshape(-1)).tobytes())
    return rows


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def filter_rows(rows, bpp, rng):
    """Each row behind a random filter type (all five appear in images of 5+ rows)."""
    out, prev = [], None
    for i, row in enumerate(rows):
        cur = np.frombuffer(row, np.uint8).astype(np.int32)
        up = prev if prev is not None else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])[:len(cur)]
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])[:len(cur)]
        f = i % 5 if i < 5 else int(rng.integers(0, 5))
        pred = [0, left, up, (left + up) >> 1, paeth(left, up, upleft)][f]
        out.append(bytes([f]) + ((cur - pred) % 256).astype(np.uint8).tobytes())
        prev = cur
    return b"".join(out)


def encode_png(samples, colour, depth, rng, interlace=False, palette=None, trns=None,
               idat_pieces=1, extra=False, level=6):
    """A PNG of the (h, w, c) samples (PNG channel order; palette indices for colour 3)."""
    h, w, _ = samples.shape
    bpp = max(1, CHANNELS[colour] * depth // 8)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += filter_rows(pack_rows(sub, depth), bpp, rng)
    else:
        raw = filter_rows(pack_rows(samples, depth), bpp, rng)
    z = zlib.compress(raw, level)
    png = SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, int(interlace)))
    if extra:
        png += chunk(b"gAMA", struct.pack(">I", 45455)) + chunk(b"tEXt", b"Comment\0evax")
    if palette is not None:
        png += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        png += chunk(b"tRNS", trns)
    cuts = sorted([0, len(z)] + [int(rng.integers(0, len(z) + 1)) for _ in range(idat_pieces - 1)])
    for a, b in zip(cuts[:-1], cuts[1:]):
        png += chunk(b"IDAT", z[a:b])
    if extra:
        png += chunk(b"tEXt", b"After\0the image data")
    return png + chunk(b"IEND", b"")


def expected_from_samples(samples, colour, depth, palette=None, trns=None):
    """OpenCV's pixels for PNG samples, computed from the PNG specification and OpenCV's rules."""
    s = samples.astype(np.int64)
    full = (1 << depth) - 1 if depth < 16 else 65535
    if colour == 0:
        return s * (255 // full) if depth < 8 else s  # tRNS ignored
    if colour == 3:
        pal = palette.reshape(-1, 3)[:, ::-1].astype(np.int64)  # BGR
        out = pal[s[..., 0]]
        if trns is not None:
            alpha = np.full(len(pal), 255, np.int64)
            alpha[:len(trns)] = np.frombuffer(trns, np.uint8)
            out = np.concatenate([out, alpha[s[..., 0]][..., None]], axis=2)
        return out
    if colour == 2:
        out = s[..., ::-1]
        if trns is not None:
            key = np.array(struct.unpack(">HHH", trns)) & full
            alpha = np.where((s == key).all(axis=2), 0, full)
            out = np.concatenate([out, alpha[..., None]], axis=2)
        return out
    if colour == 4:
        return s[..., [0, 0, 0, 1]]
    return s[..., [2, 1, 0, 3]]


def pillow_png(data):
    """Pillow's decode in OpenCV's convention, and whether Pillow kept every bit."""
    im = Image.open(io.BytesIO(data))
    im.load()
    mode, trns = im.mode, "transparency" in im.info
    if mode == "1":
        a = np.array(im.convert("L"))[..., None]
    elif mode == "L":
        a = np.array(im)[..., None]
    elif mode.startswith("I;16"):
        a = np.array(im).astype(np.int64)[..., None]
    elif mode == "P":
        order = [2, 1, 0, 3] if trns else [2, 1, 0]
        a = np.array(im.convert("RGBA" if trns else "RGB"))[..., order]
    elif mode == "RGB":
        a = np.array(im.convert("RGBA") if trns else im)[..., [2, 1, 0, 3] if trns else [2, 1, 0]]
    elif mode == "RGBA":
        a = np.array(im)[..., [2, 1, 0, 3]]
    elif mode == "LA":
        a = np.array(im)[..., [0, 0, 0, 1]]
    else:
        raise SystemExit(f"unexpected Pillow mode {mode}")
    return a.astype(np.int64)


def libpng_png(data):
    """torchvision's libpng decode, unchanged (C, H, W -> H, W, C), or None without torchvision."""
    if tvio is None:
        return None
    t = tvio.decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                        tvio.ImageReadMode.UNCHANGED)
    return t.permute(1, 2, 0).to(torch.int64).numpy()


def content(h, w, c, maxval, rng):
    """Smooth gradients (so the filters matter) plus noise, spanning 0..maxval."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (3 + k) + yy * (5 + 2 * k)) for k in range(c)], axis=2).astype(float)
    base = base / max(1.0, base.max()) * maxval
    noise = rng.integers(0, max(2, maxval // 16 + 1), (h, w, c))
    out = (base + noise) % (maxval + 1)
    out.flat[0] = 0
    out.flat[-1] = maxval
    return out.astype(np.int64)


def png_cases(out, rng):
    cases = []  # (name, data, expected, bits)

    def add(name, samples, colour, depth, pillow_exact=True, **kw):
        palette, trns = kw.get("palette"), kw.get("trns")
        data = encode_png(samples, colour, depth, rng, **kw)
        want = expected_from_samples(samples, colour, depth, palette, trns)
        got = pillow_png(data)
        if pillow_exact:
            assert got.shape == want.shape and (got == want).all(), f"Pillow disagrees on {name}"
        else:  # Pillow keeps the high byte of 16-bit colour (and compares a colour key to it)
            n = 3 if trns is not None else want.shape[2]
            assert got.shape == want.shape and (got[..., :n] == want[..., :n] >> 8).all(), name
        if colour in (0, 2, 4, 6) and trns is None and depth >= 8:
            lib = libpng_png(data)
            if lib is not None:
                assert lib.shape == samples.shape and (lib == samples).all(), f"libpng, {name}"
        cases.append((name, data, want, 16 if depth == 16 else 8))

    sizes = [(13, 17), (1, 1), (1, 37), (37, 1)]
    for depth in (1, 2, 4, 8, 16):
        for h, w in sizes:
            add(f"grey{depth}_{h}x{w}", content(h, w, 1, (1 << depth) - 1, rng), 0, depth)
        for h, w in [(13, 17), (3, 5), (9, 2)]:
            add(f"grey{depth}_{h}x{w}_interlaced", content(h, w, 1, (1 << depth) - 1, rng), 0,
                depth, interlace=True)
    for colour, cname in ((2, "rgb"), (6, "rgba"), (4, "la")):
        for depth in (8, 16):
            for h, w in sizes:
                s = content(h, w, CHANNELS[colour], (1 << depth) - 1, rng)
                add(f"{cname}{depth}_{h}x{w}", s, colour, depth, pillow_exact=depth == 8)
            add(f"{cname}{depth}_13x17_interlaced",
                content(13, 17, CHANNELS[colour], (1 << depth) - 1, rng), colour, depth,
                pillow_exact=depth == 8, interlace=True)
    for depth in (1, 2, 4, 8):
        n = 1 << depth
        for entries in sorted({n, max(2, n * 2 // 3)}):  # a full and a short palette
            palette = rng.integers(0, 256, (entries, 3))
            for with_trns in (False, True):
                alphas = rng.integers(0, 256, max(1, entries - 1)).tolist()
                trns = bytes(alphas) if with_trns else None
                for h, w, il in [(13, 17, False), (1, 37, False), (37, 1, False), (13, 17, True)]:
                    idx = rng.integers(0, entries, (h, w, 1))
                    name = (f"palette{depth}_{entries}{'_trns' if with_trns else ''}_{h}x{w}"
                            f"{'_interlaced' if il else ''}")
                    add(name, idx, 3, depth, palette=palette, trns=trns, interlace=il)
    # Colour keys: grey keys are ignored; RGB keys become alpha (some pixels equal the key).
    for depth in (1, 8, 16):
        s = content(13, 17, 1, (1 << depth) - 1, rng)
        add(f"grey{depth}_trns", s, 0, depth, trns=struct.pack(">H", int(s[2, 3, 0])))
    for depth in (8, 16):
        for il in (False, True):
            s = content(13, 17, 3, (1 << depth) - 1, rng)
            key = s[4, 5].copy()
            s[6:9, 2:7] = key
            add(f"rgb{depth}_trns{'_interlaced' if il else ''}", s, 2, depth,
                pillow_exact=depth == 8, trns=struct.pack(">HHH", *map(int, key)), interlace=il)
    # Split IDATs (empty pieces included) with ancillary chunks, and longer rows.
    add("grey8_idat_pieces", content(40, 30, 1, 255, rng), 0, 8, idat_pieces=5, extra=True)
    add("rgba16_idat_pieces", content(20, 9, 4, 65535, rng), 6, 16, pillow_exact=False,
        idat_pieces=4, extra=True)
    add("grey8_300x256", content(256, 300, 1, 255, rng), 0, 8)
    add("grey16_300x256", content(256, 300, 1, 65535, rng), 0, 16)
    add("rgb8_300x64_level9", content(64, 300, 3, 255, rng), 2, 8, level=9)
    add("grey8_64x64_stored", content(64, 64, 1, 255, rng), 0, 8, level=0)

    # Files written by Pillow's own encoder.
    for name, im in [
        ("pillow_L", Image.fromarray(content(21, 33, 1, 255, rng)[..., 0].astype(np.uint8))),
        ("pillow_RGB", Image.fromarray(content(21, 33, 3, 255, rng).astype(np.uint8))),
        ("pillow_RGBA", Image.fromarray(content(21, 33, 4, 255, rng).astype(np.uint8))),
        ("pillow_LA", Image.fromarray(content(21, 33, 2, 255, rng).astype(np.uint8), "LA")),
        ("pillow_I16", Image.fromarray(content(21, 33, 1, 65535, rng)[..., 0].astype(np.uint16))),
        ("pillow_1", Image.fromarray(content(21, 33, 1, 1, rng)[..., 0].astype(bool))),
        ("pillow_P", Image.fromarray(content(21, 33, 3, 255, rng).astype(np.uint8)).quantize(13)),
    ]:
        for opt in (False, True):
            b = io.BytesIO()
            kw = {"transparency": 2} if name == "pillow_P" and opt else {}
            im.save(b, "PNG", optimize=opt, **kw)
            data = b.getvalue()
            cases.append((f"{name}{'_opt' if opt else ''}", data, pillow_png(data),
                          16 if name == "pillow_I16" else 8))
    for name, data, want, bits in cases:
        out[f"png/{name}/file"] = np.frombuffer(data, np.uint8).copy()
        out[f"png/{name}/pixels"] = np.ascontiguousarray(want.astype(np.int32))
        out[f"png/{name}/bits"] = np.array([bits], np.int32)
    return len(cases)


def jpeg_markers(data):
    """(SOF type, [(h, v) sampling per component], has DRI, RST count) of a JPEG."""
    i, sof, sampling, dri = 2, None, [], False
    while i + 4 <= len(data):
        assert data[i] == 0xFF, "marker expected"
        m = data[i + 1]
        if m == 0xDA:
            break
        n = struct.unpack(">H", data[i + 2:i + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            sof = m
            nc = data[i + 9]
            sampling = [(data[i + 11 + 3 * k] >> 4, data[i + 11 + 3 * k] & 15) for k in range(nc)]
        dri |= m == 0xDD
        i += 2 + n
    rst = sum(data.count(bytes([0xFF, 0xD0 + k])) for k in range(8))
    return sof, sampling, dri, rst


def pillow_jpeg(data):
    im = Image.open(io.BytesIO(data))
    a = np.array(im).astype(np.int64)
    if im.mode == "L":
        return a[..., None]
    if im.mode == "RGB":
        return a[..., ::-1]
    assert im.mode == "CMYK", im.mode
    stored = 255 - a  # Pillow undoes the Adobe inversion
    k = stored[..., 3:4]
    rgb = k - (((255 - stored[..., :3]) * k) >> 8)
    return rgb[..., ::-1]


def jpeg_cases(out, rng):
    def colour_image(h, w):
        yy, xx = np.mgrid[0:h, 0:w]
        a = np.stack([128 + 100 * np.sin(xx / 3.0 + k) * np.cos(yy / 4.0 - k) for k in range(3)], 2)
        return np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)

    n = 0

    def add(name, im, sof=0xC0, sampling=None, rst=False, **kw):
        nonlocal n
        b = io.BytesIO()
        im.save(b, "JPEG", **kw)
        data = b.getvalue()
        got_sof, got_sampling, dri, rsts = jpeg_markers(data)
        assert got_sof == sof, f"{name}: SOF {got_sof:#x}"
        if sampling is not None:
            assert got_sampling == sampling, f"{name}: sampling {got_sampling}"
        if rst:
            assert dri and rsts > 0, f"{name}: no restart markers"
        out[f"jpeg/{name}/file"] = np.frombuffer(data, np.uint8).copy()
        out[f"jpeg/{name}/pixels"] = np.ascontiguousarray(pillow_jpeg(data).astype(np.uint8))
        n += 1

    grey = lambda h, w: Image.fromarray(colour_image(h, w)[..., 1])
    rgb = lambda h, w: Image.fromarray(colour_image(h, w))
    for h, w in [(13, 17), (1, 1), (1, 37), (37, 1), (64, 48)]:
        add(f"grey_{h}x{w}", grey(h, w), quality=90, sampling=[(1, 1)])
    add("grey_progressive", grey(50, 41), sof=0xC2, progressive=True)
    add("grey_restart", grey(50, 41), restart_marker_blocks=3, rst=True)
    sub = {"444": ("4:4:4", [(1, 1)] * 3), "422": ("4:2:2", [(2, 1), (1, 1), (1, 1)]),
           "420": ("4:2:0", [(2, 2), (1, 1), (1, 1)])}
    for key, (s, sampling) in sub.items():
        for h, w in [(13, 17), (33, 21), (1, 1), (1, 37), (37, 1)]:
            add(f"rgb{key}_{h}x{w}", rgb(h, w), subsampling=s, sampling=sampling, quality=85)
        add(f"rgb{key}_progressive", rgb(45, 39), sof=0xC2, subsampling=s, sampling=sampling,
            progressive=True)
        add(f"rgb{key}_restart", rgb(45, 39), subsampling=s, sampling=sampling,
            restart_marker_rows=1, rst=True)
    add("rgb420_restart_blocks", rgb(64, 80), subsampling="4:2:0", restart_marker_blocks=5,
        rst=True)
    add("rgb420_q100_optimized", rgb(40, 40), subsampling="4:2:0", quality=100, optimize=True)
    add("rgb420_progressive_restart", rgb(48, 64), sof=0xC2, subsampling="4:2:0",
        progressive=True, restart_marker_rows=1, rst=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": never applied
    add("rgb420_exif_orientation", rgb(21, 33), exif=exif.tobytes())
    for h, w in [(13, 17), (1, 1), (40, 24)]:
        cmyk = Image.fromarray(np.concatenate([colour_image(h, w), colour_image(h, w)[..., :1]], 2),
                               "CMYK")
        add(f"cmyk_{h}x{w}", cmyk, quality=90)
    add("cmyk_progressive", Image.fromarray(rng.integers(0, 256, (24, 19, 4), dtype=np.uint8),
                                            "CMYK"), sof=0xC2, progressive=True)
    return n


def check_pngs(folder):
    bad = 0
    files = sorted(glob.glob(os.path.join(folder, "*.png")))
    for path in files:
        stem = os.path.basename(path)[:-4]
        h, w, c, bits = map(int, stem.rsplit("__", 1)[1].split("x"))
        raw = np.fromfile(path[:-4] + ".raw", np.uint16 if bits == 16 else np.uint8)
        want = raw.reshape(h, w, c).astype(np.int64)
        with open(path, "rb") as f:
            data = f.read()
        try:
            Image.open(io.BytesIO(data)).verify()  # every chunk's CRC, IEND present
            got = pillow_png(data)
        except Exception as e:  # noqa: BLE001 - report any Pillow failure
            print(f"{stem}: Pillow cannot read it: {e}")
            bad += 1
            continue
        exp = want >> 8 if bits == 16 and c > 1 else want
        if got.shape != exp.shape or not (got == exp).all():
            print(f"{stem}: Pillow decodes other pixels")
            bad += 1
        lib = libpng_png(data)
        if lib is not None:
            lib_want = want if c == 1 else want[..., [2, 1, 0, 3][:c]]
            if lib.shape != lib_want.shape or not (lib == lib_want).all():
                print(f"{stem}: libpng (torchvision) decodes other pixels")
                bad += 1
    print(f"checked {len(files)} PNGs with Pillow{' and libpng' if tvio else ''}: {bad} bad")
    return 1 if bad or not files else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="safetensors file to write")
    ap.add_argument("--check-png", metavar="DIR", help="verify the PNGs evax wrote to DIR")
    args = ap.parse_args()
    if args.check_png:
        sys.exit(check_pngs(args.check_png))
    if not args.out:
        ap.error("--out or --check-png is required")
    rng = np.random.default_rng(20240611)
    out = {}
    n_png = png_cases(out, rng)
    n_jpeg = jpeg_cases(out, rng)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(out, args.out)
    print(f"wrote {n_png} PNG and {n_jpeg} JPEG cases to {args.out}")


if __name__ == "__main__":
    main()
