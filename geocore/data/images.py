"""The one safe image loader: paths, bytes or file-likes in, a decoded RGB ``PIL.Image`` out.

Every failure a user can cause (empty, not an image, truncated, decompression bomb) becomes an
:class:`~geocore.errors.ImageError` naming the file. Animated images (GIF, WebP, APNG) yield their
first frame. Global PIL state is left alone apart from registering the HEIF opener.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

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
# Exceptions PIL decoders raise on malformed data (not only OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_GPS_IFD = 0x8825


def image_bytes_digest(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 hex digest of raw image bytes (a key for in-memory caches)."""
    return hashlib.sha256(data).hexdigest()


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


def _open(source: ImageSource, name: str, max_pixels: int | None) -> Image.Image:
    """Open (header only) and check the declared size before any pixel is decoded."""
    stream = _as_stream(source, name)
    if not HEIF_AVAILABLE and _looks_like_heif(stream):
        raise ImageError(f"{name} is HEIC/HEIF, which needs pillow-heif (pip install pillow-heif)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(stream)
        except _BOMB as exc:
            raise ImageError(f"{name} is too large (refused as a possible decompression bomb): {exc}") from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageError(f"{name} is not an image PIL can read ({_EXPECTED})") from exc
        except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
            raise ImageError(f"{name} cannot be read: {exc.strerror or exc}") from exc
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name} is truncated or corrupt: {exc}") from exc
    if max_pixels is not None and img.size[0] * img.size[1] > max_pixels:
        img.close()
        raise _bomb_error(name, img.size, max_pixels)
    return img


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit integer or float pixels to 0..255 by their range (never plain clipping)."""
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
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


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode)).convert("RGB")
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        return _composite_on_white(img)  # on white: transparent logos/screenshots go white, not black
    try:
        return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX
    except (ValueError, OSError) as exc:
        raise ImageError(f"{name} has pixel mode {mode!r}, which cannot be converted to RGB") from exc


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
    more than ``max_pixels`` pixels are refused before decoding; PIL's own global limit
    (``Image.MAX_IMAGE_PIXELS``) is also enforced, as an error rather than a warning.
    Raises :class:`ImageError` naming the file for anything unreadable.
    """
    label = _source_name(source, name)
    img = _open(source, label, max_pixels)
    try:
        if max_side is not None:
            _draft_jpeg(img, max_side)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img.load()  # the first frame only, for animated images
            except _BOMB as exc:
                raise _bomb_error(label, img.size, Image.MAX_IMAGE_PIXELS or 0) from exc
            except _DECODE_ERRORS as exc:
                raise ImageError(f"{label} is truncated or corrupt: {exc}") from exc
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # malformed EXIF must not reject pixels that decoded fine
            oriented = img.copy()
        rgb = _to_rgb(oriented, label)
        if max_side is not None and max(rgb.size) > max_side:
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return rgb
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


def read_exif_gps(source: ImageSource, *, name: str | None = None) -> tuple[float, float] | None:
    """The photo's EXIF GPS position as signed decimal ``(lat, lon)``, or None.

    None when the GPS IFD is absent, malformed, out of range or the (0, 0) placeholder some
    cameras write without a fix. Bad EXIF never raises; only input that cannot be opened as an
    image (missing, empty, not an image, beyond PIL's own pixel limit) raises ImageError.
    """
    label = _source_name(source, name)
    img = _open(source, label, max_pixels=None)  # header only: size does not matter here
    try:
        gps = img.getexif().get_ifd(_GPS_IFD)
        lat = _gps_coord(gps.get(2), gps.get(1), "N", "S", 90.0)
        lon = _gps_coord(gps.get(4), gps.get(3), "E", "W", 180.0)
    except Exception:  # any EXIF parsing trouble means "no usable GPS"
        return None
    finally:
        img.close()
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


def read_exif_info(source: ImageSource, *, name: str | None = None) -> dict[str, str | None]:
    """The photo's EXIF capture time and camera as text: keys `datetime_original` (DateTimeOriginal,
    "YYYY:MM:DD HH:MM:SS"), `offset_time_original` (its UTC offset, e.g. "+02:00"), `datetime` (the file's
    DateTime), `make` and `model`; each None when absent or malformed.

    Like `read_exif_gps`, bad EXIF never raises; only input that cannot be opened as an image raises ImageError.
    """
    label = _source_name(source, name)
    img = _open(source, label, max_pixels=None)  # header only
    out: dict[str, str | None] = dict.fromkeys(_EXIF_TEXT_TAGS)
    try:
        exif = img.getexif()
        for key, (ifd, tag) in _EXIF_TEXT_TAGS.items():
            try:
                out[key] = _exif_text((exif.get_ifd(ifd) if ifd is not None else exif).get(tag))
            except Exception:  # one malformed IFD leaves the other fields readable
                out[key] = None
    except Exception:
        pass
    finally:
        img.close()
    return out
