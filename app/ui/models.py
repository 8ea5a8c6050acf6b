"""Model choice: which registered models can run here, loading them once per server, the random-backbone
label, the candidates (gallery, region, grid) a gallery model scores, and the text hint (and the model that
scores it)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import streamlit as st

from geocore.errors import GeocoreError, InputError, WeightsMissingError
from geocore.models.base import GalleryModel, GeoLocator

from ui.page import show_error

RANDOM_LABEL = "random backbone, predictions mean nothing"
TEST_MODEL_ENV = "GEOCORE_APP_TEST_MODEL"
TEST_GALLERY_ENV = "GEOCORE_APP_TEST_GALLERY"
TEST_LOAD_LOG_ENV = "GEOCORE_APP_TEST_LOAD_LOG"  # a file: one line per model load (the load test counts them)
GALLERY_MODES = {"Model gallery": "default", "Gallery inside a region": "bbox", "Grid over a region": "grid"}


@dataclass(frozen=True)
class ModelRow:
    """A registered model as this machine sees it."""

    name: str
    description: str
    present: bool  # its weights are here (or it is a labelled random model)
    random: bool  # a random-backbone demo/test model
    detail: str  # what is present and where, or what is missing
    how_to_get: str  # the command that gets the weights ("" when none)


def model_rows() -> list[ModelRow]:
    """Every registered model, with where its weights stand."""
    from geocore.models.registry import list_models, model_entry

    rows = []
    for name in list_models():
        entry = model_entry(name)
        if entry.weights_info is None:
            detail = "random weights (demo/test)" if entry.random_ok else "no weights information"
            present, how = entry.random_ok, ""
        else:
            try:
                info = entry.weights_info()
                detail, present, how = info.detail, info.present, info.how_to_get
            except GeocoreError as err:  # a broken status check is a missing-weights notice, not a crash
                detail, present, how = str(err), False, ""
        rows.append(ModelRow(name, entry.description, bool(present), bool(entry.random_ok), detail, how))
    return rows


def download_command(rows: list[ModelRow]) -> str | None:
    """The `geocore weights download …` command of a model whose weights are missing (GeoCLIP's backbone first)."""
    cmds = sorted({r.how_to_get for r in rows if not r.present and r.how_to_get.startswith("geocore weights download")})
    return cmds[0] if cmds else None


def model_picker(*, key: str = "model", prefer: str | None = None) -> str | None:
    """Sidebar model selector: only models whose weights are here; the rest listed with how to get them.

    Shows ONE notice when the real (non-random) models have no weights. `prefer`: the name selected first
    when it is ready (e.g. the model a results file names). Returns the chosen name, or None when none can run.
    """
    rows = model_rows()
    ready = [r for r in rows if r.present]
    real_ready = [r for r in ready if not r.random]
    missing = [r for r in rows if not r.present]
    if not real_ready:
        cmd = download_command(rows) or (missing[0].how_to_get if missing else "")
        st.info(
            "No pretrained model weights are on this machine, so real predictions are not available. "
            f"Get GeoCLIP's backbone with:\n\n```\n{cmd}\n```\n"
            + ("You can still try the page with a **random backbone (demo)** model: its predictions mean nothing."
               if ready else ""),
            icon="ℹ️",
        )
    with st.sidebar:
        if missing:
            with st.expander(f"{len(missing)} model(s) without weights here"):
                for r in missing:
                    how = f" — get with `{r.how_to_get}`" if r.how_to_get and r.how_to_get not in r.detail else ""
                    st.markdown(f"**{r.name}**: {r.detail}{how}")
        if not ready:
            return None
        names = [r.name for r in real_ready] + [r.name for r in ready if r.random]
        labels = {r.name: f"{r.name} — random backbone (demo)" if r.random else r.name for r in ready}
        first = prefer if prefer in names else os.environ.get(TEST_MODEL_ENV)
        return st.selectbox("Model", names, index=names.index(first) if first in names else 0,
                            format_func=labels.get, key=key)


PRECISION_HELP = ("Precision of the image and text towers: auto runs bf16 where this hardware runs it fast (a CUDA "
                  "GPU with bf16, a CPU with AMX or AVX512-BF16) and fp32 elsewhere; fp32 is the reference. The "
                  "location encoder, the gallery scan and the softmax always run in float32.")


def precision_picker(*, key: str = "precision") -> str:
    """Sidebar "Precision: auto / fp32 / bf16" under the model choice (default auto); the choice, as the library
    takes it (`locate(..., precision=...)`, `geocore.models.precision.use_precision`)."""
    from geocore.models.precision import PRECISIONS

    return st.sidebar.selectbox("Precision", list(PRECISIONS), index=PRECISIONS.index("auto"), key=key,
                                help=PRECISION_HELP)


def precision_text(choice: str, device, model=None) -> str:
    """What ran, in words (`geocore.models.precision.precision_reason`): "bf16 (auto: this CPU has avx512_bf16)"."""
    from geocore.models.precision import precision_reason

    return precision_reason(choice, device, model)


def precision_note(choice: str, device, model=None) -> None:
    """The caption saying which precision ran (`precision_text`)."""
    st.caption(f"Precision: {precision_text(choice, device, model)}")


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _load_model_cached(name: str, small_gallery: bool) -> GeoLocator:
    from geocore.geo.gallery import grid_gallery
    from geocore.models.registry import load_model_for_user

    model = load_model_for_user(name)  # a TransLocator comes with its default segmenter
    if os.environ.get(TEST_LOAD_LOG_ENV):
        with open(os.environ[TEST_LOAD_LOG_ENV], "a", encoding="utf-8") as log:
            log.write(f"{name}\n")
    if small_gallery and isinstance(model, GalleryModel):
        model.set_gallery(grid_gallery(1000.0))
    warm_search_regions(model)
    return model


WARM_THREAD = "geocore-warm-regions"
WARM_MAX_CANDIDATES = 250_000  # above: a gallery of millions of points, whose cells are not worth building ahead


def warm_search_regions(model: GeoLocator) -> threading.Thread:
    """Build the model's candidate areas and every cell's polygon in a background thread, once per loaded model
    (`CandidateCells.warm`): the first photo's search region then costs what later ones do (for GeoCLIP's 100K
    gallery the cells and polygons took 4.3 s here, once, ~50 MB). Regions asked for meanwhile share
    that work (one build of the cells; each polygon cached once). A model without areas just skips it."""
    def run() -> None:
        if model.num_candidates() > WARM_MAX_CANDIDATES:  # an indexed gallery: its S2 cells are built on use
            return
        try:
            model.candidate_cells().warm()
        except GeocoreError:  # e.g. a gallery too small for areas: the page says so when it is used
            pass

    thread = threading.Thread(target=run, name=WARM_THREAD, daemon=True)
    thread.start()
    return thread


def load_model(name: str) -> GeoLocator | None:
    """The model `name` (cached for the server's life); GeocoreError → notice and None."""
    small = name == os.environ.get(TEST_MODEL_ENV) and os.environ.get(TEST_GALLERY_ENV) == "small"
    try:
        return _load_model_cached(name, small)
    except WeightsMissingError as err:
        st.info(str(err), icon="ℹ️")
    except GeocoreError as err:
        show_error(err)
    return None


def random_label(model: GeoLocator) -> None:
    """The visible label every result of a random-backbone model carries."""
    if model.random_backbone:
        st.warning(f"⚠️ {model.model_name}: {RANDOM_LABEL}")


@dataclass(frozen=True)
class GalleryChoice:
    """Which candidates a gallery model scores: its own gallery ("default"), the part of it inside `box`
    ("bbox"), or a grid `spacing_km` apart over `box` ("grid"). box: (south, west, north, east)."""

    mode: str = "default"
    box: tuple[float, float, float, float] | None = None
    spacing_km: float = 0.0


def gallery_controls(model: GeoLocator) -> GalleryChoice:
    """Sidebar: the model's gallery, a region (bbox) filter of it, or a grid over a region."""
    if not isinstance(model, GalleryModel):
        st.sidebar.caption("This model scores its own geo-cells (no gallery choice).")
        return GalleryChoice()
    mode = GALLERY_MODES[st.sidebar.radio("Candidates", list(GALLERY_MODES), key="gallery_mode")]
    if mode == "default":
        return GalleryChoice()
    c1, c2 = st.sidebar.columns(2)
    south = c1.number_input("South", -90.0, 90.0, 35.0, key="bb_s")
    north = c2.number_input("North", -90.0, 90.0, 60.0, key="bb_n")
    west = c1.number_input("West", -180.0, 180.0, -10.0, key="bb_w")
    east = c2.number_input("East", -180.0, 180.0, 30.0, key="bb_e")
    spacing = st.sidebar.number_input("Grid spacing (km)", 1.0, 5000.0, 50.0, key="bb_km") if mode == "grid" else 0.0
    return GalleryChoice(mode, (south, west, north, east), float(spacing))


def gallery_view(model: GeoLocator, choice: GalleryChoice) -> GeoLocator:
    """The model scoring `choice`: for a region or grid, a view sharing the cached model's weights with its
    own gallery (other sessions using the cached model never see this one's region); else the model itself."""
    if choice.mode == "default" or not isinstance(model, GalleryModel):
        return model
    from geocore.geo.gallery import filter_gallery, grid_gallery

    points = (filter_gallery(model.gallery, choice.box) if choice.mode == "bbox"
              else grid_gallery(choice.spacing_km, bbox=choice.box))
    if len(points) == 0:
        raise InputError("no gallery points inside this region: widen the box or use a grid")
    return model.with_gallery(points)


HINT_MODEL = "geoclip"  # scores hints for models that take no text, when its weights are here


@dataclass(frozen=True)
class HintChoice:
    """A text hint: its text (None: no hint), weight, and the text model scoring it when the model takes no text."""

    text: str | None = None
    weight: float | None = None
    scorer: GalleryModel | None = None


def takes_text(model: GeoLocator) -> bool:
    return isinstance(model, GalleryModel) and model.supports_text


def hint_controls(model: GeoLocator) -> HintChoice:
    """Sidebar: a "Text hint" box and its weight (p ∝ p_photo · p_text^weight, `geocore.hints`). A model that takes
    no text gets GeoCLIP as the hint's scorer when its weights are here; otherwise the box is disabled."""
    from geocore.hints import DEFAULT_HINT_WEIGHT

    st.sidebar.subheader("Text hint")
    own = takes_text(model)
    helper = own or any(r.name == HINT_MODEL and r.present and not r.random for r in model_rows())
    text = st.sidebar.text_input("Text hint (optional)", key="hint", disabled=not helper,
                                 placeholder="e.g. coastal city in South America",
                                 help="What you know about the place. Combined with the photo as "
                                      "p ∝ p_photo · p_text^weight.")
    weight = st.sidebar.slider("Hint weight", 0.0, 2.0, float(DEFAULT_HINT_WEIGHT), 0.05, key="hint_weight",
                               disabled=not helper,
                               help=f"0 ignores the hint, 1 trusts it as much as the photo; {DEFAULT_HINT_WEIGHT:g} "
                                    "is the measured default.")
    if not helper:
        st.sidebar.caption(f"{model.model_name} takes no text: hints need {HINT_MODEL}'s weights here.")
        return HintChoice()
    text = (text or "").strip()
    if not text:
        return HintChoice()
    scorer = None
    if not own:
        loaded = load_model(HINT_MODEL)
        if loaded is None or not takes_text(loaded):  # its notice is shown by load_model
            return HintChoice()
        scorer = loaded
    return HintChoice(text, float(weight), scorer)
