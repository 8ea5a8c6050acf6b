"""Uncertainty over any Prediction: search regions (HPD sets), their calibration, and localizability.

`geocore.geo.candidates` gives each candidate an area (Voronoi cells of a GPS gallery, or S2 cells); `regions` builds
the smallest-area set of candidates holding a share of the probability; `calibration` turns nominal
levels into masses that cover the truth that often (split conformal); `localizability` scores images and
evaluates coverage and abstention.
"""

from geocore.uncertainty.calibration import (
    DEFAULT_LEVELS,
    Calibration,
    conformal_mass,
    fit_calibration,
    validate_levels,
)
from geocore.geo.candidates import CandidateCells, GalleryCells, S2Cells, gallery_cells
from geocore.uncertainty.localizability import (
    abstention_curve,
    coverage_table,
    entropy,
    localizability,
    recall_vs_area,
)
from geocore.uncertainty.regions import (
    SearchRegion,
    areas_at_masses,
    region_areas,
    search_regions,
    truth_mass,
    truth_region_area,
    truth_stats,
)

__all__ = [
    "DEFAULT_LEVELS", "Calibration", "CandidateCells", "GalleryCells", "S2Cells", "SearchRegion",
    "abstention_curve", "areas_at_masses", "conformal_mass", "coverage_table", "entropy", "fit_calibration",
    "gallery_cells", "localizability", "recall_vs_area", "region_areas", "search_regions", "truth_mass",
    "truth_region_area", "truth_stats", "validate_levels",
]
