"""Are a built-in model's default weights on this machine? Answered from the weights table alone, before any
model code runs: the missing-weights error costs a fraction of a second instead of the seconds that importing
torch and open_clip takes. The messages are the ones the model builders raise."""

from __future__ import annotations

from geocore.errors import WeightsMissingError
from geocore.weights.resolve import resolve_clip_checkpoint
from geocore.weights.sources import SOURCES
from geocore.weights.status import source_status

# What each built-in model loads when no weights are named: open_clip backbones (architecture, tag) and
# wheel-bundled sources. A model absent here is checked when it is built.
DEFAULT_WEIGHTS: dict[str, dict[str, tuple]] = {
    "geoclip": {"open_clip": (("ViT-L-14", "openai"),), "sources": ("geoclip-heads",)},
    "geoclip-tiny": {"open_clip": (), "sources": ("geoclip-heads",)},
}
# Models with no public weights: the command that makes some.
NO_DEFAULT_WEIGHTS: dict[str, str] = {
    "translocator": "geocore train translocator",
    "geodecoder": "geocore train geodecoder",
}


def no_default_weights_message(name: str, how_to_get: str = "") -> str:
    """The one wording for "this model needs --pretrained"."""
    how = f"; {how_to_get}" if how_to_get else ""
    return f"{name} has no default weights: pass --pretrained PATH to a checkpoint{how}"


def check_default_weights(model: str, pretrained: str | None) -> None:
    """WeightsMissingError (saying how to get them) when built-in `model` would load default weights that are
    not here; nothing when `pretrained` is given (checked when loaded) or the model is not a built-in one."""
    if pretrained not in (None, ""):
        return
    if model in NO_DEFAULT_WEIGHTS:
        raise WeightsMissingError(no_default_weights_message(model, NO_DEFAULT_WEIGHTS[model]))
    needs = DEFAULT_WEIGHTS.get(model)
    if needs is None:
        return
    for name in needs["sources"]:
        row = source_status(SOURCES[name])
        if not row.present:
            raise WeightsMissingError(f"{row.description}: {row.where}; get them with: {row.how_to_get}")
    for arch, tag in needs["open_clip"]:
        resolve_clip_checkpoint(arch, tag)  # raises the builder's own message
