"""`download_weights(name)`: the one place geocore touches the network, and only when asked.

Prints the size first, shows huggingface_hub's progress bar, and saves into `$GEOCORE_WEIGHTS_DIR/<name>/`
when that is set, else into the Hugging Face cache. Without a network it fails within seconds with one
line (short timeouts, no retries); with `HF_HUB_OFFLINE=1` it refuses at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from geocore.errors import GeocoreError, InputError
from geocore.weights.paths import hf_hub_cache, hf_offline, weights_dir
from geocore.weights.resolve import find_local
from geocore.weights.sources import SOURCES, WeightsSource
from geocore.weights.status import wheel_files

TIMEOUT_S = 5.0


def _offline_var() -> str:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return var
    return "HF_HUB_OFFLINE"


def _network_error(src: WeightsSource, err: BaseException) -> GeocoreError:
    detail = " ".join(str(err).split())[:160] or type(err).__name__
    return GeocoreError(
        f"could not download {src.name!r} from huggingface.co/{src.repo_id} ({type(err).__name__}: {detail}); "
        "check the network connection, or copy the file into $GEOCORE_WEIGHTS_DIR/" + src.name + "/"
    )


def _probe(src: WeightsSource) -> tuple[str, int | None]:
    """(filename, size in bytes) of the first candidate file the Hub has; one request each, no retries."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RemoteEntryNotFoundError

    last: Exception | None = None
    for fn in src.filenames:
        try:
            meta = get_hf_file_metadata(hf_hub_url(src.repo_id, fn), timeout=TIMEOUT_S, retry_on_errors=False)
            return fn, meta.size
        except (EntryNotFoundError, RemoteEntryNotFoundError) as err:
            last = err
    raise GeocoreError(f"none of {', '.join(src.filenames)} found in huggingface.co/{src.repo_id} ({last})")


def download_weights(name: str, progress: bool = True, echo: Callable[[str], None] = print) -> Path:
    """Download weights `name` (see `geocore.weights.sources.SOURCES`) and return the local file."""
    src = SOURCES.get(name)
    if src is None:
        raise InputError(f"unknown weights {name!r}; known: {', '.join(SOURCES)}")
    if src.kind == "wheel":
        folder = wheel_files(src)[0].parent
        echo(f"{name}: nothing to download, it ships in the {src.package} package ({folder})")
        return folder
    have = find_local(src)
    if have is not None:
        echo(f"{name}: already present at {have}")
        return have
    if hf_offline():
        var = _offline_var()
        raise GeocoreError(
            f"{var}=1 is set, so {name!r} cannot be downloaded; unset it (e.g. `env -u {var} "
            f"geocore weights download {name}`) and run again"
        )
    try:
        filename, size = _probe(src)
    except GeocoreError:
        raise
    except Exception as err:  # httpx/OSError/offline-mode errors: one line, no traceback
        raise _network_error(src, err) from None
    root = weights_dir()
    dest = root / src.name if root else hf_hub_cache()
    size_txt = f"{size / 1e6:,.0f} MB" if size else "size unknown"
    echo(f"downloading {name}: {src.repo_id}/{filename} ({size_txt}) into {dest}")

    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Quiet(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    kwargs = {"local_dir": dest} if root else {"cache_dir": dest}
    try:
        if src.kind == "hf-snapshot":  # a transformers folder: config files + the chosen weights file
            path = snapshot_download(src.repo_id, allow_patterns=[*src.snapshot_files, filename],
                                     etag_timeout=TIMEOUT_S, tqdm_class=None if progress else _Quiet, **kwargs)
        else:
            path = hf_hub_download(
                src.repo_id, filename, etag_timeout=TIMEOUT_S, tqdm_class=None if progress else _Quiet, **kwargs
            )
    except Exception as err:
        raise _network_error(src, err) from None
    echo(f"{name}: saved to {path}")
    return Path(path)
