"""A reference set built in memory from photos the user hands over (e.g. uploads in the app): GPS from each
photo's EXIF, embedded by the model's image tower, never written anywhere. For a few hundred photos; larger sets
are built once with `geocore refs build`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from geocore.data.images import image_bytes_digest, load_image, read_exif_gps
from geocore.errors import ImageError, InputError
from geocore.models.base import GeoLocator
from geocore.refs.build import photo_transform, thumbnail_jpeg
from geocore.refs.embed import reference_embeddings
from geocore.refs.store import ReferenceSet, chance_similarity, new_manifest
from geocore.tensors import as_numpy

MAX_IN_MEMORY = 2_000  # photos: beyond this, build the set once with `geocore refs build`


def reference_set_from_photos(model: GeoLocator, photos: Sequence[tuple[str, bytes]], *, thumbnails: bool = True,
                              batch_size: int = 16) -> ReferenceSet:
    """A reference set of `photos` (name, file bytes) located by their EXIF GPS. Photos without GPS or that cannot
    be read are listed in `skipped` (name, reason); InputError when none is usable. Thumbnails (re-drawn from
    pixels) are kept in memory for the strip of similar photos."""
    if len(photos) > MAX_IN_MEMORY:
        raise InputError(f"{len(photos):,} reference photos: at most {MAX_IN_MEMORY:,} are built in memory; "
                         "build a set with `geocore refs build` instead")
    names, gps, shas, pixels, thumbs, skipped = [], [], [], [], {}, []
    prepare = photo_transform(model)
    for name, data in photos:
        try:
            where = read_exif_gps(data, name=name)
            if where is None:
                skipped.append((name, "no GPS position in its EXIF"))
                continue
            image = load_image(data, name=name)
        except ImageError as err:
            skipped.append((name, str(err)))
            continue
        names.append(str(name))
        gps.append(where)
        shas.append(image_bytes_digest(data))
        pixels.append(prepare(image))
        if thumbnails:
            thumbs[str(name)] = thumbnail_jpeg(image)
    if not names:
        raise InputError("none of the reference photos has a readable image with EXIF GPS"
                         + (f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    model = model.eval()
    with torch.no_grad():
        emb = as_numpy(torch.cat([reference_embeddings(model, torch.stack(pixels[s:s + batch_size]).to(model.device))
                                  for s in range(0, len(pixels), batch_size)]).half())
    latlon = np.asarray(gps, np.float64)
    table = pd.DataFrame({"IMG_ID": names, "LAT": latlon[:, 0], "LON": latlon[:, 1], "SHA256": shas})
    manifest = new_manifest(model, emb.shape[1], f"{len(names)} photos held in memory")
    manifest["chance_similarity"], manifest["chance_sample"] = chance_similarity(latlon, emb)
    manifest.update(count=len(names), complete=True, thumbnails=thumbnails)
    return ReferenceSet(manifest, table, emb, pd.DataFrame(skipped, columns=["name", "reason"]), None, None,
                        thumbs if thumbnails else None)
