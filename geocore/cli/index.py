"""`geocore index`: embed a gallery and build its approximate index ahead of time (with progress bars), so the
first `geocore locate --gallery` on it answers at once."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from geocore.cli.locate import GALLERY_EXPECTED
from geocore.cli.options import GALLERY_MODEL_OPT, PRETRAINED_OPT
from geocore.data.safe_io import check_input_size
from geocore.data.text import terminal_text
from geocore.errors import InputError
from geocore.weights.preflight import check_default_weights


def index(
    gallery: Path = typer.Argument(..., help="CSV of candidate points (LAT,LON): the gallery to index."),
    model: str = GALLERY_MODEL_OPT,
    pretrained: str = PRETRAINED_OPT,
    mode: str = typer.Option("auto", "--index", help="auto (an index above 2M points), ivf (always) or exact (none)."),
) -> None:
    """Cache a gallery's location embeddings (float16 above 250K points) and, above the threshold, its FAISS index,
    beside each other in the cache folder (GEOCORE_CACHE_DIR); `locate --gallery` then reuses both."""
    from geocore.geo.gallery import gallery_from_csv
    from geocore.models.ann_index import check_mode, index_path, nlist_for
    from geocore.models.base import GalleryModel
    from geocore.models.registry import create_model, load_model_for_user

    check_mode(mode)
    check_input_size(gallery, GALLERY_EXPECTED)
    if model == "geoclip" and pretrained is None:
        # the released GeoCLIP's location encoder ships in the geoclip wheel, and the cache key is the encoder's
        # weights and the points: the random-backbone build caches exactly what `geoclip` reads, no CLIP needed
        net = create_model("geoclip-tiny")
    else:
        check_default_weights(model, pretrained)
        net = load_model_for_user(model, pretrained)
        if not isinstance(net, GalleryModel):
            raise InputError(f"index needs a GPS-gallery model (geoclip), not {model}")
    net.set_gallery(gallery_from_csv(gallery), index=mode)
    console = Console(stderr=True)
    net.gallery_embeddings()
    cache = net.gallery_cache
    console.print(f"{net.num_candidates():,} points: embeddings {cache.last_source} "
                  f"({'memory only' if cache.last_path is None else terminal_text(cache.last_path)})")
    if net.uses_index():
        built = net.gallery_index(progress=True)
        where = None if cache.last_path is None else index_path(cache.last_path, nlist_for(net.num_candidates()))
        size = f", {where.stat().st_size / 1e6:,.0f} MB" if where is not None and where.is_file() else ""
        console.print(f"approximate index of {built.ntotal:,} points: {terminal_text(where or 'memory only')}{size}")
    else:
        console.print("no approximate index: this gallery is scanned exactly (--index ivf builds one anyway)")


def register(app: typer.Typer) -> None:
    app.command("index")(index)
