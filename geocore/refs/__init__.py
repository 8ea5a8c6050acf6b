"""Reference photos: the user's own geotagged photos, embedded by the model, searched for each query and folded
into its answer (`geocore.locate.locate(..., refs=)`).

`build_reference_set` (sources → embeddings on the predict loop → a folder), `load_reference_set`,
`reference_info`, `nearest_references` (exact or FAISS), `fusion` (p ∝ p_model · L^W).
"""

from geocore.refs.build import build_reference_set
from geocore.refs.reweight import FusionParams, fine_top_k, log_evidence, reweight
from geocore.refs.info import reference_info
from geocore.refs.memory import reference_set_from_photos
from geocore.refs.search import Neighbours, nearest_references, neighbours
from geocore.refs.store import ReferenceSet, load_reference_set, save_reference_set

__all__ = ["FusionParams", "Neighbours", "ReferenceSet", "build_reference_set", "fine_top_k", "load_reference_set", "log_evidence",
           "nearest_references", "neighbours", "reference_info", "reference_set_from_photos", "reweight", "save_reference_set"]
