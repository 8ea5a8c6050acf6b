"""The shared small pieces: tensors to numpy (`geocore.tensors`) and how numbers and places are written for people
(`geocore.present`), with known outputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from geocore.present import (NO_COUNTRY, REGION_STYLES, SEA, countries_text, km, km2, pct, place_label,
                             region_countries, region_label, region_style)
from geocore.tensors import as_numpy, on_cpu


def test_as_numpy_detaches_and_converts():
    x = torch.tensor([[1.5, 2.0]], requires_grad=True) * 2
    out = as_numpy(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.tolist() == [[3.0, 4.0]]
    assert as_numpy(x, np.float64).dtype == np.float64
    assert as_numpy(torch.tensor([1.0, 2.5], dtype=torch.bfloat16), np.float64).tolist() == [1.0, 2.5]  # no numpy bf16
    assert as_numpy(torch.tensor([3, 4])).dtype == np.int64


def test_as_numpy_takes_array_likes_as_they_are():
    arr = np.arange(3, dtype=np.float64)
    assert as_numpy(arr) is arr and as_numpy(arr, np.float64) is arr  # no copy where none is needed
    assert as_numpy([[1, 2]], np.float32).dtype == np.float32
    assert as_numpy(pd.Series([0.5, 1.0]), np.float64).tolist() == [0.5, 1.0]


def test_on_cpu():
    x = torch.ones(2, requires_grad=True) * 3
    out = on_cpu(x, torch.float64)
    assert out.dtype == torch.float64 and not out.requires_grad and out.device.type == "cpu"
    assert on_cpu([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_pct():
    assert pct(0.9) == "90 %" and pct(0.5) == "50 %" and pct(0.725) == "72.5 %" and pct(1) == "100 %"


def test_km2():
    assert km2(1_234_567.4) == "1,234,567 km²" and km2(12.6) == "13 km²" and km2(10) == "10 km²"
    assert km2(3.14159) == "3.14 km²" and km2(0.004) == "0.00 km²"
    assert km2(1234.0, unit=False) == "1,234"
    assert km2(float("nan")) == km2(float("inf")) == km2(None) == "—"


def test_km():
    assert km(1234.56) == "1,234.6 km" and km(1234.56, 0) == "1,235 km" and km(0) == "0.0 km"
    assert km(None) == km(float("nan")) == "—"


def test_countries_text():
    assert countries_text([]) == NO_COUNTRY == "none (sea)"
    assert countries_text(["France"]) == "France"
    assert countries_text(["France", "Spain", "Italy"], limit=3) == "France, Spain, Italy"
    assert countries_text(["France", "Spain", "Italy", "Germany", "Austria"], limit=2) == "France, Spain … and 3 more"
    assert countries_text([f"C{i}" for i in range(10)]) == "C0, C1, C2, C3, C4, C5, C6, C7 … and 2 more"  # 8 named


def test_region_countries_names_or_iso():
    region = SimpleNamespace(countries=["FRA", "ESP", "XKX"], country_names=["France", "Spain", ""])
    assert region_countries(region) == "France, Spain, XKX"  # a missing name: its ISO code
    assert region_countries(region, 2, iso=True) == "FRA, ESP … and 1 more"
    assert region_countries(SimpleNamespace(countries=[], country_names=[])) == NO_COUNTRY


def test_place_and_region_labels():
    assert place_label("Paris", "Île-de-France") == "Paris, Île-de-France"
    assert place_label("Paris", float("nan")) == "Paris"  # a missing cell of a table
    assert place_label(None, None) == place_label("", "") == SEA == "(sea)"
    assert region_label(float("nan")) == region_label(None) == SEA and region_label("Japan") == "Japan"


def test_region_styles():
    assert [s.colour for s in REGION_STYLES[:2]] == ["#1f4e9c", "#00a0a0"]  # 50 % blue, 90 % teal
    assert region_style(0).dash is None and region_style(1).dash == "7 5" and region_style(1).linestyle == "--"
    assert region_style(len(REGION_STYLES)) == REGION_STYLES[0]  # more regions than colours: they cycle


def test_no_hand_written_tensor_conversions_left_in_the_helpers_users():
    """`as_numpy` is the one place tensors become numpy in these modules."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "geocore"
    for rel in ("metrics.py", "viz.py", "uncertainty/regions.py", "uncertainty/calibration.py",
                "uncertainty/localizability.py", "geo/candidates.py", "models/views.py", "models/ann_index.py"):
        assert "detach().cpu()" not in (root / rel).read_text(encoding="utf-8"), rel


@pytest.mark.parametrize("name", ["geocore.tensors", "geocore.present"])
def test_cheap_to_import(name):
    """Neither module imports torch: every layer, and `geocore --help`, may use them."""
    import subprocess
    import sys

    code = f"import sys, {name}; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
