"""Find pretrained weights on this machine, never touching the network.

Order: an explicit file or folder → `$GEOCORE_WEIGHTS_DIR` → the Hugging Face cache
(`huggingface_hub.try_to_load_from_cache`, which only reads the local cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geocore.errors import InputError, WeightsMissingError
from geocore.weights.paths import hf_hub_cache, weights_dir
from geocore.weights.sources import SOURCES, WeightsSource, download_command, source_for_open_clip

_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class PretrainedRef:
    """What a `pretrained=` value names. kind: "none" (random init), "tag" (named weights such as
    "openai" or "imagenet", found locally by name), "file" (a checkpoint file) or "folder" (a weights folder)."""

    kind: str
    value: str | None = None

    @property
    def path(self) -> Path:
        return Path(str(self.value)).expanduser()


def parse_pretrained(pretrained: str | Path | None) -> PretrainedRef:
    """The one place that decides whether `pretrained` is nothing, a tag, a file or a folder.

    A value that looks like a path (a separator, or a checkpoint suffix) but does not exist is an InputError.
    """
    if pretrained is None or str(pretrained).strip() == "":
        return PretrainedRef("none")
    text = str(pretrained)
    path = Path(text).expanduser()
    if path.is_dir():
        return PretrainedRef("folder", text)
    if path.is_file():
        return PretrainedRef("file", text)
    if isinstance(pretrained, Path) or "/" in text or "\\" in text or path.suffix in _SUFFIXES:
        raise InputError(f"pretrained checkpoint {text} does not exist")
    return PretrainedRef("tag", text)


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


def snapshot_folder_ok(folder: Path, src: WeightsSource) -> bool:
    """True when `folder` holds a usable transformers snapshot: config.json and one weights file.

    Other `snapshot_files` (the preprocessor config) are optional: loaders fall back to defaults.
    """
    return (folder / "config.json").is_file() and _in_folder(folder, src.filenames) is not None


def find_snapshot(src: WeightsSource) -> Path | None:
    """Folder of an "hf-snapshot" source: `$GEOCORE_WEIGHTS_DIR/<name>/`, else its HF cache snapshot."""
    root = weights_dir()
    if root is not None and snapshot_folder_ok(root / src.name, src):
        return root / src.name
    from huggingface_hub import try_to_load_from_cache  # reads the cache folder only

    cache = hf_hub_cache()
    if not cache.is_dir():
        return None
    config = try_to_load_from_cache(src.repo_id, "config.json", cache_dir=cache)
    if isinstance(config, str) and snapshot_folder_ok(Path(config).parent, src):
        return Path(config).parent
    return None


def find_local(src: WeightsSource) -> Path | None:
    """Where `src` is on this machine (weights dir first, then HF cache), or None.

    A file for kind "hf", the snapshot folder for kind "hf-snapshot".
    """
    if src.kind == "hf-snapshot":
        return find_snapshot(src)
    return find_in_weights_dir(src) or find_in_hf_cache(src)


def resolve_snapshot(name: str, weights: str | Path | None = None) -> Path:
    """Local folder of "hf-snapshot" weights `name` (or the explicit folder `weights`), never the network;
    WeightsMissingError saying how to get them otherwise."""
    src = SOURCES.get(name)
    if src is None or src.kind != "hf-snapshot":
        known = ", ".join(n for n, s in SOURCES.items() if s.kind == "hf-snapshot")
        raise InputError(f"unknown model weights {name!r}; known: {known}")
    if weights is not None:
        folder = Path(weights).expanduser()
        if not folder.is_dir() or not snapshot_folder_ok(folder, src):
            raise WeightsMissingError(f"{folder} is not a transformers folder (needs config.json and one of "
                                      f"{', '.join(src.filenames)})")
        return folder
    hit = find_snapshot(src)
    if hit is not None:
        return hit
    size = f", ~{src.size_mb:.0f} MB" if src.size_mb else ""
    raise WeightsMissingError(f"{src.name} weights ({src.repo_id}{size}) not found; looked in {looked_in(src)}; "
                              f"get it with: {download_command(src.name)}")


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


def resolve_timm_weights(name: str) -> Path:
    """Local file of timm's pretrained weights for backbone `name`, from the HF cache only; WeightsMissingError
    naming the download command if absent."""
    import timm
    from huggingface_hub import try_to_load_from_cache  # reads the cache folder only

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as err:
        raise InputError(f"backbone {name!r}: {err}") from None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise WeightsMissingError(f"timm has no Hugging Face weights for backbone {name!r}; use pretrained=None")
    cache = hf_hub_cache()
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for fn in names if cache.is_dir() else []:
        hit = try_to_load_from_cache(repo, fn, cache_dir=cache)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    raise WeightsMissingError(f"ImageNet weights for backbone {name} are not in the Hugging Face cache {cache}; "
                              f"get them with `hf download {repo}`, or use pretrained=None")
