"""Where geocore keeps things on disk: its cache, a user weights folder, and the Hugging Face cache.

Every path is read from the environment at call time (not import time), so tests and users can
change `GEOCORE_CACHE_DIR`, `GEOCORE_WEIGHTS_DIR`, `HF_HOME`, `HF_HUB_CACHE` or `HF_HUB_OFFLINE`
in a running process.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from geocore.errors import WeightsMissingError

_TRUE = {"1", "true", "yes", "on"}


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def cache_dir() -> Path:
    """geocore's own cache (gallery embeddings, ...): `$GEOCORE_CACHE_DIR` or `~/.cache/geocore`."""
    env = os.environ.get("GEOCORE_CACHE_DIR")
    return Path(env).expanduser() if env else _xdg_cache() / "geocore"


def weights_dir() -> Path | None:
    """The user's weights folder `$GEOCORE_WEIGHTS_DIR`, or None when it is not set."""
    env = os.environ.get("GEOCORE_WEIGHTS_DIR")
    return Path(env).expanduser() if env else None


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it (`HF_HUB_CACHE`, `HF_HOME`/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else _xdg_cache() / "huggingface") / "hub"


def hf_offline() -> bool:
    """True when `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) asks for no network at all."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def geoclip_package_dir() -> Path:
    """Folder of the installed `geoclip` wheel (heads and gallery), located without importing it."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissingError(
            "the GeoCLIP heads ship in the `geoclip` package, which is not installed; install it with "
            "`pip install geoclip==1.3.0`"
        )
    return Path(next(iter(spec.submodule_search_locations)))
