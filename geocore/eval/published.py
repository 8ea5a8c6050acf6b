"""The papers' own numbers: accuracy within 1 / 25 / 200 / 750 / 2500 km as published, per benchmark.

One :class:`Published` row per (system, benchmark), each with where it was read. Rows marked ``checked`` were
read here from the paper texts in ``../shared/papers/`` (TransLocator, ECCV 2022, Table 1; GeoCLIP's NeurIPS 2023
poster, which reprints GeoDecoder's Im2GPS3k row); the others come from a public listing of papers' tables and
were not checked against the paper. `geocore score --papers` prints them beside a run.

Not here, because no source read for this table states them: GeoCLIP's own YFCC26k row, GeoDecoder's Im2GPS,
YFCC26k and YFCC4k rows in its own paper (the YFCC4k row below is a listing's), and OSV-5M results of these
systems.
"""

from __future__ import annotations

from dataclasses import dataclass

THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)  # the papers' street / city / region / country / continent

_TL = "TransLocator (Pramanick et al., ECCV 2022), Table 1"
_TL_BASE = _TL + ", baseline row"
_POSTER = "GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023) poster, Im2GPS3K table"
_LISTING = "the paper's table as listed by a public survey list of geo-localization results (not checked here)"


@dataclass(frozen=True)
class Published:
    """One system's published accuracy (%) on one benchmark, at `THRESHOLDS_KM`."""

    system: str
    venue: str
    dataset: str  # catalog name: im2gps3k, im2gps, yfcc4k, yfcc26k
    acc: tuple[float, float, float, float, float]
    source: str
    checked: bool  # read here from the paper text in ../shared/papers


def _rows(system: str, venue: str, source: str, checked: bool, **per_dataset) -> list[Published]:
    return [Published(system, venue, ds, tuple(acc), source, checked) for ds, acc in per_dataset.items()]


PUBLISHED: tuple[Published, ...] = tuple(
    _rows("GeoCLIP", "NeurIPS 2023", _POSTER, True, im2gps3k=(14.11, 34.47, 50.65, 69.67, 83.82))
    + _rows("GeoCLIP", "NeurIPS 2023", "G3 (Jia et al., NeurIPS 2024) re-ran GeoCLIP on YFCC4k; "
            + _LISTING + " (1 / 25 / 200 km to two decimals, 750 / 2500 km to one)", False,
            yfcc4k=(9.59, 19.31, 32.63, 55.0, 74.7))
    + _rows("TransLocator", "ECCV 2022", _TL, True,
            im2gps=(19.9, 48.1, 64.6, 75.6, 86.7), im2gps3k=(11.8, 31.1, 46.7, 58.9, 80.1),
            yfcc4k=(8.4, 18.6, 27.0, 41.1, 60.4), yfcc26k=(7.2, 17.8, 28.0, 41.3, 60.6))
    + _rows("GeoDecoder", "CVPR 2023", _POSTER + " (GeoDecoder's row, reference [5])", True,
            im2gps3k=(12.8, 33.5, 45.9, 61.0, 76.1))
    + _rows("GeoDecoder", "CVPR 2023", _LISTING, False, yfcc4k=(10.3, 24.4, 33.9, 50.0, 68.7))
    + _rows("ISNs (M, f*, S3)", "ECCV 2018", _TL_BASE + " (the second ISNs row, which its Δ row compares with)",
            True, im2gps=(16.9, 43.0, 51.9, 66.7, 80.2), im2gps3k=(10.5, 28.0, 36.6, 49.7, 66.0),
            yfcc4k=(6.7, 16.5, 24.2, 37.5, 54.9), yfcc26k=(5.3, 12.3, 19.0, 31.9, 50.7))
    + _rows("CPlaNet", "ECCV 2018", _TL_BASE, True, im2gps=(16.5, 37.1, 46.4, 62.0, 78.5),
            im2gps3k=(10.2, 26.5, 34.6, 48.6, 64.6), yfcc4k=(7.9, 14.8, 21.9, 36.4, 55.5))
    + _rows("PlaNet", "ECCV 2016", _TL_BASE, True, im2gps=(8.4, 24.5, 37.6, 53.6, 71.3),
            im2gps3k=(8.5, 24.8, 34.3, 48.4, 64.6), yfcc4k=(5.6, 14.3, 22.2, 36.4, 55.8),
            yfcc26k=(4.4, 11.0, 16.9, 28.5, 47.7))
    + _rows("[L]kNN, σ = 4", "ICCV 2017", _TL_BASE, True, im2gps=(14.4, 33.3, 47.7, 61.6, 73.4),
            im2gps3k=(7.2, 19.4, 26.9, 38.9, 55.9), yfcc4k=(2.3, 5.7, 11.0, 23.5, 42.0))
)

# Names a results file or option may use for each benchmark (longest first when matching a file name).
ALIASES: dict[str, tuple[str, ...]] = {
    "im2gps3k": ("im2gps3k", "im2gps_3k", "im2gps-3k"),
    "im2gps": ("im2gps",),
    "yfcc4k": ("yfcc4k", "yfcc_4k", "yfcc-4k"),
    "yfcc26k": ("yfcc26k", "yfcc25600", "yfcc_26k", "yfcc-26k"),
}


def datasets() -> tuple[str, ...]:
    """The benchmarks with published rows, in table order."""
    return tuple(dict.fromkeys(p.dataset for p in PUBLISHED))


def published_for(dataset: str) -> list[Published]:
    """The rows of `dataset` (a catalog name), in table order (the three systems first)."""
    return [p for p in PUBLISHED if p.dataset == dataset]


def dataset_from_name(name: str) -> str | None:
    """The benchmark a file name speaks of (``geoclip_im2gps3k.parquet`` → ``im2gps3k``), or None."""
    lowered = name.lower()
    matches = [(len(alias), ds) for ds, aliases in ALIASES.items() for alias in aliases if alias in lowered]
    return max(matches)[1] if matches else None


def canonical_dataset(name: str) -> str | None:
    """A benchmark named by the user (``Im2GPS3k``, ``yfcc25600``) as its catalog name, or None."""
    key = name.strip().lower()
    return next((ds for ds, aliases in ALIASES.items() if key in aliases), None)
