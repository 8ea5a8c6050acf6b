"""`reference_info`: what a reference set holds, in numbers an analyst reads (size, model, where)."""

from __future__ import annotations

import pandas as pd

from geocore.geo.countries import describe
from geocore.present import region_label
from geocore.refs.store import ReferenceSet


def reference_info(refs: ReferenceSet) -> dict:
    """Size, model and how it was built, and the references per continent and per country (most first)."""
    m = refs.manifest
    where = describe(refs.latlon) if len(refs) else pd.DataFrame({"country": [], "continent": []})

    def counts(col: str) -> pd.DataFrame:
        c = where[col].map(region_label).value_counts()  # at sea: `SEA`
        return pd.DataFrame({col: c.index, "references": c.to_numpy()})

    return {"path": None if refs.path is None else str(refs.path), "count": len(refs), "model": m["model"],
            "fingerprint": m["fingerprint"], "embedding": m["embedding"], "dim": m["dim"], "created": m.get("created"),
            "source": m.get("source"), "thumbnails": bool(m.get("thumbnails")), "index": m.get("index"),
            "skipped": len(refs.skipped), "random_backbone": bool(m.get("random_backbone")),
            "embeddings_mb": refs.embeddings.nbytes / 1e6,
            "continents": counts("continent"), "countries": counts("country")}
