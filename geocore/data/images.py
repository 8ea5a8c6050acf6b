"""The one safe image loader: paths, bytes or file-likes in, a decoded RGB ``PIL.Image`` out.

Every failure a user can cause (empty, not an image, truncated, corrupt headers or EXIF,
decompression bomb) becomes an :class:`~geocore.errors.ImageError` naming the file. Animated images
(GIF, WebP, APNG) yield their first frame. Global PIL state is left alone apart from registering the
HEIF opener.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from geocore.errors import ImageError

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_AVAILABLE = False

ImageSource = str | Path | bytes | bytearray | memoryview | BinaryIO

_EXPECTED = "expected JPEG, PNG, WebP, HEIC, GIF, BMP or TIFF"
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"}
# What the decoders raise on malformed data, found by fuzzing (bench/bench_fuzz.py): PIL's plugins raise
# OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError and struct.error; zlib.error
# escapes from compressed PNG chunks; pillow_heif turns every libheif failure (corrupt boxes, its own
# security limits) into RuntimeError, which also covers RecursionError and NotImplementedError; MemoryError
# is an allocation a corrupt header asked for. Only calls into the decoders are wrapped in these.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error,
                  zlib.error, RuntimeError, MemoryError, OverflowError, ZeroDivisionError)
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_GPS_IFD = 0x8825
_ORIENTATION = 0x0112
# EXIF orientation → the transpose that shows the photo upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_STRIP_PIXELS = 1_000_000  # pixels converted to RGB at a time: bounds the memory beyond the decoded image
# Peak bytes a pixel costs while loading, by decoder (measured with bench/bench_fuzz.py). PIL holds RGB and
# RGBA at 4 bytes a pixel and the conversion to RGB adds at most 4 more; libwebp's animation decoder, which PIL
# reads every WebP through, holds two RGBA canvases and hands over a third copy; libtiff reads a strip (up to
# the whole image, up to 8 bytes a pixel) beside PIL's image; libheif decodes into planes of its own. A file
# is refused when width x height x this exceeds max_pixels x 8 bytes (~716 MB at the default limit): the
# pixel limit is what binds for every other format.
_PEAK_BYTES = {"WEBP": 18, "TIFF": 16, "HEIF": 10}
_BUDGET_BYTES_PER_PIXEL = 8


def image_bytes_digest(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 hex digest of raw image bytes (a key for in-memory caches)."""
    return hashlib.sha256(data).hexdigest()


def source_bytes(source: ImageSource, *, name: str | None = None) -> bytes:
    """The raw bytes of `source`, read once (hash them, then decode them with `load_image(data, name=...)`);
    ImageError, as `load_image` words it, for a missing, empty or unreadable source."""
    label = _source_name(source, name)
    stream = _as_stream(source, label)
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()
    try:
        return stream.read_bytes()
    except OSError as exc:
        raise ImageError(f"{label} cannot be read: {exc.strerror or exc}") from exc


def _source_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    upload_name = getattr(source, "name", None)  # open files and web-framework uploads carry one
    return upload_name if isinstance(upload_name, str) and upload_name else "<upload>"


def _as_stream(source: ImageSource, name: str) -> io.BytesIO | Path:
    """A path to open, or an in-memory stream; raises ImageError for missing or empty input."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name} does not exist (expected an image file)")
        if not path.is_file():
            raise ImageError(f"{name} is not a regular file (expected an image file)")
        if path.stat().st_size == 0:
            raise ImageError(f"{name} is empty (0 bytes)")
        return path
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        seekable = getattr(source, "seekable", None)
        pos = source.tell() if callable(seekable) and seekable() else None
        data = source.read()
        if pos is not None:
            source.seek(pos)  # leave the caller's stream where it was
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{name} is a text stream (expected a binary image stream)")
    else:
        raise ImageError(f"{name} is a {type(source).__name__} (expected a path, bytes or a binary file)")
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    return io.BytesIO(data)


def _looks_like_heif(stream: io.BytesIO | Path) -> bool:
    if isinstance(stream, Path):
        with stream.open("rb") as fh:
            head = fh.read(12)
    else:
        head = stream.getvalue()[:12]
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _bomb_error(name: str, size: tuple[int, int], limit: int) -> ImageError:
    w, h = size
    return ImageError(
        f"{name} is too large: {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,} pixels "
        "(refused as a possible decompression bomb)"
    )


def _corrupt(name: str, exc: BaseException) -> ImageError:
    """The one-line error for a decoder failure (libheif's size refusals read as "too large")."""
    why = " ".join(str(exc).split())[:200] or type(exc).__name__
    if isinstance(exc, MemoryError) or "security limit" in why.lower():
        return ImageError(f"{name} is too large to decode safely ({why})")
    return ImageError(f"{name} is truncated or corrupt: {why} ({_EXPECTED})")


def _open(source: ImageSource, name: str, max_pixels: int | None) -> Image.Image:
    """Open (header only) and check the declared size before any pixel is decoded."""
    stream = _as_stream(source, name)
    if not HEIF_AVAILABLE and _looks_like_heif(stream):
        raise ImageError(f"{name} is HEIC/HEIF, which needs pillow-heif (pip install pillow-heif)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)  # PIL's "Corrupt EXIF data" notes: nothing a user can act on
        try:
            img = Image.open(stream)
        except _BOMB as exc:
            raise ImageError(f"{name} is too large (refused as a possible decompression bomb): {exc}") from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageError(f"{name} is not an image PIL can read ({_EXPECTED})") from exc
        except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
            raise ImageError(f"{name} cannot be read: {exc.strerror or exc}") from exc
        except _DECODE_ERRORS as exc:
            raise _corrupt(name, exc) from exc
    w, h = img.size
    if w < 1 or h < 1:
        img.close()
        raise ImageError(f"{name} declares a {w}x{h} image (expected at least 1x1 pixels)")
    if max_pixels is not None and w * h > max_pixels:
        img.close()
        raise _bomb_error(name, img.size, max_pixels)
    cost = _PEAK_BYTES.get(str(img.format), _BUDGET_BYTES_PER_PIXEL)
    if max_pixels is not None and w * h * cost > max_pixels * _BUDGET_BYTES_PER_PIXEL:
        img.close()
        raise ImageError(
            f"{name} is too large: decoding a {w}x{h} {img.format} takes about {w * h * cost / 1e6:,.0f} MB, over "
            f"the {max_pixels * _BUDGET_BYTES_PER_PIXEL / 1e6:,.0f} MB allowed (at most "
            f"{max_pixels * _BUDGET_BYTES_PER_PIXEL // cost:,} pixels for {img.format}; refused as a possible "
            "decompression bomb)"
        )
    return img


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba)  # an RGBA mask is its alpha band, used in place
    return out


def _wide_values(img: Image.Image) -> np.ndarray:
    return np.nan_to_num(np.asarray(img).astype(np.float32), copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _value_range(img: Image.Image) -> tuple[float, float]:
    """(min, max) of a 16/32-bit integer or float image (NaN and infinities count as 0), a strip at a time."""
    w, h = img.size
    rows = max(1, _STRIP_PIXELS // w)
    lo, hi = math.inf, -math.inf
    for top in range(0, h, rows):
        arr = _wide_values(img.crop((0, top, w, min(h, top + rows))))
        if arr.size:
            lo, hi = min(lo, float(arr.min())), max(hi, float(arr.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _scale_to_uint8(arr: np.ndarray, mode: str, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map 16/32-bit integer or float pixels to 0..255 by their range (never plain clipping).

    `value_range` is the (min, max) of the whole image when `arr` is one strip of it.
    """
    arr = np.nan_to_num(arr.astype(np.float32), copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if value_range is not None:
        lo, hi = value_range
    else:
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        out = arr / 257.0  # full 16-bit range; mode I from 16-bit sources lands here too
    elif mode == "F" and lo >= 0 and hi <= 1:
        out = arr * 255.0  # float images normalised to [0, 1]
    elif hi > lo:
        out = (arr - lo) * (255.0 / (hi - lo))
    else:
        out = np.clip(arr, 0, 255)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _is_wide(mode: str) -> bool:
    return mode.startswith("I") or mode == "F"


def _to_rgb(img: Image.Image, name: str, value_range: tuple[float, float] | None = None) -> Image.Image:
    mode = img.mode
    if _is_wide(mode):
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode, value_range)).convert("RGB")
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        return _composite_on_white(img)  # on white: transparent logos/screenshots go white, not black
    try:
        return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX
    except (ValueError, OSError) as exc:
        raise ImageError(f"{name} has pixel mode {mode!r}, which cannot be converted to RGB") from exc


def _target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The size with the longer side reduced to `max_side` (never enlarged), aspect kept."""
    w, h = size
    if max_side is None or max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale)))


def _rgb_reduced(img: Image.Image, name: str, factor: tuple[int, int]) -> Image.Image:
    """`_to_rgb` of the decoded image, box-reduced by integer `factor` (x, y), converted a strip of rows at a
    time: beyond the decoded image, memory holds one strip and the (reduced) result, never a full-size copy.
    """
    w, h = img.size
    fx, fy = factor
    if img.mode == "RGB" and "transparency" not in img.info:  # nothing to convert
        return img.reduce(factor) if factor != (1, 1) else img
    convert = _converter(img, name)
    step = max(fy, (_STRIP_PIXELS // w) // fy * fy)  # a multiple of fy, so reduce blocks never straddle strips
    if step >= h and factor == (1, 1):
        return convert(img)
    out = Image.new("RGB", (math.ceil(w / fx), math.ceil(h / fy)))
    for top in range(0, h, step):
        strip = convert(img.crop((0, top, w, min(h, top + step))))
        out.paste(strip.reduce(factor) if factor != (1, 1) else strip, (0, top // fy))
    return out


def _converter(img: Image.Image, name: str):
    """A function taking a part of `img` (a strip, or `img` itself) to RGB exactly as `_to_rgb(img)` would."""
    if img.mode == "P" and "transparency" in img.info:
        # Transparency in a palette image belongs to the palette entry: composite the 256 entries on white
        # once, and each strip is a plain palette lookup.
        lut = img.crop((0, 0, 256, 1))
        lut.frombytes(bytes(range(256)))
        colours = list(_composite_on_white(lut).tobytes())

        def convert(part: Image.Image) -> Image.Image:
            part = part.copy() if part is img else part  # a strip is ours to change; the image is not
            part.info.pop("transparency", None)
            part.putpalette(colours, "RGB")
            return part.convert("RGB")

        return convert
    value_range = _value_range(img) if _is_wide(img.mode) else None
    return lambda part: _to_rgb(part, name, value_range)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8); 1 when absent or malformed: bad EXIF never rejects decodable pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # any EXIF parsing trouble means "upright"
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _draft_jpeg(img: Image.Image, max_side: int) -> None:
    """Let the JPEG decoder downscale by 1/2..1/8 while decoding, to no less than 2x the target.

    The 2x margin (as in ``Image.thumbnail``'s reducing_gap) leaves the final LANCZOS step to set
    quality; DCT scaling straight to the target size is visibly blurrier.
    """
    w, h = img.size
    longest = max(w, h)
    if img.format == "JPEG" and longest >= 4 * max_side:
        scale = 2 * max_side / longest
        img.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_side: int | None = 2048,
    max_pixels: int | None = 89_478_485,
) -> Image.Image:
    """Decode ``source`` (path, bytes or binary file-like) into an RGB image.

    EXIF orientation is applied, animated images give their first frame, alpha is composited on
    white, and the longer side is reduced to ``max_side`` (``None`` keeps full size). Images with
    more than ``max_pixels`` pixels are refused before decoding, and so are WebP, TIFF and HEIF files
    whose decoders would need more than ``max_pixels`` x 8 bytes (see ``_PEAK_BYTES``); PIL's own
    global limit (``Image.MAX_IMAGE_PIXELS``) is also enforced, as an error rather than a warning.
    Conversion to RGB and shrinking go a strip at a time, so memory peaks at the decoded image plus
    the (reduced) result, never a second full-size copy.
    Raises :class:`ImageError` naming the file for anything unreadable; nothing else escapes
    (``bench/bench_fuzz.py`` and ``tests/test_fuzz_inputs.py`` hold it to that).
    """
    label = _source_name(source, name)
    img = _open(source, label, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                if max_side is not None:
                    _draft_jpeg(img, max_side)
                img.load()  # the first frame only, for animated images
            except _BOMB as exc:
                raise _bomb_error(label, img.size, Image.MAX_IMAGE_PIXELS or 0) from exc
            except _DECODE_ERRORS as exc:
                raise _corrupt(label, exc) from exc
        orientation = _orientation(img)
        # Shrink while converting (as Image.thumbnail does: an integer box reduction to no less than twice
        # the target, then LANCZOS), so a large image is never copied at full size; orient the small result.
        w, h = img.size
        tw, th = _target_size(img.size, max_side)
        factor = (max(1, int(w / tw / 2)), max(1, int(h / th / 2)))
        try:
            rgb = _rgb_reduced(img, label, factor)
            if (tw, th) != (w, h):
                box = (0.0, 0.0, w / factor[0], h / factor[1])
                rgb = rgb.resize((tw, th), Image.Resampling.LANCZOS, box=box)
        except ImageError:
            raise
        except _DECODE_ERRORS as exc:  # the rest of a lazily decoded file, or a mode PIL cannot convert
            raise _corrupt(label, exc) from exc
        if orientation != 1:
            return rgb.transpose(_TRANSPOSE[orientation])
        return rgb.copy() if rgb is img else rgb  # `img` is closed below
    finally:
        img.close()


def _gps_coord(value: object, ref: object, positive: str, negative: str, limit: float) -> float | None:
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    if not isinstance(ref, str) or ref.strip("\x00 ").upper() not in (positive, negative):
        return None
    parts = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(parts) <= 3:
        return None
    nums = [float(p) for p in parts]  # IFDRational with a zero denominator gives nan
    if any(not math.isfinite(n) or n < 0 for n in nums):
        return None
    degrees = sum(n / 60**i for i, n in enumerate(nums))
    if degrees > limit:
        return None
    return -degrees if ref.strip("\x00 ").upper() == negative else degrees


def _gps_of(exif: Image.Exif) -> tuple[float, float] | None:
    """Signed decimal (lat, lon) from an EXIF block, or None (absent, malformed, out of range, or (0, 0))."""
    try:
        gps = exif.get_ifd(_GPS_IFD)
        lat = _gps_coord(gps.get(2), gps.get(1), "N", "S", 90.0)
        lon = _gps_coord(gps.get(4), gps.get(3), "E", "W", 180.0)
    except Exception:  # any EXIF parsing trouble means "no usable GPS"
        return None
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return None
    return lat, lon


_EXIF_IFD = 0x8769
_EXIF_TEXT_TAGS = {  # key → (IFD or None for IFD0, tag)
    "datetime_original": (_EXIF_IFD, 0x9003),
    "offset_time_original": (_EXIF_IFD, 0x9011),
    "datetime": (None, 0x0132),
    "make": (None, 0x010F),
    "model": (None, 0x0110),
}


def _exif_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", "").strip()
    return text[:200] or None  # EXIF strings are short; a malformed one must not flood a report


def _info_of(exif: Image.Exif) -> dict[str, str | None]:
    out: dict[str, str | None] = dict.fromkeys(_EXIF_TEXT_TAGS)
    for key, (ifd, tag) in _EXIF_TEXT_TAGS.items():
        try:
            out[key] = _exif_text((exif.get_ifd(ifd) if ifd is not None else exif).get(tag))
        except Exception:  # one malformed IFD leaves the other fields readable
            out[key] = None
    return out


def read_exif(source: ImageSource, *, name: str | None = None) -> tuple[tuple[float, float] | None,
                                                                          dict[str, str | None]]:
    """The photo's EXIF GPS position and capture/camera text (`read_exif_gps`, `read_exif_info`), from one read
    of its header. Bad EXIF never raises; only input that cannot be opened as an image raises ImageError."""
    label = _source_name(source, name)
    img = _open(source, label, max_pixels=None)  # header only: size does not matter here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PIL's "Corrupt EXIF data" notes
            try:
                exif = img.getexif()
            except Exception:  # any EXIF parsing trouble: no GPS, no fields
                return None, dict.fromkeys(_EXIF_TEXT_TAGS)
            return _gps_of(exif), _info_of(exif)
    finally:
        img.close()


def read_exif_gps(source: ImageSource, *, name: str | None = None) -> tuple[float, float] | None:
    """The photo's EXIF GPS position as signed decimal ``(lat, lon)``, or None.

    None when the GPS IFD is absent, malformed, out of range or the (0, 0) placeholder some
    cameras write without a fix. Bad EXIF never raises; only input that cannot be opened as an
    image (missing, empty, not an image, beyond PIL's own pixel limit) raises ImageError.
    """
    return read_exif(source, name=name)[0]


def read_exif_info(source: ImageSource, *, name: str | None = None) -> dict[str, str | None]:
    """The photo's EXIF capture time and camera as text: keys `datetime_original` (DateTimeOriginal,
    "YYYY:MM:DD HH:MM:SS"), `offset_time_original` (its UTC offset, e.g. "+02:00"), `datetime` (the file's
    DateTime), `make` and `model`; each None when absent or malformed.

    Like `read_exif_gps`, bad EXIF never raises; only input that cannot be opened as an image raises ImageError.
    """
    return read_exif(source, name=name)[1]


@dataclass
class Photo:
    """A photo read once: its name, bytes, SHA-256, decoded pixels and EXIF, carried through `locate`, Grad-CAM,
    the case report and the app. `error` says why it could not be used (then the later fields are empty)."""

    name: str
    data: bytes | None = field(default=None, repr=False)
    sha256: str | None = None
    image: Image.Image | None = field(default=None, repr=False)
    exif_gps: tuple[float, float] | None = None
    exif: dict = field(default_factory=dict)  # `read_exif_info`'s fields
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def n_bytes(self) -> int | None:
        return None if self.data is None else len(self.data)

    def described(self) -> "Photo":
        """This photo without its bytes and pixels (name, SHA-256, EXIF, error): what a result keeps of a photo
        it does not own, so a thousand located photos do not hold a thousand decoded images."""
        return Photo(self.name, None, self.sha256, None, self.exif_gps, dict(self.exif), self.error)


def read_photo(source: ImageSource | Photo, *, name: str | None = None, max_side: int | None = 2048) -> Photo:
    """Read a photo once: its bytes (hashed), decoded (`load_image`) and its EXIF read from the same bytes.
    Never raises for a bad photo: the `Photo` carries the error. A `Photo` is returned as it is."""
    if isinstance(source, Photo):
        return source
    label = _source_name(source, name)
    try:
        data = source_bytes(source, name=label)
    except ImageError as err:
        return Photo(label, error=str(err))
    photo = Photo(label, data, image_bytes_digest(data))
    try:
        photo.image = load_image(data, name=label, max_side=max_side)
        photo.exif_gps, photo.exif = read_exif(data, name=label)
    except ImageError as err:
        photo.error = str(err)
    return photo
