"""`build_reference_set`: embed geotagged photos on the project's predict loop (`geocore.runtime.predict_loop`: one
CPU, GPUs, nodes; per-rank part files, resumable) and store them as a reference set (`geocore.refs.store`).

Each photo is read once: its bytes are hashed (SHA-256, so a query never finds itself) and decoded by the safe
loader (`geocore.data.images`); decoding runs in the DataLoader's workers. A photo that cannot be read joins
`skipped` with the loader's one-line reason. Parts live in `<output>.parts/` with `build.json` (model fingerprint
and the source listing): `resume=True` carries on a killed build of the same photos with the same model, on any
number of ranks; anything else starts afresh. The set is written only when every photo has been processed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import Dataset

from geocore.data.images import image_bytes_digest, load_image, source_bytes
from geocore.data.safe_io import write_text_atomic
from geocore.data.shards import ShardMember
from geocore.errors import ImageError, InputError
from geocore.models.base import GeoLocator
from geocore.refs.embed import model_fingerprint, reference_embeddings
from geocore.refs.inputs import read_source
from geocore.tensors import as_numpy
from geocore.refs.store import (INDEX_ABOVE, ReferenceSet, chance_similarity, new_manifest, save_reference_set,
                                write_manifest)

THUMB_SIDE = 160  # px, the longer side of a stored thumbnail
THUMB_QUALITY = 80


def thumbnail_jpeg(image: Image.Image, side: int = THUMB_SIDE) -> bytes:
    """A small JPEG re-drawn from the pixels alone (no EXIF, ICC or comment can survive)."""
    small = image.copy()
    small.thumbnail((side, side))
    buf = io.BytesIO()
    Image.fromarray(np.asarray(small.convert("RGB"))).save(buf, format="JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


class _Photos(Dataset):
    """(position, IMG_ID, path) → (position, sha256, prepared pixels, thumbnail, error): read and decoded here,
    in the DataLoader's workers."""

    def __init__(self, items: list[tuple[int, str, Path]], prepare: Any, thumbnails: bool) -> None:
        self.items, self.prepare, self.thumbnails = items, prepare, thumbnails

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        pos, name, path = self.items[i]
        try:
            data = path.read(name) if isinstance(path, ShardMember) else source_bytes(path, name=name)
            image = load_image(data, name=name)
        except ImageError as err:
            return pos, None, None, None, str(err)
        thumb = thumbnail_jpeg(image) if self.thumbnails else None
        return pos, image_bytes_digest(data), self.prepare(image), thumb, None


def photo_transform(model: GeoLocator):
    """PIL photo → what the model's image tower takes (`GeoLocator.input_transform`)."""
    return model.input_transform(False)


def _rows(net: GeoLocator, batch: list[tuple]) -> dict[str, pd.DataFrame]:
    from geocore.models.views import batch_inputs

    ok = [b for b in batch if b[4] is None]
    failed = pd.DataFrame({"_pos": [b[0] for b in batch if b[4] is not None],
                           "reason": [b[4] for b in batch if b[4] is not None]})
    part = None
    if ok:
        pixels, _ = batch_inputs([b[2] for b in ok], net.device)
        emb = as_numpy(reference_embeddings(net, pixels).half())
        part = pd.DataFrame({"_pos": [b[0] for b in ok], "SHA256": [b[1] for b in ok],
                             "emb": [row.tobytes() for row in emb], "thumb": [b[3] or b"" for b in ok]})
    return {"part": part, "failed": failed}


def _listing_key(items: pd.DataFrame, fingerprint: str, thumbnails: bool) -> str:
    h = hashlib.sha256(f"{fingerprint}|{thumbnails}".encode())
    h.update(pd.util.hash_pandas_object(items[["IMG_ID", "LAT", "LON"]], index=False).to_numpy().tobytes())
    return h.hexdigest()


def _read_parts(parts: Path, kind: str) -> pd.DataFrame:
    """Every readable part of `kind`; a torn one is removed (its photos are processed again)."""
    frames = []
    for p in sorted(parts.glob(f"{kind}-*.parquet")):
        try:
            frames.append(pd.read_parquet(p))
        except (OSError, ValueError):
            p.unlink(missing_ok=True)
    return pd.concat(frames, ignore_index=True).drop_duplicates("_pos") if frames else pd.DataFrame({"_pos": []})


def build_reference_set(
    model: GeoLocator,
    source: str | Path,
    *,
    output: str | Path,
    images: str | Path | None = None,
    thumbnails: bool = False,
    resume: bool = False,
    batch_size: int = 32,
    progress: bool = True,
    accelerator: str | None = None,
    devices: int | None = None,
    num_nodes: int | None = None,
    strategy: str | None = None,
    device: str | None = None,
    precision: str = "fp32",
    num_workers: int = 0,
    index_above: int = INDEX_ABOVE,
    on_batch: Any = None,
) -> ReferenceSet | None:
    """Embed the geotagged photos of `source` (a CSV IMG_ID,LAT,LON[,…] with the `images` folder, a folder of
    photos with EXIF GPS, or local WebDataset shards: a `.tar` or a pattern such as `shards-{000..009}.tar`, IMG_ID
    the sample key) with `model` and write the reference set to `output` (a folder).

    thumbnails: also keep a small JPEG of each photo, re-drawn from pixels (off by default: a reference set then
    holds no picture of anyone's photos). resume: carry on a killed build of the same source with the same model.
    The loop options (accelerator, devices, num_nodes, strategy, device, precision, num_workers, batch_size per
    device) are `geocore evaluate`'s. Returns the set on rank 0 (None on the others); its `skipped` lists every
    input left out and why. InputError when no photo is usable or a rank left photos unprocessed (resume then).
    """
    from geocore.runtime.predict_loop import BatchPredictor, loader_for, loop_options, predict_to_parts
    from geocore.runtime.parts import parts_dir

    opts = loop_options(device=device, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                        strategy=strategy, precision=precision, batch_size=batch_size, num_workers=num_workers,
                        progress=progress)  # checked before any file is touched
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder (a reference set is a folder)")
    src = read_source(source, images)
    model = model.eval()
    fingerprint = model_fingerprint(model)
    parts = parts_dir(output)
    key = _listing_key(src.items, fingerprint, thumbnails)
    stamp = parts / "build.json"
    if resume and stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("key") != key:
        raise InputError(f"{parts}: the unfinished build there is of other photos or another model; "
                         "run without resume to start again")
    if not resume or not stamp.is_file():
        shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stamp, json.dumps({"key": key}))
    output.mkdir(parents=True, exist_ok=True)
    write_manifest(output, new_manifest(model, 0, src.description))  # the old set, if any, no longer reads whole
    done = set(_read_parts(parts, "part")["_pos"]) | set(_read_parts(parts, "failed")["_pos"])
    todo = [(i, img_id, path) for i, (img_id, path) in enumerate(zip(src.items["IMG_ID"], src.items["path"]))
            if i not in done]

    def merge() -> ReferenceSet:
        return _merge(model, src, parts, output, thumbnails, index_above, opts.progress)

    module = BatchPredictor(model, _rows, opts.precision)
    loader = loader_for(_Photos(todo, photo_transform(model), thumbnails), opts, list)
    if not todo:
        return merge()
    return predict_to_parts(module, loader, output, opts, merge, on_batch=on_batch)


def _merge(model: GeoLocator, src, parts: Path, output: Path, thumbnails: bool, index_above: int,
           progress: bool) -> ReferenceSet:
    ok, failed = _read_parts(parts, "part"), _read_parts(parts, "failed")
    unfinished = len(src.items) - len(set(ok["_pos"]) | set(failed["_pos"]))
    if unfinished:
        raise InputError(f"{output}: {unfinished} photos have no embedding yet (a rank failed or its parts are not "
                         "visible); run the build again with resume")
    ok = ok.sort_values("_pos")
    pos = ok["_pos"].to_numpy(np.int64)
    if not len(pos):
        raise InputError(f"{src.description}: none of the {len(src.items) + len(src.skipped)} inputs gave a usable "
                         "geotagged photo (see the reasons: "
                         + "; ".join(list(src.skipped["reason"][:2]) + list(failed.get("reason", [])[:2])) + ")")
    emb = np.frombuffer(b"".join(ok["emb"]), dtype=np.float16).reshape(len(pos), -1)
    items = src.items.iloc[pos].reset_index(drop=True)
    table = pd.concat([items[["IMG_ID", "LAT", "LON"]], pd.DataFrame({"SHA256": ok["SHA256"].to_numpy()}),
                       items[src.extra_columns]], axis=1)
    failed = failed.sort_values("_pos") if len(failed) else pd.DataFrame({"_pos": [], "reason": []})
    skipped = pd.concat([src.skipped, pd.DataFrame({"name": src.items["IMG_ID"].iloc[failed["_pos"].astype(int)]
                                                    .astype(str).to_numpy(), "reason": failed["reason"].astype(str)})],
                        ignore_index=True)
    manifest = new_manifest(model, emb.shape[1], src.description)
    manifest["chance_similarity"], manifest["chance_sample"] = chance_similarity(table[["LAT", "LON"]]
                                                                                 .to_numpy(float), emb)
    thumbs = dict(zip(table["IMG_ID"].astype(str), ok["thumb"])) if thumbnails else None
    refs = ReferenceSet(manifest, table, emb, skipped, output, None, thumbs)
    saved = save_reference_set(refs, output, index_above=index_above, progress=progress)
    shutil.rmtree(parts, ignore_errors=True)
    return saved
