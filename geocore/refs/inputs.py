"""What a reference set is built from: a CSV (IMG_ID, LAT, LON, optional columns) with its images folder, a
folder of photos whose GPS comes from EXIF, or WebDataset shards (`geocore.data.shards`: a `.tar` file or a pattern
of them; IMG_ID is each sample's key, each photo is read by its byte offset in the shard, never unpacked). Bad rows are listed, not fatal: each becomes a (name, reason) row of
`skipped`; a file that is not a CSV or a folder, or a CSV without the columns, is a one-line InputError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geocore.data.images import read_exif_gps
from geocore.data.shards import ShardMember, expand_shards, looks_like_shards, scan_shard
from geocore.data.roots import resolve_inside
from geocore.errors import ImageError, InputError
from geocore.geo.tables import read_csv, to_numbers

EXPECTED = "a CSV with columns IMG_ID,LAT,LON (optional columns are kept)"
ID_ALIASES = ("IMG_ID", "IMG_FILE")  # GeoCLIP's training CSVs name the column IMG_FILE


@dataclass
class Source:
    """The photos to embed: `items` (IMG_ID, LAT, LON, path, extras) in input order, and `skipped` (name, reason)."""

    items: pd.DataFrame
    skipped: pd.DataFrame
    description: str

    @property
    def extra_columns(self) -> list[str]:
        return [c for c in self.items.columns if c not in ("IMG_ID", "LAT", "LON", "path")]


def _skips(names, reasons) -> pd.DataFrame:
    return pd.DataFrame({"name": [str(n) for n in names], "reason": [str(r) for r in reasons]})


def read_source(source: str | Path, images: str | Path | None = None) -> Source:
    """A CSV (with `images`, default: the CSV's folder), a folder of photos with EXIF GPS, or shards (see the
    module)."""
    if looks_like_shards(source):
        if images is not None:
            raise InputError(f"{source}: shards hold their photos; images= is for a CSV source")
        return _from_shards(str(source))
    source = Path(source)
    if source.is_dir():
        if images is not None:
            raise InputError(f"{source} is a folder of photos (GPS from EXIF); images= is for a CSV source")
        return _from_exif(source)
    if source.is_file():
        return _from_csv(source, Path(images) if images is not None else source.parent)
    raise InputError(f"{source}: no such file or folder (expected a CSV with IMG_ID,LAT,LON or a folder of photos)")


def _from_csv(csv: Path, images: Path) -> Source:
    if not images.is_dir():
        raise InputError(f"{images}: no such images folder")
    df = read_csv(csv, EXPECTED, dtype={a: str for a in ID_ALIASES}, keep_default_na=False)
    id_col = next((a for a in ID_ALIASES if a in df.columns), None)
    missing = [c for c in ("LAT", "LON") if c not in df.columns] + ([] if id_col else ["IMG_ID"])
    if missing:
        raise InputError(f"{csv}: column {missing[0]} is missing; expected {EXPECTED}")
    df = df.rename(columns={id_col: "IMG_ID"})
    df["IMG_ID"] = df["IMG_ID"].astype(str).str.strip()
    lat, lon = to_numbers(df["LAT"]), to_numbers(df["LON"])
    line = np.arange(len(df)) + 2  # the header is line 1
    reason = np.full(len(df), "", dtype=object)
    bad_gps = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    reason[bad_gps] = [f"line {n}: LAT, LON = {df['LAT'].iat[i]!r}, {df['LON'].iat[i]!r} is not a position "
                       "(expected -90..90, -180..180)" for i, n in zip(np.flatnonzero(bad_gps), line[bad_gps])]
    empty = (df["IMG_ID"] == "").to_numpy()
    reason[empty] = [f"line {n}: empty IMG_ID" for n in line[empty]]
    counts = df["IMG_ID"].map(df["IMG_ID"].value_counts()).to_numpy()
    dup = (counts > 1) & ~empty  # every row of an ID given twice: which GPS is right is unknown
    reason[dup & (reason == "")] = [f"line {n}: IMG_ID appears {c} times in the CSV (which GPS is right is unknown)"
                                    for n, c in zip(line[dup & (reason == "")], counts[dup & (reason == "")])]
    paths: list[Path | None] = []
    for i, img_id in enumerate(df["IMG_ID"]):
        if reason[i]:
            paths.append(None)
            continue
        try:
            paths.append(resolve_inside(images, img_id, kind="file"))
        except InputError as err:
            reason[i] = f"line {line[i]}: {err}"
            paths.append(None)
    df["LAT"], df["LON"], df["path"] = lat, lon, paths
    keep = reason == ""
    skipped = _skips(df["IMG_ID"][~keep], reason[~keep])
    items = df[keep].reset_index(drop=True)
    extras = [c for c in items.columns if c not in ("IMG_ID", "LAT", "LON", "path")]
    items = items[["IMG_ID", "LAT", "LON", "path", *extras]]
    return Source(items, skipped, f"{csv} (images {images})")


def _from_exif(folder: Path) -> Source:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    rows, names, reasons = [], [], []
    for path in files:
        img_id = path.relative_to(folder).as_posix()
        try:
            gps = read_exif_gps(path, name=img_id)
        except ImageError as err:
            names.append(img_id), reasons.append(str(err))
            continue
        if gps is None:
            names.append(img_id), reasons.append(f"{img_id}: no EXIF GPS position")
            continue
        rows.append((img_id, gps[0], gps[1], resolve_inside(folder, img_id, kind="file")))
    if not files:
        raise InputError(f"{folder}: no files in the folder")
    items = pd.DataFrame(rows, columns=["IMG_ID", "LAT", "LON", "path"])
    return Source(items, _skips(names, reasons), f"{folder} (GPS from EXIF)")


def _from_shards(pattern: str) -> Source:
    """Every sample of local, uncompressed shards: IMG_ID its key, LAT/LON from its metadata, `path` a
    `ShardMember` (the image's byte offset). Samples without an image or a position, and keys found more than once,
    are skipped with the reason; a missing or damaged shard is an InputError naming it."""
    rows, names, reasons = [], [], []
    urls = expand_shards(pattern)
    for url in urls:
        scan = scan_shard(url, locate=True)
        for key, (lat, lon), reason, member in zip(scan.keys, scan.latlon.tolist(), scan.reasons, scan.members or []):
            if reason or member is None:
                names.append(key), reasons.append(f"{key} in {url}: {reason or 'no image'}")
            else:
                rows.append((key, float(lat), float(lon), ShardMember(url, *member)))
    items = pd.DataFrame(rows, columns=["IMG_ID", "LAT", "LON", "path"])
    counts = items["IMG_ID"].map(items["IMG_ID"].value_counts())
    twice = (counts > 1).to_numpy()
    for key, n in zip(items["IMG_ID"][twice], counts[twice]):
        names.append(key), reasons.append(f"{key}: the key appears {n} times in the shards (which GPS is right "
                                          "is unknown)")
    items = items[~twice].reset_index(drop=True)
    return Source(items, _skips(names, reasons), f"{pattern} ({len(urls)} shard{'s' if len(urls) != 1 else ''})")
