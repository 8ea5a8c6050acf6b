"""Shared test fixtures. Tests never touch the network."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """`../shared/reference`: real published data (CI always has it)."""
    if not REFERENCE.is_dir():
        pytest.fail(f"{REFERENCE} is missing: the reference data must sit beside the repository")
    return REFERENCE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep geocore's on-disk caches inside the test session, never in the user's home."""
    monkeypatch.setenv("GEOCORE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "geocore-cache"))


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny models run fastest so, and the cores are shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def registered_tiny(name: str, grid_km: float | None = None, seed: int | None = None):
    """geoclip-tiny (over a `grid_km` grid when given) registered as `name` for the CLI: every command of a
    test module gets this one instance (so its random backbone is the same in each)."""
    from geocore.geo.gallery import grid_gallery
    from geocore.models.registry import create_model, register_model, unregister_model

    if seed is not None:
        import torch

        torch.manual_seed(seed)
    model = create_model("geoclip-tiny").eval()
    if grid_km is not None:
        model.set_gallery(grid_gallery(grid_km))
    register_model(name, description="geoclip-tiny (tests)", random_ok=True)(lambda pretrained=None, **_: model)
    try:
        yield model
    finally:
        unregister_model(name)
