"""WebDataset shards: tar files of geotagged samples, read as streams, never unpacked.

A sample is the run of tar members that share a key (the member name up to its first dot, grouped exactly as the
`webdataset` package groups them, with its `base_plus_ext`); the key is the sample's ID. A sample holds
- its image: the first of the members `.jpg`, `.jpeg`, `.png`, `.webp` (bytes, decoded by the safe loader
  `geocore.data.images.load_image`, in memory), and
- its position: a `.json` member with `latitude`/`longitude` (OSV-5M's WebDataset layout, whose other fields are
  ignored) or `lat`/`lon` (also `lng`; names in any case), or two text members `.lat` and `.lon` holding one number
  each (the `.cls` style).
A sample without an image or a position is kept in the count and comes back as an error item ("skipped and
counted"), as does an image the loader refuses.

Patterns (`expand_shards`): brace ranges (`osv5m-train-{000000..000489}.tar`), several joined by `::`, shell globs
over local files (`shards/*.tar`) and the URLs `webdataset.gopen` opens (`pipe:CMD`, `http(s)://…`). A local shard
that does not exist, a pattern naming none, and a shard that is not a whole tar archive (garbage, cut short, a
broken header) are one-line InputErrors naming the shard (`scan_shard`, run over every shard before training).

`shard_index` counts every shard's samples and reads their positions (tar headers and the small metadata members
only: image bytes are skipped by seeking in a local file); it is cached (`save_index`/`load_index`, keyed by each
local shard's size and modification time). `read_samples` streams samples `[start, stop)` of one shard;
`ShardMember` reads one image by its byte offset (local, uncompressed shards: reference sets).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from geocore.data.text import readable
from geocore.errors import ImageError, InputError

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
POSITION_SUFFIXES = ("json", "lat", "lon", "latitude", "longitude")
LAT_NAMES = ("latitude", "lat")
LON_NAMES = ("longitude", "lon", "lng")
MAX_IMAGE_MEMBER = 256 << 20  # bytes of one image member read into memory (the loader's pixel limits bind first)
MAX_META_MEMBER = 1 << 20  # bytes of one metadata member
EXPECTED = "WebDataset .tar shards (each sample: a .jpg/.png/.webp image and a .json with latitude/longitude)"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # pipe:, http:, https:, s3:, gs:, hf:, file: (not C:)
_META_NAME = re.compile(r"__[^/]*__($|/)")  # WebDataset's own members (__key__ etc.): never samples
_TAIL_LIMIT = 1 << 20  # bytes after the last member a whole tar may hold (end-of-archive blocks and padding)
INDEX_VERSION = 1
INDEX_PROCESSES = 8  # shards scanned at once (processes) by `shard_index`


def _brace_expand(pattern: str) -> list[str]:
    from braceexpand import braceexpand  # webdataset's dependency

    return list(braceexpand(pattern))


def is_remote(url: str) -> bool:
    """A URL webdataset opens itself (`pipe:…`, `http(s)://…`, …), not a local path."""
    return bool(_SCHEME.match(url)) and not url.startswith("file:")


def _local(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url[len("file:"):] if url.startswith("file:") \
        else url


def looks_like_shards(source: str | os.PathLike) -> bool:
    """Whether a command's SOURCE names shards: a `.tar` file, a pattern of them, or a shard URL."""
    text = str(source)
    last = text.split("::")[-1].strip()
    return last.lower().endswith((".tar", ".tgz", ".tar.gz")) or (is_remote(last) and ".tar" in last)


def expand_shards(pattern: str | Sequence[str]) -> list[str]:
    """The shards a pattern names, in order (see the module); InputError for a pattern that names none, a local
    shard that does not exist, or a shard named twice."""
    parts = [p.strip() for p in (pattern.split("::") if isinstance(pattern, str) else pattern)]
    urls: list[str] = []
    for part in parts:
        if not part:
            continue
        for url in _brace_expand(part):
            if is_remote(url):
                urls.append(url)
            elif glob.has_magic(_local(url)):
                found = sorted(glob.glob(_local(url)))
                if not found:
                    raise InputError(f"shards {readable(url)}: no file matches; expected {EXPECTED}")
                urls.extend(found)
            else:
                urls.append(_local(url))
    if not urls:
        raise InputError(f"shards {readable(pattern)}: the pattern names no shard; expected {EXPECTED}")
    missing = [u for u in urls if not is_remote(u) and not os.path.isfile(u)]
    if missing:
        more = f" (and {len(missing) - 1} more of the {len(urls)} the pattern names)" if len(missing) > 1 else ""
        raise InputError(f"shard {readable(missing[0])} does not exist{more}; expected {EXPECTED}")
    seen: set[str] = set()
    for u in urls:
        if u in seen:
            raise InputError(f"shard {readable(u)} is named twice by {readable(pattern)}; each shard once")
        seen.add(u)
    return urls


# --- reading a tar archive member by member -------------------------------------------------------------------


def _key_suffix(name: str) -> tuple[str | None, str | None]:
    from webdataset.tariterators import base_plus_ext  # the grouping rule of webdataset itself

    prefix, suffix = base_plus_ext(name)
    return prefix, (suffix.lower() if suffix is not None else None)


def _open_tar(url: str, *, seekable: bool) -> tuple[tarfile.TarFile, IO[bytes]]:
    """(tar, underlying stream): random access for a local file when `seekable`, else a stream (gopen)."""
    try:
        if seekable and not is_remote(url):
            raw: IO[bytes] = open(_local(url), "rb")  # noqa: SIM115 - closed by the caller
            try:
                return tarfile.open(fileobj=raw, mode="r:*"), raw
            except BaseException:
                raw.close()
                raise
        from webdataset.gopen import gopen

        raw = gopen(url if is_remote(url) else _local(url), "rb")
        try:
            return tarfile.open(fileobj=raw, mode="r|*"), raw
        except BaseException:
            raw.close()
            raise
    except (tarfile.TarError, EOFError) as err:
        lines = str(err).splitlines()  # "r:*" lists each compression it tried: one line says it
        why = readable(lines[0]) if len(lines) == 1 else "no tar header at its start"
        raise InputError(f"shard {readable(url)}: not a tar archive ({why or 'unreadable'}); "
                         f"expected {EXPECTED}") from None
    except OSError as err:
        raise InputError(f"shard {readable(url)}: cannot be read ({readable(err.strerror or err)})") from None


def _streamed(tar: tarfile.TarFile) -> bool:
    return isinstance(tar.fileobj, tarfile._Stream)  # type: ignore[attr-defined]


def _check_whole(url: str, tar: tarfile.TarFile, last: str | None) -> None:
    """tarfile stops without a word at a broken header: what follows the last member must be end-of-archive
    zeros, else the shard is cut or damaged there."""
    try:
        if not _streamed(tar):  # a file (or its decompressed view): from the header that stopped tarfile
            tar.fileobj.seek(tar.offset)
        tail = tar.fileobj.read(_TAIL_LIMIT)  # a stream: on from there
    except (tarfile.TarError, OSError, EOFError):
        tail = b""
    if tail.strip(b"\0"):
        after = f"after member {readable(last)}" if last else "at its start"
        raise InputError(f"shard {readable(url)}: damaged tar archive: unreadable header {after} "
                         f"(byte {tar.offset:,}); the rest of the shard cannot be read")


@dataclass
class _Sample:
    key: str
    members: dict[str, Any] = field(default_factory=dict)  # suffix → bytes (or (offset, size) when only located)
    too_big: str | None = None


def _iter_samples(url: str, tar: tarfile.TarFile, raw: IO[bytes], want: Callable[[int, str], bool],
                  locate: bool = False) -> Iterator[tuple[int, _Sample]]:
    """(position, sample) of every sample, in order; a member's bytes are read only when `want(position, suffix)`
    (position: the sample's 0-based place in the shard). With `locate`, image members are located, not read.
    Raises InputError naming the shard for a damaged archive."""
    current: _Sample | None = None
    pos = -1
    last: str | None = None
    file_size = os.fstat(raw.fileno()).st_size if tar.fileobj is raw else None  # a plain local file
    try:
        for info in tar:
            name = info.name
            if not info.isreg() or not name or _META_NAME.match(name) or (
                    "/" not in name and name.startswith("__") and name.endswith("__")):
                continue
            if file_size is not None and info.offset_data + info.size > file_size:
                raise InputError(f"shard {readable(url)}: cut short in member {readable(name)} (the file ends at "
                                 f"byte {file_size:,}); download it again")
            last = name
            prefix, suffix = _key_suffix(name)
            if prefix is None or suffix is None:
                continue
            if current is None or prefix != current.key:
                if current is not None:
                    yield pos, current
                current, pos = _Sample(prefix), pos + 1
            if suffix in current.members:
                raise InputError(f"shard {readable(url)}: member {readable(name)} appears twice in sample "
                                 f"{readable(prefix)}; expected one file per suffix")
            if not want(pos, suffix):
                current.members[suffix] = None
                continue
            limit = MAX_IMAGE_MEMBER if suffix in IMAGE_SUFFIXES else MAX_META_MEMBER
            if info.size > limit:
                current.too_big = f"member {readable(name)} holds {info.size:,} bytes, over the {limit:,} allowed"
                current.members[suffix] = None
            elif locate and suffix in IMAGE_SUFFIXES:
                current.members[suffix] = (info.offset_data, info.size)
            else:
                fh = tar.extractfile(info)
                current.members[suffix] = fh.read() if fh is not None else b""
            if _streamed(tar):
                tar.members = []  # a stream keeps no index: memory stays flat over a long shard
        _check_whole(url, tar, last)
    except InputError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        where = f"after member {readable(last)}" if last else "at its start"
        raise InputError(f"shard {readable(url)}: damaged tar archive {where} ({readable(err) or 'unreadable'}); "
                         "the rest of the shard cannot be read") from None
    if current is not None:
        yield pos, current


def _number(value: Any) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sample_position(members: dict[str, Any]) -> tuple[float, float] | str:
    """(lat, lon) of a sample from its metadata members, or why there is none (see the module)."""
    lat = lon = None
    if members.get("json") is not None:
        try:
            meta = json.loads(members["json"])
        except (ValueError, UnicodeDecodeError) as err:
            return f"its .json is not JSON ({readable(err)})"
        if not isinstance(meta, dict):
            return "its .json is not an object (expected {\"latitude\": …, \"longitude\": …})"
        lower = {str(k).lower(): v for k, v in meta.items()}
        lat = next((lower[k] for k in LAT_NAMES if k in lower), None)
        lon = next((lower[k] for k in LON_NAMES if k in lower), None)
    if lat is None or lon is None:
        lat = members.get("lat", members.get("latitude")) if lat is None else lat
        lon = members.get("lon", members.get("longitude")) if lon is None else lon
    if lat is None or lon is None:
        return "no position (expected a .json with latitude/longitude or lat/lon, or .lat and .lon members)"
    flat, flon = _number(lat), _number(lon)
    if flat is None or flon is None or abs(flat) > 90 or abs(flon) > 180:
        return f"position {readable(lat)!s:.40}, {readable(lon)!s:.40} is not a place (expected -90..90, -180..180)"
    return flat, flon


def _image_suffix(members: dict[str, Any]) -> str | None:
    return next((s for s in IMAGE_SUFFIXES if s in members), None)


# --- the index: how many samples each shard holds, and where they are ---------------------------------------


@dataclass
class ShardScan:
    """One shard's samples, in order: `keys`, `latlon` (n, 2) float32 (NaN where there is no position), `reasons`
    (None, or why the sample cannot be used) and, when located, `members` ((offset, size) of each image)."""

    url: str
    keys: list[str]
    latlon: np.ndarray
    reasons: list[str | None]
    members: list[tuple[int, int] | None] | None = None

    def __len__(self) -> int:
        return len(self.keys)


def scan_shard(url: str, *, locate: bool = False) -> ShardScan:
    """Read a shard's headers and metadata (never its image bytes, in a local file); with `locate`, also each
    image member's byte offset (local, uncompressed shards only). InputError naming the shard when it is not a
    whole tar archive."""
    tar, raw = _open_tar(url, seekable=True)
    if locate and tar.fileobj is not raw:  # a URL, or a compressed file
        tar.close(), raw.close()
        raise InputError(f"shard {readable(url)}: only local, uncompressed .tar shards can be read photo by photo "
                         "(download or decompress it first)")
    keys: list[str] = []
    latlon: list[tuple[float, float]] = []
    reasons: list[str | None] = []
    members: list[tuple[int, int] | None] = []
    try:
        for _, sample in _iter_samples(url, tar, raw, lambda _p, s: s in POSITION_SUFFIXES or s in IMAGE_SUFFIXES
                                       and locate, locate=locate):
            keys.append(sample.key)
            image = _image_suffix(sample.members)
            where = sample_position(sample.members)
            reason = sample.too_big or (None if image else
                                        f"no image (expected a .{', .'.join(IMAGE_SUFFIXES)} member)")
            if isinstance(where, str):
                reason = reason or where
                latlon.append((math.nan, math.nan))
            else:
                latlon.append(where)
            reasons.append(reason)
            members.append(sample.members.get(image) if image and locate else None)
    finally:
        tar.close()
        raw.close()
    return ShardScan(url, keys, np.asarray(latlon, np.float32).reshape(-1, 2), reasons, members if locate else None)


def _stamp(url: str) -> tuple[int, int]:
    """(size, mtime_ns) of a local shard, (-1, -1) for a URL (taken as unchanging)."""
    if is_remote(url):
        return -1, -1
    st = os.stat(_local(url))
    return int(st.st_size), int(st.st_mtime_ns)


@dataclass
class ShardIndex:
    """Every shard's sample count and the positions of all samples, shard after shard (`latlon` (N, 2) float32,
    NaN where a sample has none)."""

    urls: list[str]
    counts: np.ndarray  # (S,) int64
    latlon: np.ndarray  # (N, 2) float32
    stamps: np.ndarray  # (S, 2) int64: size, mtime_ns (-1 for URLs)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def subset(self, urls: Sequence[str]) -> ShardIndex:
        """The index of some of its shards, in the order given."""
        where = {u: i for i, u in enumerate(self.urls)}
        starts = np.concatenate([[0], np.cumsum(self.counts)])
        pick = [where[u] for u in urls]
        latlon = [self.latlon[starts[i]:starts[i + 1]] for i in pick]
        return ShardIndex(list(urls), self.counts[pick], np.concatenate(latlon) if latlon else
                          np.zeros((0, 2), np.float32), self.stamps[pick])


def _indexed(url: str) -> tuple[int, np.ndarray, tuple[int, int]]:
    scan = scan_shard(url)
    return len(scan), scan.latlon, _stamp(url)


def shard_index(urls: Sequence[str], *, progress: bool = False, processes: int | None = None) -> ShardIndex:
    """Scan every shard (see `scan_shard`), `processes` at a time (default: up to INDEX_PROCESSES, one per core;
    parsing tar headers is Python-bound, ~250 µs a sample on one core); the first damaged shard is an InputError
    naming it."""
    from tqdm import tqdm

    processes = min(INDEX_PROCESSES, os.cpu_count() or 1) if processes is None else processes
    bar = dict(desc="indexing shards", unit="shard", total=len(urls),  # None: shown on a terminal only
               disable=True if not progress or len(urls) < 2 else None)
    if processes > 1 and len(urls) >= 2 * processes:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: the children only parse tar headers (as DataLoader workers, forked the same way)
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            scans = list(tqdm(pool.map(_indexed, urls), **bar))
    else:
        scans = [_indexed(url) for url in tqdm(urls, **bar)]
    counts = [n for n, _, _ in scans]
    latlon = [ll for _, ll, _ in scans]
    stamps = [st for _, _, st in scans]
    return ShardIndex(list(urls), np.asarray(counts, np.int64),
                      np.concatenate(latlon) if latlon else np.zeros((0, 2), np.float32),
                      np.asarray(stamps, np.int64).reshape(-1, 2))


def save_index(index: ShardIndex, path: str | Path) -> None:
    from geocore.data.safe_io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, version=INDEX_VERSION, urls=np.asarray(index.urls, dtype=str), counts=index.counts,
                     latlon=index.latlon, stamps=index.stamps)


def load_index(path: str | Path, urls: Sequence[str]) -> ShardIndex | None:
    """The cached index at `path` when it is of exactly these shards, unchanged since; else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != INDEX_VERSION or list(z["urls"]) != list(urls):
                return None
            index = ShardIndex(list(urls), z["counts"].astype(np.int64), z["latlon"].astype(np.float32),
                               z["stamps"].astype(np.int64).reshape(-1, 2))
    except (OSError, ValueError, KeyError):
        return None
    try:
        if [tuple(s) for s in index.stamps.tolist()] != [_stamp(u) for u in urls]:
            return None
    except OSError:
        return None
    return index


# --- streaming samples ------------------------------------------------------------------------------------------


@dataclass
class ShardSample:
    """One sample as read: `key`, the image bytes (None when unusable), its position, and `error` (why unusable)."""

    key: str
    image: bytes | None
    lat: float
    lon: float
    error: str | None = None
    shard: str = ""  # the shard's URL or path

    @property
    def name(self) -> str:
        """How messages name the sample: its key and its shard's file name."""
        return f"{readable(self.key)} in {readable(self.shard.rstrip('/').rsplit('/', 1)[-1])}"


def read_samples(url: str, start: int = 0, stop: int | None = None, *, expected: int | None = None) \
        -> Iterator[ShardSample]:
    """Samples `[start, stop)` of one shard, streamed (through `webdataset.gopen`: local files and URLs alike).

    Exactly `stop - start` samples come out when `expected` (the shard's count in the index) is given: a shard that
    ends early or breaks (it changed since it was indexed, a network read failed) yields error samples for the rest,
    so every rank keeps its planned number of batches. Without `expected`, a damaged shard is an InputError."""
    stop = expected if stop is None else stop
    emitted = 0
    failure: str | None = None
    try:
        tar, raw = _open_tar(url, seekable=False)
    except InputError as err:
        if stop is None:
            raise
        tar = raw = None
        failure = str(err)
    if tar is not None:
        def want(pos: int, suffix: str) -> bool:
            return start <= pos and (stop is None or pos < stop) and (suffix in IMAGE_SUFFIXES
                                                                       or suffix in POSITION_SUFFIXES)

        try:
            for pos, sample in _iter_samples(url, tar, raw, want):
                if pos < start:
                    continue
                if stop is not None and pos >= stop:
                    break
                yield _decoded(url, sample)
                emitted += 1
            else:
                if stop is not None and emitted < stop - start:
                    failure = (f"shard {readable(url)}: ended after {start + emitted} samples, {expected} expected "
                               "(changed since it was indexed?)")
        except InputError as err:
            if expected is None:
                raise
            failure = str(err)
        finally:
            tar.close()
            raw.close()
    if stop is not None:
        for pos in range(start + emitted, stop):
            yield ShardSample(f"{url}#{pos}", None, math.nan, math.nan, failure or "unreadable", url)


def _decoded(url: str, sample: _Sample) -> ShardSample:
    where = sample_position(sample.members)
    image = _image_suffix(sample.members)
    error = sample.too_big or (None if image else f"{readable(sample.key)}: no image in shard {readable(url)}")
    if isinstance(where, str):
        return ShardSample(sample.key, None, math.nan, math.nan, error or f"{readable(sample.key)}: {where}", url)
    data = sample.members.get(image) if image else None
    if error or not data:
        return ShardSample(sample.key, None, where[0], where[1], error or f"{readable(sample.key)}: empty image", url)
    return ShardSample(sample.key, data, where[0], where[1], None, url)


@dataclass(frozen=True)
class ShardMember:
    """One image member of a local, uncompressed shard, read by its byte offset (a reference photo's `path`)."""

    shard: str
    offset: int
    size: int

    def read(self, name: str | None = None) -> bytes:
        """Its bytes; ImageError naming the member when the shard cannot be read there (it changed)."""
        label = name or f"{self.shard}@{self.offset}"
        if self.size > MAX_IMAGE_MEMBER:
            raise ImageError(f"{label}: {self.size:,} bytes, over the {MAX_IMAGE_MEMBER:,} allowed")
        try:
            with open(self.shard, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(self.size)
        except OSError as err:
            raise ImageError(f"{label}: shard {self.shard} cannot be read ({err.strerror or err})") from None
        if len(data) != self.size:
            raise ImageError(f"{label}: shard {self.shard} ends early (changed since it was scanned?)")
        if not data:
            raise ImageError(f"{label} is empty (0 bytes)")
        return data
