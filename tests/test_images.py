"""The safe image loader against odd and hostile inputs built on the fly."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from geocore.data import images
from geocore.data.images import image_bytes_digest, load_image, read_exif_gps
from geocore.errors import ImageError, InputError


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _close(a: tuple, b: tuple, tol: int = 8) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _noisy_jpeg(size: tuple[int, int] = (256, 256)) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return _save(Image.fromarray(arr), "JPEG", quality=95)


# --- colour modes -------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb_with_right_colour() -> None:
    data = _save(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG")
    img = load_image(data)
    assert img.mode == "RGB"
    assert _close(img.getpixel((8, 8)), (0, 255, 255), tol=10)


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32768, 128), (0, 0), (257 * 10, 10)])
def test_16bit_png_scaled_not_clipped(value: int, expected: int) -> None:
    data = _save(Image.fromarray(np.full((8, 8), value, dtype=np.uint16)), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = load_image(data)
    assert img.mode == "RGB"
    assert _close(img.getpixel((3, 3)), (expected,) * 3, tol=1)


def test_32bit_int_and_float_modes() -> None:
    as_i = Image.fromarray(np.full((4, 4), 65535, dtype=np.int32))
    assert as_i.mode == "I"
    assert load_image(_save(as_i, "TIFF")).getpixel((0, 0)) == (255, 255, 255)
    grad = np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(4, 4)
    img = load_image(_save(Image.fromarray(grad), "TIFF"))
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((3, 3)) == (255, 255, 255)
    wide = Image.fromarray(np.array([[-1000.0, 3000.0]], dtype=np.float32))
    assert [load_image(_save(wide, "TIFF")).getpixel((x, 0))[0] for x in (0, 1)] == [0, 255]


def test_palette_transparency_becomes_white() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    img = load_image(_save(pal, "PNG", transparency=0))
    assert img.getpixel((5, 5)) == (255, 255, 255)  # transparent black -> white
    assert img.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_alpha_composited_on_white(mode: str) -> None:
    src = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent black
    src.putpixel((1, 1), (0, 0, 0, 255))
    if mode == "PA":  # PNG cannot store PA: go through the converter directly
        img = images._to_rgb(src.convert("PA"), "pa")
    else:
        img = load_image(_save(src.convert(mode), "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (255, 255, 255)
    assert img.getpixel((1, 1)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [("L", 77, (77, 77, 77)), ("1", 1, (255, 255, 255)), ("YCbCr", (100, 128, 128), (100, 100, 100)),
     ("LAB", (128, 128, 128), (119, 119, 119))],
)
def test_other_modes_to_rgb(mode: str, color: object, expected: tuple) -> None:
    fmt = "TIFF" if mode in ("LAB", "YCbCr") else "PNG"
    src = Image.new(mode, (4, 4), color)
    img = load_image(_save(src, fmt))
    assert img.mode == "RGB"
    assert _close(img.getpixel((1, 1)), expected, tol=3)


# --- orientation, animation, size ----------------------------------------------------------


def test_exif_orientation_6_rotates() -> None:
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    img = load_image(_save(src, "JPEG", exif=exif, quality=95))
    assert img.size == (20, 40)
    assert _close(img.getpixel((10, 5)), (255, 0, 0), tol=30)  # displayed 90° clockwise: left -> top
    assert _close(img.getpixel((10, 35)), (0, 0, 255), tol=30)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_image_gives_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert _close(load_image(data).getpixel((8, 8)), (255, 0, 0), tol=4)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_image_downscaled(fmt: str) -> None:
    data = _save(Image.new("RGB", (5000, 3000), (10, 200, 30)), fmt)
    img = load_image(data)
    assert img.size == (2048, 1229)
    assert _close(img.getpixel((100, 100)), (10, 200, 30), tol=6)
    assert load_image(data, max_side=None).size == (5000, 3000)
    assert load_image(data, max_side=500).size == (500, 300)


def test_large_jpeg_decoded_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import JpegImagePlugin

    seen: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # type: ignore[no-untyped-def]
        result = real_draft(self, mode, size)
        seen.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    img = load_image(_save(Image.new("RGB", (8000, 4000), (50, 60, 70)), "JPEG"), max_side=1000)
    assert seen == [(2000, 1000)]  # decoded at 1/4 scale, then resized to 1000 exactly
    assert img.size == (1000, 500)


def test_small_image_not_upscaled() -> None:
    assert load_image(_save(Image.new("RGB", (30, 10)), "PNG")).size == (30, 10)


# --- inputs -----------------------------------------------------------------------------------


def test_path_bytes_and_filelike_agree(tmp_path: Path) -> None:
    data = _save(Image.new("RGB", (12, 9), (1, 2, 3)), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    stream = io.BytesIO(b"junk" + data)
    stream.seek(4)
    results = [load_image(path), load_image(str(path)), load_image(data), load_image(bytearray(data)),
               load_image(stream)]
    assert stream.tell() == 4  # the caller's stream position is left alone
    assert {(r.size, r.getpixel((0, 0))) for r in results} == {((12, 9), (1, 2, 3))}


def test_zero_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg is empty \(0 bytes\)"):
        load_image(empty)
    with pytest.raises(ImageError, match=r"<upload> is empty \(0 bytes\)"):
        load_image(b"")
    with pytest.raises(ImageError, match=r"photo\.png is empty"):
        load_image(io.BytesIO(), name="photo.png")


def test_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("hello, I am not a picture\n" * 20)
    with pytest.raises(ImageError, match=r"notes\.jpg is not an image PIL can read \(expected JPEG, PNG, WebP, HEIC"):
        load_image(text)
    with pytest.raises(InputError, match="not an image"):  # ImageError is an InputError
        load_image(b"%PDF-1.4 nope", name="doc.pdf")


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.jpg does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="text stream"):
        load_image(io.StringIO("abc"))


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _noisy_jpeg()
    assert load_image(data).size == (256, 256)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg is truncated or corrupt: .*truncated"):
        load_image(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_crc() -> None:
    data = bytearray(_save(Image.new("RGB", (64, 64), (9, 9, 9)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # flip a byte of compressed data: CRC no longer matches
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(bytes(data), name="bad.png")


# --- decompression bombs --------------------------------------------------------------------


def test_bomb_header_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _png_header_only(100_000, 100_000)
    with pytest.raises(ImageError, match="bomb.png is too large"):
        load_image(bomb, name="bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # even with PIL's global check off
    with pytest.raises(ImageError, match=r"100000x100000 = 10,000,000,000 pixels exceeds the limit of 89,478,485"):
        load_image(bomb, name="bomb.png")


def test_max_pixels_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(Image.new("RGB", (100, 100)), "PNG")

    def no_decode(self: Image.Image) -> None:
        raise AssertionError("pixels decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageError, match=r"100x100 = 10,000 pixels exceeds the limit of 5,000"):
        load_image(data, max_pixels=5_000)


def test_pil_bomb_warning_is_an_error_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # 1,000 < 40x40 < 2,000: PIL only warns
    data = _save(Image.new("RGB", (40, 40)), "PNG")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(data, max_pixels=None)


def test_import_leaves_global_limits_alone() -> None:
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- HEIC -------------------------------------------------------------------------------------


@pytest.mark.skipif(not images.HEIF_AVAILABLE, reason="pillow-heif not installed")
def test_heic_loads_and_missing_plugin_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        data = _save(Image.new("RGB", (32, 24), (200, 10, 10)), "HEIF")
    except (OSError, KeyError, ValueError) as exc:  # libheif built without an encoder
        pytest.skip(f"cannot encode HEIC here: {exc}")
    img = load_image(data, name="x.heic")
    assert img.size == (32, 24) and _close(img.getpixel((10, 10)), (200, 10, 10), tol=12)
    monkeypatch.setattr(images, "HEIF_AVAILABLE", False)
    with pytest.raises(ImageError, match=r"x\.heic is HEIC/HEIF, which needs pillow-heif"):
        load_image(data, name="x.heic")


# --- EXIF GPS -----------------------------------------------------------------------------------


def _jpeg_with_gps(gps: dict) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8825).update(gps)
    return _save(Image.new("RGB", (8, 8)), "JPEG", exif=exif)


def test_read_exif_gps_round_trip(tmp_path: Path) -> None:
    data = _jpeg_with_gps({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    path = tmp_path / "eiffel.jpg"
    path.write_bytes(data)
    for source in (path, data, io.BytesIO(data)):
        lat, lon = read_exif_gps(source)
        assert lat == pytest.approx(48.8583, abs=1e-3) and lon == pytest.approx(2.2944, abs=1e-3)
    south_west = _jpeg_with_gps({1: "S", 2: (33.0, 52.0, 0.0), 3: "W", 4: (151.0, 12.0, 36.0)})
    lat, lon = read_exif_gps(south_west)
    assert lat == pytest.approx(-33.8667, abs=1e-3) and lon == pytest.approx(-151.21, abs=1e-3)


@pytest.mark.parametrize(
    "gps",
    [
        {},  # no GPS IFD
        {1: "N", 2: (48.0, 51.0, 30.0)},  # no longitude
        {2: (48.0, 51.0, 30.0), 4: (2.0, 17.0, 40.0)},  # no refs: sign unknown
        {1: "N", 2: (95.0, 0.0, 0.0), 3: "E", 4: (2.0, 0.0, 0.0)},  # latitude out of range
        {1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)},  # (0, 0) placeholder
        {1: "X", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)},  # bad ref
    ],
)
def test_read_exif_gps_absent_or_malformed(gps: dict) -> None:
    assert read_exif_gps(_jpeg_with_gps(gps)) is None


def test_read_exif_gps_zero_denominator_and_png() -> None:
    from PIL.TiffImagePlugin import IFDRational

    bad = _jpeg_with_gps({1: "N", 2: (IFDRational(48, 0), 0.0, 0.0), 3: "E", 4: (2.0, 0.0, 0.0)})
    assert read_exif_gps(bad) is None
    assert read_exif_gps(_save(Image.new("RGB", (4, 4)), "PNG")) is None
    with pytest.raises(ImageError, match="not an image"):
        read_exif_gps(b"plain text", name="t.txt")


def test_image_bytes_digest() -> None:
    data = b"\xff\xd8\xff some bytes"
    assert image_bytes_digest(data) == hashlib.sha256(data).hexdigest()
    assert len(image_bytes_digest(b"")) == 64
