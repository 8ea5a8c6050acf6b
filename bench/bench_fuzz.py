"""Hostile inputs, seeded: mutated images through the safe loader, hostile tables through every reader.

Images: valid JPEG, PNG, WebP, HEIC, TIFF and GIF files (made here, with EXIF/GPS, alpha, animation, 16-bit,
several compressions) are mutated — bit flips, byte insertions and deletions, truncations, splices, header
fields set to huge or absurd values (with checksums fixed, so the decoder sees them), bogus and deep EXIF
(IFD loops, long chains, huge counts), decompression bombs — and each goes through
`geocore.data.images.load_image`, `read_exif_gps` and `read_exif_info`. Every case must end in an image
(or None/dict for the EXIF readers) or an `ImageError`; never another exception, never more than
`MAX_SECONDS` of CPU and never more than `MAX_RSS_MB` of resident memory above what the process held before the
case (peak RSS, read from /proc/self/status after resetting the high-water mark through /proc/self/clear_refs;
that counts what the C decoders allocate, which tracemalloc cannot see).

Tables: valid files for every CSV/JSON reader (benchmark, predictions for `geocore score`, S2 partition,
points for `geocore cells assign`, gallery for `geocore embed`, results CSV and Parquet, calibration JSON)
are mutated (tokens such as quotes, NUL, bad UTF-8, NaN, 1e400 and 400-digit numbers inserted; lines dropped,
doubled, swapped; fields replaced by huge or absurd values; the byte mutations above): each must read, or
raise an `InputError` of one line naming the file — never anything else.

Run: `python -m bench.bench_fuzz [--cases 5000] [--table-cases 1000] [--seed 0]` — image cases run in a
forked worker, so a decoder that segfaults or hangs is recorded as such (and the run goes on) instead of
ending the benchmark. `tests/test_fuzz_inputs.py` runs a few hundred of the same cases in-process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import signal
import struct
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP", "HEIC", "TIFF", "GIF")
# Per file, all three readers together, in CPU seconds of the process: on a shared machine wall time also
# counts the wait for a CPU (the bench prints both).
MAX_SECONDS = 2.0
# Per file. The loader refuses a file before decoding when width x height x (its decoder's peak bytes per
# pixel) exceeds max_pixels x 8 bytes = 716 MB at the default 89.5 M pixels (geocore.data.images._PEAK_BYTES);
# 768 MB is that budget plus room for the interpreter's own churn. Bombs at each format's limit are among the
# crafted cases; fuzzed files from the small seeds stay far below (see the bench's output).
MAX_RSS_MB = 768


# ---- seeds ------------------------------------------------------------------------------------------------


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gps_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "FuzzCam"
    exif[0x0110] = "Model 1"
    exif[0x0132] = "2024:05:01 12:00:00"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 11:59:58"
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 30.0), 3: "W", 4: (2.0, 17.0, 40.0)})
    return exif


def _picture(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A small picture with texture (so that compressors produce real entropy-coded data)."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], axis=-1)
    arr = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray(((x * 255) // max(w - 1, 1)).astype(np.uint8), "L")
        img.putalpha(alpha)
    elif mode != "RGB":
        img = img.convert(mode)
    return img


def seed_files() -> dict[str, list[tuple[str, bytes]]]:
    """(label, bytes) of valid files, per format."""
    exif = _gps_exif(6)
    pic, pic_a = _picture((48, 32)), _picture((40, 30), "RGBA", 1)
    seeds: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    seeds["JPEG"] += [
        ("baseline+exif", _save(pic, "JPEG", quality=90, exif=exif)),
        ("progressive", _save(pic, "JPEG", quality=75, progressive=True)),
        ("grey", _save(pic.convert("L"), "JPEG")),
        ("cmyk", _save(pic.convert("CMYK"), "JPEG")),
        ("subsampled+icc", _save(pic, "JPEG", subsampling=2, icc_profile=b"\0" * 128)),
    ]
    a16 = Image.fromarray(np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) * 80)  # mode I;16
    pal = pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    seeds["PNG"] += [
        ("rgb+exif", _save(pic, "PNG", exif=exif)),
        ("rgba", _save(pic_a, "PNG")),
        ("palette+trns", _save(pal, "PNG", transparency=0)),
        ("16bit", _save(a16, "PNG")),
        ("interlaced+text", _save(pic, "PNG", optimize=False, **{"pnginfo": _pnginfo()}, interlace=1)),
        ("apng", _save(pic, "PNG", save_all=True, append_images=[pic.rotate(90)], duration=50)),
    ]
    seeds["WEBP"] += [
        ("lossy+exif", _save(pic, "WEBP", quality=80, exif=exif.tobytes())),
        ("lossless+alpha", _save(pic_a, "WEBP", lossless=True)),
        ("animated", _save(pic, "WEBP", save_all=True, append_images=[pic.rotate(180)], duration=40)),
    ]
    seeds["GIF"] += [
        ("static", _save(pal, "GIF")),
        ("animated+trns", _save(pal, "GIF", save_all=True, append_images=[pal.rotate(90)], duration=30,
                                 loop=0, transparency=0)),
    ]
    seeds["TIFF"] += [
        ("raw+exif", _save(pic, "TIFF", exif=exif)),
        ("lzw", _save(pic, "TIFF", compression="tiff_lzw")),
        ("deflate+alpha", _save(pic_a, "TIFF", compression="tiff_adobe_deflate")),
        ("packbits+grey", _save(pic.convert("L"), "TIFF", compression="packbits")),
        ("16bit", _save(a16, "TIFF")),
        ("jpeg-in-tiff", _save(pic, "TIFF", compression="jpeg")),
        ("multipage", _save(pic, "TIFF", save_all=True, append_images=[pic_a])),
        ("handmade+gps", handmade_tiff(gps=True)),
    ]
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        seeds["HEIC"] += [
            ("heic+exif", _save(pic, "HEIF", quality=60, exif=exif.tobytes())),
            ("heic-alpha", _save(pic_a, "HEIF", quality=60)),
        ]
    except Exception as err:  # pragma: no cover - an environment without HEIF encode support
        print(f"note: no HEIC seeds ({err}); HEIC is left out", file=sys.stderr)
    return dict(seeds)


def _pnginfo():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Title", "fuzz")
    info.add_text("Comment", "x" * 300, zip=True)
    info.add_itxt("Place", "Zürich", lang="de")
    return info


# ---- hand-built TIFF / EXIF structures --------------------------------------------------------------------

_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


def _ifd(entries: list[tuple[int, int, int, bytes | int]], at: int, next_ifd: int = 0) -> tuple[bytes, bytes]:
    """One little-endian IFD placed at offset `at`: (ifd bytes, value area that follows it).

    An entry's payload is bytes (stored inline when 4 bytes or fewer, else after the IFD) or an int written
    as is into the value field (an offset, possibly absurd, or a small inline value).
    """
    head = struct.pack("<H", len(entries))
    area_at = at + 2 + 12 * len(entries) + 4
    area = b""
    body = b""
    for tag, typ, count, payload in entries:
        if isinstance(payload, int):
            field = struct.pack("<I", payload & 0xFFFFFFFF)
        elif len(payload) <= 4:
            field = payload.ljust(4, b"\0")
        else:
            field = struct.pack("<I", area_at + len(area))
            area += payload + (b"\0" if len(payload) % 2 else b"")
        body += struct.pack("<HHI", tag, typ, count & 0xFFFFFFFF) + field
    return head + body + struct.pack("<I", next_ifd & 0xFFFFFFFF), area


def handmade_tiff(w: int = 4, h: int = 3, *, gps: bool = False, extra: list | None = None, pixels: bytes | None = None,
                  next_ifd: int = 0) -> bytes:
    """A minimal uncompressed RGB TIFF (optionally with a GPS IFD) whose fields the fuzzer can set freely."""
    pixels = pixels if pixels is not None else bytes((i * 37) % 256 for i in range(w * h * 3))
    gps_ifd_at = 8 + len(pixels) + (len(pixels) % 2)
    rational = lambda *v: b"".join(struct.pack("<II", int(x * 100), 100) for x in v)  # noqa: E731
    gps_entries = [(1, 2, 2, b"N\0"), (2, 5, 3, rational(48, 51, 30)), (3, 2, 2, b"E\0"),
                   (4, 5, 3, rational(2, 17, 40))]
    gps_blob = b""
    if gps:
        ifd, area = _ifd(gps_entries, gps_ifd_at)
        gps_blob = ifd + area
    ifd0_at = gps_ifd_at + len(gps_blob)
    entries = [
        (256, 4, 1, struct.pack("<I", w)), (257, 4, 1, struct.pack("<I", h)),
        (258, 3, 3, struct.pack("<HHH", 8, 8, 8)), (259, 3, 1, struct.pack("<H", 1)),
        (262, 3, 1, struct.pack("<H", 2)), (273, 4, 1, struct.pack("<I", 8)), (277, 3, 1, struct.pack("<H", 3)),
        (278, 4, 1, struct.pack("<I", h)), (279, 4, 1, struct.pack("<I", len(pixels))),
        (274, 3, 1, struct.pack("<H", 1)),
    ]
    if gps:
        entries.append((0x8825, 4, 1, gps_ifd_at))
    entries += extra or []
    entries.sort(key=lambda e: e[0])
    ifd, area = _ifd(entries, ifd0_at, next_ifd)
    pad = b"\0" if len(pixels) % 2 else b""
    return b"II*\0" + struct.pack("<I", ifd0_at) + pixels + pad + gps_blob + ifd + area


def bogus_exif(kind: str, rng: random.Random) -> bytes:
    """A TIFF-structured EXIF block (no "Exif\\0\\0" prefix) that is malformed in one named way."""
    if kind == "loop":  # IFD0's Exif and GPS pointers point back at IFD0
        ifd, area = _ifd([(0x010F, 2, 4, b"cam\0"), (0x8769, 4, 1, 8), (0x8825, 4, 1, 8)], 8, next_ifd=8)
        return b"II*\0" + struct.pack("<I", 8) + ifd + area
    if kind == "chain":  # thousands of IFDs linked by next-IFD pointers
        out, at, n = b"", 8, 3000
        for i in range(n):
            nxt = at + 18 if i < n - 1 else 0
            ifd, _ = _ifd([(0x0112, 3, 1, struct.pack("<H", 1))], at, next_ifd=nxt)
            out += ifd
            at += len(ifd)
        return b"II*\0" + struct.pack("<I", 8) + out
    if kind == "nested":  # Exif IFD inside Exif IFD inside ... 500 deep
        out, at = b"", 8
        for i in range(500):
            ifd, _ = _ifd([(0x8769, 4, 1, at + 18 if i < 499 else 0)], at)
            out += ifd
            at += len(ifd)
        return b"II*\0" + struct.pack("<I", 8) + out
    if kind == "huge_count":
        typ = rng.choice([2, 3, 4, 5, 7, 10, 12])
        ifd, area = _ifd([(0x010F, typ, 0x7FFFFFFF, 0x10), (0x8825, 4, 1, 8)], 8)
        return b"II*\0" + struct.pack("<I", 8) + ifd + area
    if kind == "many_entries":  # claims 65535 entries in a short block
        return b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + os.urandom(0) + bytes(rng.randbytes(64))
    if kind == "bad_types":
        entries = [(0x0112, rng.choice([0, 14, 99, 0xFFFF]), 1, struct.pack("<H", 6)), (0x8825, 4, 1, 26)]
        ifd, area = _ifd(entries, 8)
        return b"II*\0" + struct.pack("<I", 8) + ifd + area
    if kind == "gps_garbage":  # GPS fields of wrong types, zero denominators, huge counts
        gps = [(1, 7, 4, rng.randbytes(4)), (2, 5, 3, struct.pack("<6I", 1, 0, 0, 0, 2**32 - 1, 1)),
               (3, 1, 1, b"\xff"), (4, 10, 3, struct.pack("<6i", -1, 1, 2**31 - 1, -1, 0, 0)),
               (5, 5, 1000, 0xFFFFFFF0)]
        gps_ifd, gps_area = _ifd(gps, 26)
        ifd, _ = _ifd([(0x8825, 4, 1, 26)], 8)
        return b"II*\0" + struct.pack("<I", 8) + ifd + gps_ifd + gps_area
    if kind == "orientation":
        value = rng.choice([0, 9, 255, 65535])
        ifd, _ = _ifd([(0x0112, rng.choice([3, 4, 2]), rng.choice([1, 2, 0]), struct.pack("<I", value))], 8)
        return b"II*\0" + struct.pack("<I", 8) + ifd
    if kind == "big_endian_junk":
        return b"MM\0*" + rng.randbytes(rng.randint(0, 200))
    return rng.randbytes(rng.randint(0, 300))  # "random": not TIFF at all


EXIF_KINDS = ("loop", "chain", "nested", "huge_count", "many_entries", "bad_types", "gps_garbage", "orientation",
              "big_endian_junk", "random")


# ---- format-aware surgery ---------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each chunk while the structure holds."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((pos, data[pos + 4:pos + 8], length))
        pos += 12 + length
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_insert(data: bytes, chunk: bytes) -> bytes:
    """Insert a chunk right after IHDR."""
    return data[:33] + chunk + data[33:]


def png_set_ihdr(data: bytes, rng: random.Random) -> bytes:
    w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", data[16:29])
    field = rng.choice(["w", "h", "wh", "depth", "ctype", "other"])
    huge = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 65535, 100_000, 9_000, 1 << 20]
    if "w" in field:
        w = rng.choice(huge)
    if "h" in field:
        h = rng.choice(huge)
    if field == "depth":
        depth = rng.choice([0, 3, 7, 16, 32, 255])
    if field == "ctype":
        ctype = rng.choice([1, 5, 7, 255, 3])
    if field == "other":
        comp, filt, inter = rng.randint(0, 3), rng.randint(0, 3), rng.randint(0, 3)
    body = struct.pack(">IIBBBBB", w, h, depth, ctype, comp, filt, inter)
    return data[:8] + _png_chunk(b"IHDR", body) + data[33:]


def png_fix_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC, so that mutations inside chunks reach the decoders."""
    out = bytearray(data)
    for pos, kind, length in _png_chunks(data):
        end = pos + 8 + length
        if end + 4 <= len(out):
            out[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4:end])) & 0xFFFFFFFF)
    return bytes(out)


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, marker, length) of each marker segment up to the scan."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        out.append((pos, marker, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def jpeg_set_sof(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for pos, marker, _ in jpeg_segments(data):
        if marker in (0xC0, 0xC1, 0xC2):
            what = rng.choice(["h", "w", "wh", "ncomp", "precision"])
            if "h" in what:
                out[pos + 5:pos + 7] = struct.pack(">H", rng.choice([0, 1, 65535, 65000, 30000]))
            if "w" in what:
                out[pos + 7:pos + 9] = struct.pack(">H", rng.choice([0, 1, 65535, 65000, 30000]))
            if what == "ncomp":
                out[pos + 9] = rng.choice([0, 2, 5, 255])
            if what == "precision":
                out[pos + 4] = rng.choice([0, 12, 16, 255])
            break
    return bytes(out)


def jpeg_insert_app1(data: bytes, blob: bytes) -> bytes:
    body = (b"Exif\0\0" + blob)[:65533]
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:]


def jpeg_bad_length(data: bytes, rng: random.Random) -> bytes:
    segs = jpeg_segments(data)
    if not segs:
        return data
    pos, _, _ = rng.choice(segs)
    out = bytearray(data)
    out[pos + 2:pos + 4] = struct.pack(">H", rng.choice([0, 1, 2, 3, 0xFFFF, 0x8000]))
    return bytes(out)


def gif_set_dims(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    v = lambda: struct.pack("<H", rng.choice([0, 1, 65535, 9000, 40000]))  # noqa: E731
    if rng.random() < 0.5:
        out[6:8], out[8:10] = v(), v()  # logical screen
    else:
        i = data.find(b"\x2c", 13)  # first image descriptor (approximately)
        if i > 0 and i + 9 < len(out):
            out[i + 5:i + 7], out[i + 7:i + 9] = v(), v()
    if rng.random() < 0.3:
        i = data.find(b"\x2c", 13)
        if 0 < i + 10 < len(out):
            out[i + 10] = rng.choice([0, 1, 12, 255])  # LZW minimum code size
    return bytes(out)


def webp_set_dims(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    if rng.random() < 0.3:
        out[4:8] = struct.pack("<I", rng.choice([0, 4, 0xFFFFFFFF, len(data) * 4]))  # RIFF size
    for kind in (b"VP8X", b"VP8 ", b"VP8L", b"ANMF"):
        i = data.find(kind)
        if i < 0:
            continue
        if kind == b"VP8X":  # 24-bit canvas width-1 / height-1
            out[i + 12:i + 15] = rng.choice([b"\xff\xff\xff", b"\x00\x00\x00", b"\xff\x3f\x00"])
            out[i + 15:i + 18] = rng.choice([b"\xff\xff\xff", b"\x00\x00\x00", b"\xff\x3f\x00"])
        elif kind == b"VP8 ":  # 14-bit frame width and height after the start code
            out[i + 14:i + 16] = struct.pack("<H", rng.choice([0, 0x3FFF, 0xFFFF]))
            out[i + 16:i + 18] = struct.pack("<H", rng.choice([0, 0x3FFF, 0xFFFF]))
        elif kind == b"VP8L":
            out[i + 9:i + 13] = rng.randbytes(4)
        else:  # animation frame: x, y, w, h
            out[i + 8:i + 20] = rng.randbytes(12)
        break
    return bytes(out)


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes, int]]:
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        yield pos, data[pos + 4:pos + 8], size
        if size < 8:
            return
        pos += size


def heic_corrupt(data: bytes, rng: random.Random) -> bytes:
    """Set an ispe (image size) field, a box size or an iloc extent to an absurd value."""
    out = bytearray(data)
    what = rng.choice(["ispe", "ispe", "box_size", "iloc", "brand"])
    if what == "ispe":
        for m in re.finditer(b"ispe", data):
            i = m.start() + 8  # after version/flags
            if i + 8 <= len(out):
                out[i:i + 4] = struct.pack(">I", rng.choice([0, 1, 0xFFFFFFFF, 100_000, 65536]))
                out[i + 4:i + 8] = struct.pack(">I", rng.choice([0, 1, 0xFFFFFFFF, 100_000, 65536]))
    elif what == "box_size":
        boxes = [b for b in _boxes(data)]
        meta = data.find(b"meta")
        if meta > 0:
            boxes += list(_boxes(data, meta + 8, min(len(data), meta + 4000)))
        if boxes:
            pos, _, _ = rng.choice(boxes)
            out[pos:pos + 4] = struct.pack(">I", rng.choice([0, 1, 7, 0xFFFFFFFF, 0x7FFFFFFF, 16]))
    elif what == "iloc":
        i = data.find(b"iloc")
        if i > 0:
            j = rng.randrange(i + 8, min(len(out) - 4, i + 60))
            out[j:j + 4] = struct.pack(">I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, len(data) * 2, 0]))
    else:
        out[8:12] = rng.choice([b"heic", b"avif", b"mif1", b"\0\0\0\0", b"msf1"])
    return bytes(out)


TIFF_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 338, 320, 0x8769, 0x8825, 274)


def tiff_set_tag(data: bytes, rng: random.Random) -> bytes:
    """Set one IFD0 field (count, type or value) of a little- or big-endian TIFF to an absurd value."""
    if data[:2] not in (b"II", b"MM"):
        return data
    e = "<" if data[:2] == b"II" else ">"
    out = bytearray(data)
    (at,) = struct.unpack(e + "I", data[4:8])
    if at + 2 > len(data):
        return data
    (n,) = struct.unpack(e + "H", data[at:at + 2])
    entries = [at + 2 + 12 * k for k in range(min(n, 200)) if at + 2 + 12 * (k + 1) <= len(data)]
    wanted = rng.choice(TIFF_TAGS)
    hits = [p for p in entries if struct.unpack(e + "H", data[p:p + 2])[0] == wanted] or entries
    if not hits:
        return data
    p = rng.choice(hits)
    what = rng.choice(["value", "value", "count", "type"])
    if what == "value":
        v = rng.choice([0, 1, 2, 3, 7, 8, 16, 32, 255, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF, 65000, len(data)])
        typ = struct.unpack(e + "H", data[p + 2:p + 4])[0]
        out[p + 8:p + 12] = struct.pack(e + "H", v & 0xFFFF) + b"\0\0" if typ == 3 else struct.pack(e + "I", v)
    elif what == "count":
        out[p + 4:p + 8] = struct.pack(e + "I", rng.choice([0, 2, 255, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
    else:
        out[p + 2:p + 4] = struct.pack(e + "H", rng.choice([0, 1, 2, 5, 11, 12, 13, 16, 17, 99]))
    return bytes(out)


# ---- bombs ------------------------------------------------------------------------------------------------


def png_bomb(w: int, h: int, color_type: int = 2, depth: int = 8) -> bytes:
    """A valid PNG of w x h zero pixels: a few hundred KB that decode to w*h*bands bytes."""
    bands = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row = b"\0" * (1 + (w * bands * depth + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    plte = _png_chunk(b"PLTE", b"\0\0\0" * 2) if color_type == 3 else b""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + plte + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def gif_bomb(w: int, h: int) -> bytes:
    """A GIF of w x h: LZW of one colour, written by Pillow from a palette image built row by row."""
    img = Image.new("P", (w, h), 0)
    img.putpalette([0, 0, 0, 255, 255, 255])
    return _save(img, "GIF")


def tiff_bomb(w: int, h: int, bits: int = 8, samples: int = 3, *, data: bool = True) -> bytes:
    """A w x h TIFF (RGB, or RGBA with samples=4) in one deflate strip of zeros: the whole image in one strip."""
    if data:
        comp, row = zlib.compressobj(9), b"\0" * (w * samples * bits // 8)
        raw = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    else:
        raw = b"\x78\x9c" + b"\0" * 16
    entries = [(256, 4, 1, struct.pack("<I", w)), (257, 4, 1, struct.pack("<I", h)),
               (258, 3, samples, struct.pack("<" + "H" * samples, *[bits] * samples)),
               (259, 3, 1, struct.pack("<H", 8)),
               (262, 3, 1, struct.pack("<H", 2)), (273, 4, 1, struct.pack("<I", 8)),
               (277, 3, 1, struct.pack("<H", samples)), (278, 4, 1, struct.pack("<I", h)),
               (279, 4, 1, struct.pack("<I", len(raw)))]
    if samples == 4:
        entries.append((338, 3, 1, struct.pack("<H", 2)))  # unassociated alpha
    at = 8 + len(raw) + (len(raw) % 2)
    ifd, area = _ifd(entries, at)
    return b"II*\0" + struct.pack("<I", at) + raw + (b"\0" if len(raw) % 2 else b"") + ifd + area


def bomb_cases() -> list[tuple[str, str, bytes]]:
    """(format, kind, bytes) of decompression bombs at each format's limit, and past it (a few seconds to make)."""
    return [
        ("PNG", "bomb-88MP-grey", png_bomb(9400, 9400, 0)),
        ("PNG", "bomb-88MP-rgb", png_bomb(9400, 9400, 2)),
        ("PNG", "bomb-88MP-rgba", png_bomb(9400, 9400, 6)),
        ("PNG", "bomb-88MP-palette", png_bomb(9400, 9400, 3)),
        ("PNG", "bomb-44MP-rgba16", png_bomb(6600, 6600, 6, 16)),
        ("PNG", "bomb-67MP-rgba-unreduced", png_bomb(8191, 8191, 6)),  # the largest shrunk with no box reduction
        ("GIF", "bomb-60MP", gif_bomb(7800, 7800)),
        ("TIFF", "bomb-44MP-rgba16-one-strip", tiff_bomb(6680, 6680, 16, 4)),  # at the TIFF limit
        ("WEBP", "bomb-39MP", _save(Image.new("L", (6300, 6300)), "WEBP", lossless=True, method=0)),
        ("WEBP", "bomb-39MP-canvas", webp_canvas(6300, 6300)),
    ]


def crafted_cases() -> list[tuple[str, str, bytes]]:
    """(format, kind, bytes) of small hand-made hostile files: headers past the limits, EXIF of every bad kind."""
    rng = random.Random(1234)
    cases = [
        ("PNG", "bomb-400MP-header", png_header(20000, 20000)),
        ("PNG", "bomb-95MP-header", png_header(9750, 9750)),  # just over the loader's limit, under PIL's error
        ("PNG", "header-2^31", b"\x89PNG\r\n\x1a\n"
         + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2**31 - 1, 2**31 - 1, 8, 6, 0, 0, 0))),
        ("GIF", "header-65535x65535", gif_header(65535, 65535)),
        ("TIFF", "bomb-88MP-rgb-one-strip", tiff_bomb(9400, 9400, data=False)),  # over the TIFF limit
        ("TIFF", "header-4G-pixels", tiff_bomb(65535, 65535, data=False)),
        ("TIFF", "exif-loop", handmade_tiff(gps=True, extra=[(0x8769, 4, 1, 8)], next_ifd=8)),
        ("JPEG", "sof-65000x1300", jpeg_set_sof_exact(_save(_picture((64, 64)), "JPEG"), 65000, 1300)),
        ("JPEG", "sof-65535x65535", jpeg_set_sof_exact(_save(_picture((64, 64)), "JPEG"), 65535, 65535)),
        ("PNG", "many-chunks-20k", png_many_chunks(20_000)),
        ("PNG", "ztxt-bomb", png_insert(_save(_picture((8, 8)), "PNG"),
                                        _png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 50_000_000, 9)))),
        ("PNG", "iccp-bomb", png_insert(_save(_picture((8, 8)), "PNG"),
                                        _png_chunk(b"iCCP", b"p\0\0" + zlib.compress(b"\0" * 50_000_000, 9)))),
        ("PNG", "iccp-garbage", png_insert(_save(_picture((8, 8)), "PNG"), _png_chunk(b"iCCP", b"p\0\0garbage"))),
        ("PNG", "apng-2^31-frames", apng_many_frames()),
        ("WEBP", "bomb-16383x5000", webp_canvas(16383, 5000)),  # over the WebP limit: refused before decoding
    ]
    for kind in EXIF_KINDS:
        blob = bogus_exif(kind, rng)
        cases.append(("JPEG", f"exif-{kind}", jpeg_insert_app1(_save(_picture((16, 16)), "JPEG"), blob)))
        cases.append(("PNG", f"exif-{kind}", png_insert(_save(_picture((16, 16)), "PNG"), _png_chunk(b"eXIf", blob))))
        cases.append(("TIFF", f"exif-{kind}", tiff_with_exif(blob)))
    return cases


def tiff_with_exif(blob: bytes) -> bytes:
    """A small TIFF whose Exif IFD pointer leads to `blob` (a TIFF structure whose offsets count from 0 of
    the blob, so the pointers inside it point wherever they happen to land in the file)."""
    size = len(handmade_tiff(extra=[(0x8769, 4, 1, 0)]))
    return handmade_tiff(extra=[(0x8769, 4, 1, size + 8)]) + blob


def png_header(w: int, h: int) -> bytes:
    """A PNG declaring w x h RGB pixels, with a few bytes of them behind it."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")


def gif_header(w: int, h: int) -> bytes:
    """A GIF declaring a w x h screen and image, with a few bytes of LZW behind it."""
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff" + b"\x2c"
            + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00\x3b")


def webp_canvas(w: int, h: int) -> bytes:
    """A valid animated WebP of two 16x16 frames on a w x h canvas: a few hundred bytes that decode to w x h."""
    frames = [Image.new("RGB", (16, 16), c) for c in ((200, 30, 30), (30, 30, 200))]
    data = bytearray(_save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True))
    i = data.find(b"VP8X")
    data[i + 12:i + 18] = (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return bytes(data)


def jpeg_set_sof_exact(data: bytes, w: int, h: int) -> bytes:
    out = bytearray(data)
    for pos, marker, _ in jpeg_segments(data):
        if marker in (0xC0, 0xC2):
            out[pos + 5:pos + 9] = struct.pack(">HH", h, w)
    return bytes(out)


def png_many_chunks(n: int) -> bytes:
    base = _save(_picture((8, 8)), "PNG")
    return base[:33] + _png_chunk(b"teXt", b"") * 0 + b"".join(_png_chunk(b"prVt", b"x") for _ in range(n)) + base[33:]


def apng_many_frames() -> bytes:
    base = _save(_picture((8, 8)), "PNG")
    return png_insert(base, _png_chunk(b"acTL", struct.pack(">II", 2**31 - 1, 0)))


# ---- generic mutations ------------------------------------------------------------------------------------


def _bitflip(d: bytes, rng: random.Random) -> bytes:
    out = bytearray(d)
    for _ in range(rng.choice([1, 1, 2, 4, 8, 32])):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _header_flip(d: bytes, rng: random.Random) -> bytes:
    """Flips within the first 256 bytes, where headers live."""
    out = bytearray(d)
    for _ in range(rng.choice([1, 2, 3])):
        i = rng.randrange(min(len(out), 256))
        out[i] = rng.choice([0x00, 0xFF, 0x7F, 0x80, out[i] ^ (1 << rng.randrange(8))])
    return bytes(out)


def _insert(d: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(d) + 1)
    return d[:i] + rng.randbytes(rng.choice([1, 2, 4, 16, 64, 512])) + d[i:]


def _delete(d: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(d))
    return d[:i] + d[i + rng.choice([1, 2, 4, 16, 64, 512]):]


def _truncate(d: bytes, rng: random.Random) -> bytes:
    return d[: rng.choice([1, 2, 4, 8, 12, 16, 32, 64, rng.randrange(1, len(d)), rng.randrange(1, len(d))])]


def _overwrite(d: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(d))
    n = rng.choice([1, 4, 16, 64])
    return d[:i] + rng.randbytes(n) + d[i + n:]


def _duplicate(d: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(d))
    j = min(len(d), i + rng.choice([4, 16, 64, 256]))
    return d[:j] + d[i:j] * rng.choice([1, 2, 8]) + d[j:]


GENERIC: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bitflip": _bitflip, "header": _header_flip, "insert": _insert, "delete": _delete, "truncate": _truncate,
    "overwrite": _overwrite, "duplicate": _duplicate,
}


def _exif_into(fmt: str, data: bytes, blob: bytes) -> bytes:
    if fmt == "JPEG":
        return jpeg_insert_app1(data, blob)
    if fmt == "PNG":
        return png_insert(data, _png_chunk(b"eXIf", blob))
    if fmt == "TIFF":
        return tiff_with_exif(blob)
    if fmt == "WEBP":
        img = Image.open(io.BytesIO(data))
        img.load()
        return _save(img.convert("RGB"), "WEBP", exif=b"Exif\0\0" + blob)
    if fmt == "HEIC":
        img = Image.open(io.BytesIO(data))
        img.load()
        try:
            return _save(img.convert("RGB"), "HEIF", quality=50, exif=b"Exif\0\0" + blob)
        except Exception:  # the encoder refused this EXIF: put it in raw bytes instead
            return data + blob
    return data[:-1] + b"\x21\xff\x0bXMP DataXMP" + blob[:255] + b"\0" + data[-1:]  # GIF: an application extension


def mutate(fmt: str, data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of a seed: (kind, bytes)."""
    if len(data) < 16:
        return "tiny", data + rng.randbytes(rng.randint(1, 16))
    r = rng.random()
    if r < 0.55:
        kind = rng.choice(list(GENERIC))
        out = GENERIC[kind](data, rng)
        if fmt == "PNG" and kind in ("bitflip", "overwrite") and rng.random() < 0.7:
            out, kind = png_fix_crcs(out), kind + "+crc"  # let the change reach the decoder
        if rng.random() < 0.15:  # stack a second mutation
            kind2 = rng.choice(list(GENERIC))
            out, kind = GENERIC[kind2](out, rng) if len(out) > 16 else out, f"{kind}+{kind2}"
        return kind, out
    if r < 0.8:
        if fmt == "PNG":
            return "ihdr", png_set_ihdr(data, rng)
        if fmt == "JPEG":
            return ("sof", jpeg_set_sof(data, rng)) if rng.random() < 0.5 else ("seglen", jpeg_bad_length(data, rng))
        if fmt == "GIF":
            return "dims", gif_set_dims(data, rng)
        if fmt == "WEBP":
            return "dims", webp_set_dims(data, rng)
        if fmt == "HEIC":
            return "boxes", heic_corrupt(data, rng)
        return "tag", tiff_set_tag(data, rng)
    if r < 0.93:
        kind = rng.choice(EXIF_KINDS)
        return f"exif-{kind}", _exif_into(fmt, data, bogus_exif(kind, rng))
    return "splice", data[: rng.randrange(len(data))] + rng.choice(list(_ALL_SEEDS.values()))[rng.randrange(8):]


_ALL_SEEDS: dict[str, bytes] = {}


def cases(n: int, seed: int = 0, *, crafted: bool = True, bombs: bool = True) -> Iterator[tuple[str, str, bytes]]:
    """`n` mutated files spread evenly over the formats (after the crafted ones and the bombs, when asked for):
    (format, kind, bytes)."""
    seeds = seed_files()
    _ALL_SEEDS.update({f"{f}:{label}": d for f, items in seeds.items() for label, d in items})
    rng = random.Random(seed)
    if bombs:
        yield from bomb_cases()
    if crafted:
        yield from crafted_cases()
    fmts = [f for f in FORMATS if f in seeds]
    for i in range(n):
        fmt = fmts[i % len(fmts)]
        label, data = rng.choice(seeds[fmt])
        kind, out = mutate(fmt, data, rng)
        yield fmt, f"{label}/{kind}", out


# ---- running a case ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    fmt: str
    kind: str
    result: str  # "image", "ImageError", or "BUG <ExceptionType>: message"
    exif: str  # outcome of the two EXIF readers: "ok", "ImageError", "BUG ..."
    seconds: float  # CPU time of the process (all threads): the work the file costs, whatever else runs
    rss_mb: float  # peak resident memory above the level before the case (-1: unmeasurable here)
    wall: float = 0.0  # wall-clock time: on a shared machine, CPU time plus waiting for a CPU


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        m = re.search(rf"{field}:\s+(\d+)", fh.read())
    return int(m.group(1)) if m else -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_case(fmt: str, kind: str, data: bytes) -> Outcome:
    from geocore.data import images
    from geocore.errors import ImageError

    name = f"fuzz.{fmt.lower()}"
    measurable = _reset_peak()
    base = _status_kb("VmRSS") if measurable else 0
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        img = images.load_image(data, name=name)
        assert isinstance(img, Image.Image) and img.mode == "RGB", f"{img!r}"
        assert max(img.size) <= 2048 and min(img.size) >= 1, img.size
        result = "image"
    except ImageError as err:
        result = "ImageError"
        if name not in str(err):
            result = f"BUG message without the file name: {err}"
    except Exception as err:  # noqa: BLE001 - the point is to find these
        result = f"BUG {type(err).__name__}: {' '.join(str(err).split())[:120]}"
    exif = "ok"
    for reader in (images.read_exif_gps, getattr(images, "read_exif_info", None)):
        if reader is None:
            continue
        try:
            got = reader(data, name=name)
            if reader is images.read_exif_gps:
                assert got is None or (len(got) == 2 and all(np.isfinite(got))), got
        except ImageError:
            exif = "ImageError" if exif == "ok" else exif
        except Exception as err:  # noqa: BLE001
            exif = f"BUG {reader.__name__} {type(err).__name__}: {' '.join(str(err).split())[:120]}"
    seconds, wall = time.process_time() - c0, time.perf_counter() - t0
    rss = (_status_kb("VmHWM") - base) / 1024 if measurable else -1.0
    return Outcome(fmt, kind, result, exif, seconds, rss, wall)


def bugs(o: Outcome) -> list[str]:
    """What is wrong with one outcome (empty when nothing is)."""
    out = [x for x in (o.result, o.exif) if x.startswith("BUG")]
    if o.seconds > MAX_SECONDS:
        out.append(f"took {o.seconds:.2f} s of CPU (max {MAX_SECONDS} s)")
    if o.rss_mb > MAX_RSS_MB:
        out.append(f"peak memory {o.rss_mb:.0f} MB (max {MAX_RSS_MB} MB)")
    return out


# ---- the benchmark: cases in a forked worker, so that a segfault or a hang is recorded, not fatal ---------


def _worker(items: list[tuple[int, str, str, bytes]], wfd: int) -> None:  # pragma: no cover - child process
    def send(msg: dict) -> None:
        os.write(wfd, (json.dumps(msg) + "\n").encode("ascii"))

    try:
        for i, fmt, kind, data in items:
            send({"start": i})
            send({"done": i, **run_case(fmt, kind, data).__dict__})
    finally:
        os._exit(0)


def run_forked(all_cases: list[tuple[str, str, bytes]], hang_s: float = 60.0) -> list[Outcome]:
    """Run every case in a forked worker; a worker that dies or hangs marks its case and a new one goes on."""
    import select

    results: dict[int, Outcome] = {}
    todo = list(enumerate(all_cases))
    while todo:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(rfd)
            _worker([(i, f, k, d) for i, (f, k, d) in todo], wfd)
        os.close(wfd)
        current, last, buf, status = None, time.monotonic(), b"", 0
        while True:
            ready, _, _ = select.select([rfd], [], [], 0.5)
            chunk = os.read(rfd, 1 << 16) if ready else None
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    if "start" in msg:
                        current, last = msg["start"], time.monotonic()
                    else:
                        i = msg.pop("done")
                        results[i] = Outcome(**msg)
                        current = None
                continue
            if chunk == b"":  # the worker closed the pipe: finished or died
                _, status = os.waitpid(pid, 0)
                break
            if current is not None and time.monotonic() - last > hang_s:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -1
                break
        os.close(rfd)
        if current is not None and current not in results:
            fmt, kind, _ = all_cases[current]
            why = "hang (killed)" if status == -1 else f"worker died ({_status_text(status)})"
            results[current] = Outcome(fmt, kind, f"BUG {why}", "?", hang_s if status == -1 else 0.0, -1.0,
                                       hang_s if status == -1 else 0.0)
        todo = [(i, c) for i, c in todo if i not in results]
    return [results[i] for i in range(len(all_cases))]


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


def report(outcomes: list[Outcome]) -> str:
    lines = [f"{'format':<6} {'cases':>6} {'image':>6} {'ImageError':>10} {'bugs':>5} {'max cpu s':>9} "
             f"{'max wall s':>10} {'max MB':>7}"]
    by_fmt: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_fmt[o.fmt].append(o)
    for fmt in sorted(by_fmt):
        os_ = by_fmt[fmt]
        c = Counter(o.result if not o.result.startswith("BUG") else "bug" for o in os_)
        nb = sum(bool(bugs(o)) for o in os_)
        lines.append(f"{fmt:<6} {len(os_):>6} {c['image']:>6} {c['ImageError']:>10} {nb:>5} "
                     f"{max(o.seconds for o in os_):>9.3f} {max(o.wall for o in os_):>10.3f} "
                     f"{max(o.rss_mb for o in os_):>7.1f}")
    slow = sorted(outcomes, key=lambda o: -o.seconds)[:5]
    big = sorted(outcomes, key=lambda o: -o.rss_mb)[:5]
    lines.append("slowest (CPU): " + "; ".join(f"{o.fmt} {o.kind} {o.seconds:.2f} s (wall {o.wall:.2f})" for o in slow))
    lines.append("largest: " + "; ".join(f"{o.fmt} {o.kind} {o.rss_mb:.0f} MB" for o in big))
    exif = Counter(o.exif if not o.exif.startswith("BUG") else "bug" for o in outcomes)
    lines.append("EXIF readers: " + ", ".join(f"{k} {v}" for k, v in sorted(exif.items())))
    bad = [(o, bugs(o)) for o in outcomes if bugs(o)]
    lines.append(f"bugs: {len(bad)}")
    for o, why in bad[:40]:
        lines.append(f"  {o.fmt} {o.kind}: {'; '.join(why)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000, help="mutated files (plus the crafted ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--in-process", action="store_true", help="no forked worker (faster; a segfault ends the run)")
    ap.add_argument("--table-cases", type=int, default=1000, help="mutated files per CSV/JSON reader")
    args = ap.parse_args(argv)
    import geocore.data.images  # noqa: F401 - load the decoders before forking

    t0 = time.perf_counter()
    all_cases = list(cases(args.cases, args.seed))
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcomes = [run_case(*c) for c in all_cases] if args.in_process else run_forked(all_cases)
    print(f"{len(outcomes)} files ({args.cases} mutated + {len(outcomes) - args.cases} crafted), seed {args.seed}; "
          f"made in {made:.1f} s, read in {time.perf_counter() - t0:.1f} s; "
          f"limits {MAX_SECONDS} s and {MAX_RSS_MB} MB per file")
    print(report(outcomes))
    tables = run_tables(args.table_cases, args.seed)
    print(tables["report"])
    return 1 if any(bugs(o) for o in outcomes) or tables["bugs"] else 0


# ---- tables: every CSV/JSON reader, fed mutations of a valid file --------------------------------------------

RESULTS_HEADER = "IMG_ID,LAT,LON,PRED_LAT,PRED_LON,error_km,topk_lat,topk_lon,topk_prob,model,status,truth_mass\n"


def table_seeds() -> dict[str, tuple[str, bytes]]:
    """Reader name → (file suffix, a valid file's bytes)."""
    import pandas as pd

    results = pd.DataFrame({
        "IMG_ID": ["a.jpg", "b.jpg", "c.jpg"], "LAT": [10.5, -33.9, 0.0], "LON": [-20.25, 151.2, 0.0],
        "PRED_LAT": [11.0, -33.0, float("nan")], "PRED_LON": [-21.0, 150.0, float("nan")],
        "error_km": [150.2, 120.0, float("nan")], "topk_lat": [[11.0, 12.0], [-33.0, 10.0], []],
        "topk_lon": [[-21.0, 22.0], [150.0, 1.0], []], "topk_prob": [[0.6, 0.4], [0.9, 0.1], []],
        "model": ["m", "m", "m"], "status": ["ok", "ok", "error: unreadable"], "truth_mass": [0.5, 0.2, None]})
    buf = io.BytesIO()
    results.to_parquet(buf, index=False)
    from geocore.uncertainty.calibration import fit_calibration

    cal = fit_calibration(np.linspace(0.02, 0.98, 40), model="m", fingerprint="fp").to_dict()
    return {
        "benchmark": (".csv", b"IMG_ID,LAT,LON,AUTHOR\na.jpg,10.5,-20.25,x\nb.jpg,-33.9,151.2,y\nc.jpg,0,0,z\n"),
        "predictions": (".csv", b"IMG_ID,LAT,LON\na.jpg,10.5,-20.25\nb.jpg,-33.9,151.2\nc.jpg,0,0\n"),
        "partition": (".csv", b"class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n"
                              b"0,1,10,10.5,-20.25\n1,3,20,-33.9,151.2\n2,5,30,0,0\n3,7,5,45,90\n"),
        "points": (".csv", b"name,LAT,LON\np1,10.5,-20.25\np2,-33.9,151.2\np3,0,0\n"),
        "gallery": (".csv", b"LAT,LON\n10.5,-20.25\n-33.9,151.2\n0,0\n"),
        "results-csv": (".csv", RESULTS_HEADER.encode() + b'a.jpg,10.5,-20.25,11,-21,150.2,"[11.0, 12.0]",'
                        b'"[-21.0, 22.0]","[0.6, 0.4]",m,ok,0.5\nb.jpg,-33.9,151.2,-33,150,120,"[-33.0, 10.0]",'
                        b'"[150.0, 1.0]","[0.9, 0.1]",m,ok,0.2\nc.jpg,0,0,,,,[],[],[],m,error: unreadable,\n'),
        "results-parquet": (".parquet", buf.getvalue()),
        "calibration": (".json", json.dumps(cal, indent=2).encode()),
    }


def table_readers(truth: "Path") -> dict[str, Callable]:
    """Reader name → the function `geocore` reads that file with (`truth` is a valid benchmark for `score`)."""
    from geocore.cli.cells import read_coords
    from geocore.data.datasets import read_benchmark_csv
    from geocore.eval.results import read_results
    from geocore.eval.score import score_files
    from geocore.geo.cells import load_partition
    from geocore.geo.gallery import gallery_from_csv
    from geocore.uncertainty.calibration import Calibration

    return {
        "benchmark": read_benchmark_csv,
        "predictions": lambda p: score_files(p, truth),
        "partition": load_partition,
        "points": lambda p: read_coords(p, "LAT", "LON"),
        "gallery": gallery_from_csv,
        "results-csv": read_results,
        "results-parquet": read_results,
        "calibration": Calibration.load,
    }


_TEXT_BITS = [b",", b"\n", b'"', b"\r\n", b"\x00", b"\xff", b"nan", b"inf", b"-1e400", b"\xc3", b"=1+1", b" ",
              b"[", b"]", b"{", b"}", b"\\", b"9" * 400]


def mutate_table(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of a table's bytes: (kind, bytes); most keep the text shape so parsers go deep."""
    r = rng.random()
    if r < 0.3:
        i = rng.randrange(len(data) + 1)
        return "insert-token", data[:i] + rng.choice(_TEXT_BITS) + data[i:]
    if r < 0.45:
        lines = data.split(b"\n")
        i = rng.randrange(len(lines))
        what = rng.choice(["drop", "dup", "swap", "blank"])
        if what == "drop":
            del lines[i]
        elif what == "dup":
            lines.insert(i, lines[i])
        elif what == "swap" and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines[i] = b""
        return f"lines-{what}", b"\n".join(lines)
    if r < 0.6:
        fields = re.split(rb"([,\n])", data)
        i = rng.randrange(0, len(fields), 2)
        fields[i] = rng.choice([b"", b"nan", b"inf", b"-inf", b"1e999", b"NaN", b"x" * rng.choice([1, 5000, 300_000]),
                                b"-91", b"181", b"0x10", b"1_0", b"  ", b'"a,b"', b"\xff\xfe"])
        return "field", b"".join(fields)
    kind = rng.choice(list(GENERIC))
    return kind, GENERIC[kind](data, rng) if len(data) > 16 else data + b"?"


@dataclass
class TableOutcome:
    reader: str
    kind: str
    result: str  # "ok", "InputError", or "BUG ..."


def run_table_case(reader: str, fn: Callable, path: "Path", kind: str) -> TableOutcome:
    from geocore.errors import InputError

    try:
        fn(path)
        result = "ok"
    except InputError as err:
        msg = str(err)
        result = "InputError"
        if "\n" in msg or str(path) not in msg or len(msg) > 2000:
            result = f"BUG message not one short line naming the file: {msg[:300]!r}"
    except Exception as err:  # noqa: BLE001 - the point is to find these
        result = f"BUG {type(err).__name__}: {' '.join(str(err).split())[:160]}"
    return TableOutcome(reader, kind, result)


def table_cases(folder: "Path", per_reader: int, seed: int = 0) -> Iterator[tuple[str, "Path", str]]:
    """(reader, path, kind): `per_reader` mutated files for each reader, written into `folder`."""
    rng = random.Random(seed)
    for reader, (suffix, data) in table_seeds().items():
        for i in range(per_reader):
            kind, out = mutate_table(data, rng)
            path = folder / f"{reader}-{i}{suffix}"
            path.write_bytes(out)
            yield reader, path, kind


def run_tables(per_reader: int = 1000, seed: int = 0) -> dict:
    """Every CSV/JSON reader against `per_reader` mutated files."""
    import tempfile
    import warnings
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp)
        truth = folder / "truth.csv"
        truth.write_bytes(table_seeds()["benchmark"][1])
        readers = table_readers(truth)
        t0 = time.perf_counter()
        outcomes = []
        for reader, path, kind in table_cases(folder, per_reader, seed):
            outcomes.append(run_table_case(reader, readers[reader], path, kind))
            path.unlink()
        took = time.perf_counter() - t0
    lines = [f"tables: {len(outcomes)} mutated files ({per_reader} per reader), read in {took:.1f} s",
             f"{'reader':<16} {'ok':>6} {'InputError':>10} {'bugs':>5}"]
    by: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        by[o.reader][o.result if not o.result.startswith("BUG") else "bug"] += 1
    for reader, c in by.items():
        lines.append(f"{reader:<16} {c['ok']:>6} {c['InputError']:>10} {c['bug']:>5}")
    bad = [o for o in outcomes if o.result.startswith("BUG")]
    kinds = Counter((o.reader, o.result[:90]) for o in bad)
    lines += [f"  {n} x {reader}: {what}" for (reader, what), n in kinds.most_common(20)]
    return {"report": "\n".join(lines), "bugs": len(bad)}


if __name__ == "__main__":
    sys.exit(main())
