"""Start-up: what each command imports. A missing-weights error needs no torch; locating with GeoCLIP needs
neither lightning, geopandas, faiss nor the cell models' modules (timm arrives with open_clip itself)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from geocore.errors import WeightsMissingError
from geocore.weights.preflight import check_default_weights

HEAVY = ("torch", "open_clip", "timm", "lightning", "pytorch_lightning", "geopandas", "faiss", "transformers")
GEOCORE_CELL_MODULES = ("geocore.models.translocator", "geocore.models.geodecoder", "geocore.models.vit_backbone",
                        "geocore.models.segmenter")


def _run_cli(args: list[str], env: dict[str, str]) -> tuple[int, list[str], str]:
    """Run `geocore ARGS` in a fresh interpreter; (exit code, modules of interest imported, stderr)."""
    watched = HEAVY + GEOCORE_CELL_MODULES
    code = ("import json, sys; from geocore.cli.main import main; rc = main(sys.argv[1:]); "
            f"print(json.dumps([rc, [m for m in {watched!r} if m in sys.modules]]))")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    rc, mods = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, mods, proc.stderr


@pytest.fixture
def no_weights_env(tmp_path):
    """An environment where no CLIP weights can be found (empty weights dir and Hugging Face cache)."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "hf").mkdir()
    return {"GEOCORE_WEIGHTS_DIR": str(tmp_path / "weights"), "HF_HUB_CACHE": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype("uint8")).save(path)
    return path


def test_preflight_names_missing_clip_weights(monkeypatch, tmp_path, no_weights_env):
    for k, v in no_weights_env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(WeightsMissingError, match="geocore weights download clip-vit-l-14"):
        check_default_weights("geoclip", None)
    with pytest.raises(WeightsMissingError, match="geocore train translocator"):
        check_default_weights("translocator", None)
    check_default_weights("geoclip", str(tmp_path / "ckpt.safetensors"))  # named weights: checked when loaded
    check_default_weights("geoclip-tiny", None)  # random backbone, heads in the wheel


def test_preflight_agrees_with_the_model_builder(monkeypatch, no_weights_env):
    """The early message is the one building the model would raise."""
    from geocore.models.registry import load_model_for_user

    for k, v in no_weights_env.items():
        monkeypatch.setenv(k, v)
    for name in ("geoclip", "translocator"):
        with pytest.raises(WeightsMissingError) as early:
            check_default_weights(name, None)
        with pytest.raises(WeightsMissingError) as built:
            load_model_for_user(name)
        assert str(early.value) == str(built.value)


@pytest.mark.parametrize("command", [["locate"], ["text", "Kyoto"], ["explain", "--model", "geoclip", "--output", "cam.png"], ["report", "--output", "r.html"],
                                     ["evaluate", "--dataset", "x.csv", "--images", ".", "--output", "o.parquet"]])
def test_missing_weights_error_imports_no_torch(command, no_weights_env, photo):
    args = command + ([str(photo)] if command[0] in ("locate", "explain", "report") else [])
    rc, mods, err = _run_cli(args, no_weights_env)
    assert rc != 0 and "clip-vit-l-14" in err and "Traceback" not in err, err[-800:]
    assert mods == [], mods


def test_locate_with_geoclip_imports_no_lightning_geopandas_or_cell_models(photo, tmp_path):
    rc, mods, err = _run_cli(["locate", str(photo), "--model", "geoclip-tiny", "--grid-km", "2000", "--json"],
                             {"GEOCORE_CACHE_DIR": str(tmp_path / "cache")})
    assert rc == 0, err[-800:]
    assert {"torch", "open_clip"} <= set(mods)
    assert not set(mods) & {"lightning", "pytorch_lightning", "geopandas", "faiss", *GEOCORE_CELL_MODULES}, mods


def test_asking_for_one_model_imports_only_its_module():
    code = ("import sys; from geocore.models.registry import model_entry; model_entry('geoclip-tiny'); "
            f"print([m for m in {GEOCORE_CELL_MODULES!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-500:]


def test_list_models_still_lists_every_builtin():
    from geocore.models.registry import BUILTIN_MODELS, list_models

    assert set(BUILTIN_MODELS) <= set(list_models())
