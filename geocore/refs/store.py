"""A reference set on disk, and in memory.

A folder REFS/ holds
- `manifest.json`: format and version, model name, model fingerprint (`geocore.refs.embed.model_fingerprint`),
  embedding kind and size, count, `complete`, created, source, geocore version, and `chance_similarity` (how
  similar the best unrelated look-alike in the set typically is: what fusion measures a neighbour against);
- `embeddings.npy`: (N, D) float16, L2-normalised, memory-mapped on load;
- `references.parquet`: IMG_ID, LAT, LON (float64), SHA256 and the source's optional columns, in the same order;
- `skipped.parquet`: each input left out (name, reason);
- `thumbnails.parquet` (only when asked for): IMG_ID and a small JPEG re-drawn from pixels (no EXIF);
- `index.faiss` (sets above `INDEX_ABOVE` references): the approximate index (`geocore.models.ann_index`).
Every file is written atomically; a build writes its manifest with `complete: false` first and the final
manifest last, so a killed build never reads as a complete set, and `load_reference_set` refuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from geocore.data.safe_io import atomic_path, write_text_atomic
from geocore.errors import InputError
from geocore.geo.distance import haversine_km
from geocore.models.ann_index import AnnIndex, nlist_for
from geocore.models.base import GeoLocator
from geocore.refs.embed import embedding_kind, model_fingerprint

FORMAT = "geocore-references"
VERSION = 1
MANIFEST, EMBEDDINGS, TABLE, SKIPPED, THUMBNAILS, INDEX = (
    "manifest.json", "embeddings.npy", "references.parquet", "skipped.parquet", "thumbnails.parquet", "index.faiss")
INDEX_ABOVE = 50_000  # references searched through the FAISS index above this (bench/bench_refs.py, "Search")
INDEX_NPROBE_SHARE = 4  # lists searched: 1/4 of them (recall@10 >= 0.99 in the bench, where 1/8 was not)
NULL_KM = 2500.0  # references this far apart are unrelated: their similarities make the null distribution
CHANCE_SAMPLE = 2_000  # references whose best unrelated look-alike is measured


@dataclass
class ReferenceSet:
    """Geotagged reference photos embedded by one model: `table` (IMG_ID, LAT, LON, SHA256, extras), `embeddings`
    (N, D) float16 unit rows in table order, `skipped` (name, reason) and the `manifest`."""

    manifest: dict
    table: pd.DataFrame
    embeddings: np.ndarray
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"name": [], "reason": []}))
    path: Path | None = None
    index: AnnIndex | None = None
    thumbnails: dict[str, bytes] | None = None
    _sha_positions: dict[str, np.ndarray] | None = field(default=None, repr=False)
    excluded: np.ndarray | None = field(default=None, repr=False)  # positions no query may see (benchmark photos)
    _set_fingerprint: str | None = field(default=None, repr=False)

    def excluding(self, positions) -> "ReferenceSet":
        """This set with the references at `positions` hidden from every query (e.g. the photos of a benchmark
        being evaluated); embeddings and index are shared, not copied."""
        from dataclasses import replace

        hidden = np.unique(np.asarray(positions, np.int64))
        return replace(self, excluded=hidden if hidden.size else None)

    def overlap(self, ids, sha256s) -> np.ndarray:
        """Positions of the references that ARE one of these photos: the same IMG_ID or the same file (SHA-256)."""
        by_id = np.flatnonzero(self.table["IMG_ID"].astype(str).isin({str(i) for i in ids}).to_numpy())
        where = self.sha256_positions()
        by_sha = [where[s] for s in set(sha256s) if s in where]
        return np.unique(np.concatenate([by_id, *by_sha])).astype(np.int64) if len(by_id) or by_sha else \
            np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def latlon(self) -> np.ndarray:
        """(N, 2) float64 (lat, lon) of the references."""
        return self.table[["LAT", "LON"]].to_numpy(np.float64)

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def set_fingerprint(self) -> str:
        """16 hex characters naming this set's content (the model's fingerprint and every reference's ID, GPS and
        file hash), so a calibration can record which set it was fitted with. References hidden by `excluding`
        (an evaluation's own photos) do not change it: the calibration is for the set as the analyst uses it.
        Computed once per set."""
        if self._set_fingerprint is None:
            import hashlib

            h = hashlib.sha256(self.fingerprint.encode())
            cols = self.table[["IMG_ID", "LAT", "LON", "SHA256"]].astype({"IMG_ID": str, "SHA256": str})
            h.update(pd.util.hash_pandas_object(cols, index=False).to_numpy().tobytes())
            self._set_fingerprint = h.hexdigest()
        return self._set_fingerprint[:16]

    def sha256_positions(self) -> dict[str, np.ndarray]:
        """SHA-256 → positions of the references holding that file (made once per set)."""
        if self._sha_positions is None:
            self._sha_positions = self.table.groupby(self.table["SHA256"].astype(str), sort=False).indices
        return self._sha_positions

    def thumbnail(self, img_id: str) -> bytes | None:
        """The stored JPEG thumbnail of `img_id` (None when the set keeps none)."""
        return None if self.thumbnails is None else self.thumbnails.get(str(img_id))

    def check_model(self, model: GeoLocator) -> None:
        """InputError unless this set was made by `model` (same name, weights and embedding)."""
        m = self.manifest
        if model.model_name != m["model"]:
            raise InputError(f"reference set {self._where()} was built with model '{m['model']}', not "
                             f"'{model.model_name}'; build one with '{model.model_name}'")
        if embedding_kind(model) != m["embedding"]:
            raise InputError(f"reference set {self._where()} holds {m['embedding']} embeddings, not "
                             f"{embedding_kind(model)}; build it again with this model")
        fp = model_fingerprint(model)
        if fp != m["fingerprint"]:
            raise InputError(f"reference set {self._where()} was built with other weights of '{m['model']}' "
                             f"(fingerprint {m['fingerprint']}, not {fp}); build it again with these weights")

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "(in memory)"


def chance_similarity(latlon: np.ndarray, emb: np.ndarray, seed: int = 0) -> tuple[float, int]:
    """How similar the best unrelated look-alike in this set typically is: over a sample of references, the median
    of each one's highest similarity to references at least NULL_KM away (all others when none lie that far), and
    how many references were sampled. Fusion counts a neighbour only as far as it beats this."""
    n = len(latlon)
    if n < 2:
        return 0.0, 0
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, CHANCE_SAMPLE), replace=False))
    best = np.full(len(rows), -np.inf)
    q = emb[rows].astype(np.float32)
    for start in range(0, n, 65_536):  # blocks of references: bounded memory for big sets
        block = np.asarray(emb[start:start + 65_536], dtype=np.float32)
        sims = q @ block.T
        far = haversine_km(latlon[rows][:, None], latlon[None, start:start + len(block)]) >= NULL_KM
        if not far.any(1).all():  # a reference with nothing far away: any other one counts
            far |= ~far.any(1, keepdims=True) & (rows[:, None] != np.arange(start, start + len(block))[None])
        best = np.maximum(best, np.where(far, sims, -np.inf).max(1))
    best = best[np.isfinite(best)]
    return (float(np.median(best)), int(len(best))) if len(best) else (0.0, 0)


def new_manifest(model: GeoLocator, dim: int, source: str) -> dict:
    """The manifest of a build starting now (`complete` false, no count yet)."""
    from geocore import __version__

    return {"format": FORMAT, "version": VERSION, "model": model.model_name, "fingerprint": model_fingerprint(model),
            "embedding": embedding_kind(model), "dim": int(dim), "count": 0, "complete": False,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source": source,
            "geocore": __version__, "random_backbone": bool(model.random_backbone), "chance_similarity": 0.0,
            "chance_sample": 0, "thumbnails": False, "index": None, "skipped": 0}


def write_manifest(folder: Path, manifest: dict) -> None:
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2))


def save_reference_set(refs: ReferenceSet, folder: str | Path, *, index_above: int = INDEX_ABOVE,
                       progress: bool = True) -> ReferenceSet:
    """Write `refs` to `folder` (manifest first as incomplete, data files, then the complete manifest), with the
    FAISS index when it holds more than `index_above` references. Returns the set as saved (with its index)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = dict(refs.manifest, complete=False)
    write_manifest(folder, manifest)
    emb = np.ascontiguousarray(refs.embeddings, dtype=np.float16)
    with atomic_path(folder / EMBEDDINGS) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
    for name, frame in ((TABLE, refs.table), (SKIPPED, refs.skipped)):
        with atomic_path(folder / name) as tmp:
            frame.to_parquet(tmp, index=False)
    (folder / THUMBNAILS).unlink(missing_ok=True)
    if refs.thumbnails is not None:
        thumbs = pd.DataFrame({"IMG_ID": list(refs.thumbnails), "JPEG": list(refs.thumbnails.values())})
        with atomic_path(folder / THUMBNAILS) as tmp:
            thumbs.to_parquet(tmp, index=False)
    (folder / INDEX).unlink(missing_ok=True)
    index = None
    if len(emb) > index_above:
        import torch

        nlist = nlist_for(len(emb))
        index = AnnIndex.build(torch.from_numpy(emb), nlist, max(16, nlist // INDEX_NPROBE_SHARE), progress=progress)
        index.save(folder / INDEX)
    manifest.update(count=int(len(emb)), dim=int(emb.shape[1]), thumbnails=refs.thumbnails is not None,
                    skipped=int(len(refs.skipped)), complete=True,
                    index=None if index is None else {"kind": "IVF-SQ8", "nprobe": index.nprobe})
    write_manifest(folder, manifest)
    return ReferenceSet(manifest, refs.table, emb, refs.skipped, folder, index, refs.thumbnails)


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise InputError(f"{folder}: no such reference set (expected a folder made by build_reference_set)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{folder}: not a reference set, or its build never finished (no {MANIFEST}); "
                         "build it again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InputError(f"{path}: unreadable manifest ({type(err).__name__}); build the set again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a geocore reference-set manifest (format {FORMAT!r} expected)")
    if data.get("version") != VERSION:
        raise InputError(f"{path}: reference-set format version {data.get('version')!r}, expected {VERSION}; "
                         "build the set again with this geocore")
    needed = ("model", "fingerprint", "embedding", "dim", "count", "complete", "chance_similarity")
    missing = [k for k in needed if k not in data]
    if missing:
        raise InputError(f"{path}: field '{missing[0]}' is missing; build the set again")
    if data["complete"] is not True:
        raise InputError(f"{folder}: incomplete reference set (its build was interrupted or failed); run the build "
                         "again with resume to finish it")
    return data


def load_reference_set(path: str | Path, model: GeoLocator | None = None) -> ReferenceSet:
    """Open a reference set (embeddings memory-mapped); with `model`, refuse a set made by another model, other
    weights or another embedding size. InputError in one line for anything wrong."""
    folder = Path(path)
    manifest = _read_manifest(folder)
    try:
        emb = np.load(folder / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
        table = pd.read_parquet(folder / TABLE)
        skipped = pd.read_parquet(folder / SKIPPED)
    except (OSError, ValueError) as err:
        raise InputError(f"{folder}: a data file is missing or unreadable ({type(err).__name__}); build the set "
                         "again") from None
    if emb.dtype != np.float16 or emb.ndim != 2 or emb.shape != (manifest["count"], manifest["dim"]) \
            or len(table) != manifest["count"]:
        raise InputError(f"{folder}: the files do not match the manifest ({manifest['count']} × {manifest['dim']} "
                         f"expected, embeddings {emb.shape}, table {len(table)} rows); build the set again")
    thumbs = None
    if manifest.get("thumbnails"):
        t = pd.read_parquet(folder / THUMBNAILS)
        thumbs = dict(zip(t["IMG_ID"].astype(str), t["JPEG"]))
    index = None
    if manifest.get("index"):
        index = AnnIndex.load(folder / INDEX, len(emb), emb.shape[1], int(manifest["index"]["nprobe"]))
        if index is None:
            raise InputError(f"{folder}: its index file is missing or unreadable; build the set again")
    refs = ReferenceSet(manifest, table, emb, skipped, folder, index, thumbs)
    if model is not None:
        refs.check_model(model)
    return refs
