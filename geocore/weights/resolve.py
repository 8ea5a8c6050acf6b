"""Find pretrained weights on this machine, never touching the network.

Order: an explicit file or folder → `$GEOCORE_WEIGHTS_DIR` → the Hugging Face cache
(`huggingface_hub.try_to_load_from_cache`, which only reads the local cache).
"""

from __future__ import annotations

from pathlib import Path

from geocore.errors import WeightsMissingError
from geocore.weights.paths import hf_hub_cache, weights_dir
from geocore.weights.sources import WeightsSource, download_command, source_for_open_clip

_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _in_folder(folder: Path, filenames: tuple[str, ...]) -> Path | None:
    for fn in filenames:
        if (folder / fn).is_file():
            return folder / fn
    return None


def _all_filenames(src: WeightsSource) -> tuple[str, ...]:
    return src.filenames + tuple(fn for _, fn in src.alternates)


def find_in_weights_dir(src: WeightsSource) -> Path | None:
    """`$GEOCORE_WEIGHTS_DIR/<name>/<file>` or `$GEOCORE_WEIGHTS_DIR/<name>.<ext>`, if present."""
    root = weights_dir()
    if root is None:
        return None
    hit = _in_folder(root / src.name, _all_filenames(src))
    return hit or _in_folder(root, tuple(src.name + s for s in _SUFFIXES))


def find_in_hf_cache(src: WeightsSource) -> Path | None:
    """The cached Hub file for `src` (or one of its alternates), if the HF cache holds it."""
    from huggingface_hub import try_to_load_from_cache  # reads the cache folder only

    cache = hf_hub_cache()
    if not cache.is_dir():
        return None
    pairs = [(src.repo_id, fn) for fn in src.filenames] + list(src.alternates)
    for repo_id, fn in pairs:
        hit = try_to_load_from_cache(repo_id, fn, cache_dir=cache)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def find_local(src: WeightsSource) -> Path | None:
    """Where `src` is on this machine (weights dir first, then HF cache), or None."""
    return find_in_weights_dir(src) or find_in_hf_cache(src)


def looked_in(src: WeightsSource) -> str:
    """Human-readable list of the places `find_local` searches."""
    root = weights_dir()
    wd = f"GEOCORE_WEIGHTS_DIR={root / src.name}" if root else "GEOCORE_WEIGHTS_DIR (not set)"
    return f"{wd} and the Hugging Face cache {hf_hub_cache()} ({src.repo_id})"


def resolve_clip_checkpoint(model_name: str, tag: str, weights: str | Path | None = None) -> Path:
    """Local checkpoint file for open_clip `model_name`/`tag`, or WeightsMissingError saying how to get it."""
    src = source_for_open_clip(model_name, tag)
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            names = _all_filenames(src) if src else ()
            hit = _in_folder(path, names) or next(
                (p for s in _SUFFIXES for p in sorted(path.glob(f"*{s}"))), None
            )
            if hit:
                return hit
            raise WeightsMissingError(f"no checkpoint file ({', '.join(_SUFFIXES)}) in weights folder {path}")
        raise WeightsMissingError(f"weights file {path} does not exist")
    if src is None:
        raise WeightsMissingError(
            f"geocore has no entry for open_clip {model_name}/{tag}; pass weights=PATH to a local checkpoint"
        )
    hit = find_local(src)
    if hit is not None:
        return hit
    size = f", ~{src.size_mb / 1000:.1f} GB" if src.size_mb else ""
    raise WeightsMissingError(
        f"CLIP backbone weights {src.name!r} (open_clip {model_name}/{tag}{size}) not found; looked in "
        f"{looked_in(src)}; get them with: {download_command(src.name)}"
    )
