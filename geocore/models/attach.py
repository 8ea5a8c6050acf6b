"""Make a loaded model ready to predict from RGB alone (what `geocore locate` / `geocore evaluate` need).

TransLocator's second branch reads a semantic segmentation map; a model loaded from a checkpoint has no
segmenter, so `prepare_for_inference` attaches `Segmenter.from_pretrained(segmenter_name)` (local weights
only; WeightsMissingError naming `geocore weights download <name>` when absent). Other models pass through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geocore.explain.segmentation import DEFAULT_SEGMENTER


def needs_segmenter(model: Any) -> bool:
    """True for a TransLocator without an attached segmenter."""
    from geocore.models.translocator import TransLocator

    return isinstance(model, TransLocator) and model.segmenter is None


def load_segmenter(segmenter: Any = DEFAULT_SEGMENTER) -> Any:
    """A `Segmenter`: given as one, by weights name ("segformer-b0-ade"), or as a local transformers folder."""
    from geocore.explain.segmentation import Segmenter

    if isinstance(segmenter, Segmenter):
        return segmenter
    if Path(str(segmenter)).expanduser().is_dir():
        return Segmenter.from_pretrained(DEFAULT_SEGMENTER, weights=segmenter)
    return Segmenter.from_pretrained(str(segmenter))


def prepare_for_inference(model: Any, segmenter_name: str = DEFAULT_SEGMENTER,
                          device: str | None = None) -> Any:
    """`model`, with a segmenter attached when it is a TransLocator that has none (on `device`, default
    CPU; its outputs follow the pixels' device either way); returns the model."""
    if needs_segmenter(model):
        seg = load_segmenter(segmenter_name).attach(model).segmenter
        if device is not None:
            seg.to(device)
    return model
