"""Model registry: `register_model`, `create_model(name, pretrained=...)`, `list_models()`.

As in timm and open_clip, an architecture is registered once by a builder function; weights
are chosen separately by `pretrained` (None = random init, no network; a tag; or a path).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from geocore.errors import InputError, WeightsMissingError
from geocore.models.base import GeoLocator
from geocore.weights.preflight import no_default_weights_message

# The built-in models and the module whose import registers each. Asking for one model imports only its module
# (GeoCLIP does not pull in timm's ViT builders or the segmenter); listing models imports them all.
BUILTIN_MODELS: dict[str, str] = {
    "geoclip": "geocore.models.geoclip",
    "geoclip-tiny": "geocore.models.geoclip",
    "translocator": "geocore.models.translocator",
    "geodecoder": "geocore.models.geodecoder",
}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights stand on this machine."""

    present: bool
    detail: str  # what is present and where, or what is missing
    how_to_get: str = ""  # the command that gets them, when missing


def train_your_own(title: str, name: str) -> Callable[[], WeightsInfo]:
    """The `weights_info` of a model no one has published weights for: train one with `geocore train NAME`."""
    command = f"geocore train {name}"
    return lambda: WeightsInfo(False, f"no public {title} weights exist; train one with `{command}`", command)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., GeoLocator]
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    weights_info: Callable[[], WeightsInfo] | None = None
    default_pretrained: str | None = None  # what users get when they name no weights
    random_ok: bool = False  # True only for models that are labelled random (tests, demos)
    user_defaults: dict[str, Any] = field(default_factory=dict)  # what user-facing loads add (e.g. a segmenter)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    description: str = "",
    config: dict[str, Any] | None = None,
    weights_info: Callable[[], WeightsInfo] | None = None,
    default_pretrained: str | None = None,
    random_ok: bool = False,
    user_defaults: dict[str, Any] | None = None,
) -> Callable[[Callable[..., GeoLocator]], Callable[..., GeoLocator]]:
    """Decorator registering `builder(pretrained=None, **kwargs) -> GeoLocator` under `name`."""

    def wrap(builder: Callable[..., GeoLocator]) -> Callable[..., GeoLocator]:
        _REGISTRY[name] = ModelEntry(
            name, builder, description, dict(config or {}), weights_info, default_pretrained, random_ok,
            dict(user_defaults or {}))
        return builder

    return wrap


def unregister_model(name: str) -> None:
    """Remove a model (tests register throw-away models)."""
    _REGISTRY.pop(name, None)


def _load_builtins(name: str | None = None) -> None:
    """Import the module registering built-in model `name`, or every built-in module (name None or unknown)."""
    modules = [BUILTIN_MODELS[name]] if name in BUILTIN_MODELS else dict.fromkeys(BUILTIN_MODELS.values())
    for module in modules:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; InputError listing the known names otherwise."""
    if name not in _REGISTRY:
        _load_builtins(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        _load_builtins()
        raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}") from None


def create_model(name: str, pretrained: str | None = None, **kwargs: Any) -> GeoLocator:
    """Build model `name`; `pretrained` picks weights (None: random init, never a download)."""
    entry = model_entry(name)
    model = entry.builder(pretrained=pretrained, **{**entry.config, **kwargs})
    model.model_name = name
    return model


def load_model_for_user(name: str, pretrained: str | None = None, *, segmenter: Any = None,
                        **kwargs: Any) -> GeoLocator:
    """`create_model` for user-facing paths: never silently random weights, and ready to predict from RGB.

    With no `pretrained`, the model's default weights are used; a model with none (no public
    weights) raises WeightsMissingError saying how to get some, unless it is labelled random.
    The entry's `user_defaults` (TransLocator: its segmenter) apply unless given; `segmenter` replaces the
    default segmenter of a model that has one and is ignored by the others.
    """
    entry = model_entry(name)
    chosen = pretrained if pretrained not in (None, "") else entry.default_pretrained
    if chosen is None and not entry.random_ok:
        info = entry.weights_info() if entry.weights_info else None
        raise WeightsMissingError(no_default_weights_message(name, info.how_to_get if info else ""))
    defaults = dict(entry.user_defaults)
    if segmenter is not None and "segmenter" in defaults:
        defaults["segmenter"] = segmenter
    return create_model(name, pretrained=chosen, **{**defaults, **kwargs})
