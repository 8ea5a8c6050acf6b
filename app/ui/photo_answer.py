"""Photos and located results: a photo thumbnail, the top-k table as users read it, one photo's answer (with its
search regions, the text hint it used, and whether the EXIF GPS lies inside)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from PIL import Image

from geocore.data.images import ImageSource, load_image
from geocore.errors import GeocoreError
from geocore.present import km, pct, place_label, region_label
from geocore.locate import LocateResult
from geocore.models.base import GeoLocator

from ui.maps import prediction_map, show_map, show_remembered_map
from ui.models import random_label
from ui.page import md_text, show_error
from ui.search_regions import REGION_STYLES, region_table

THUMBNAIL_PX = 640
STRIP_TITLE = "Similar reference photos"


def pixels_only(image: Image.Image) -> Image.Image:
    """A copy of `image` with its pixels and nothing else: no EXIF (GPS, camera, time), XMP, ICC profile, comment
    or text chunk can reach what the page serves (`st.image` re-encodes a PIL image; this makes sure the encoder
    has no metadata to copy)."""
    clean = Image.new(image.mode, image.size)
    if image.mode == "P" and image.palette is not None:
        clean.putpalette(image.getpalette())
    clean.paste(image)
    return clean


def show_photo(image: Image.Image | ImageSource, name: str) -> None:
    """A photo (PIL image, path or bytes) as a thumbnail of at most 640 px, its metadata stripped (`pixels_only`),
    captioned with its `name` as text; an unreadable one is skipped (its error is reported where it was located)."""
    try:
        img = image.copy() if isinstance(image, Image.Image) else load_image(image, name=name)
    except GeocoreError:
        return
    img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    st.image(pixels_only(img), caption=md_text(name), width="stretch")


def topk_display(table: pd.DataFrame) -> pd.DataFrame:
    """A `prediction_table` as users read it: rank, place, country, probability, lat, lon."""
    return pd.DataFrame({
        "rank": table["rank"].astype(int),
        "place": [place_label(p, a) for p, a in zip(table["place"], table["admin1"])],
        "country": [region_label(c) for c in table["country"]],
        "probability": table["prob"].round(4),
        "lat": table["lat"].round(4),
        "lon": table["lon"].round(4),
    })


def place_text(row: pd.Series) -> str:
    """A row of a `prediction_table` (or of `geocore.geo.countries.describe`) in words: "place, region, country"."""
    return f"{place_label(row['place'], row['admin1'])}, {region_label(row['country'])}"


def hint_notice(res: LocateResult) -> None:
    """Says so when the answer combines the photo with a text hint (its text and weight)."""
    hint = res.extras.get("hint")
    if hint:
        st.info(f"Text hint active: “{md_text(hint['text'])}” at weight {hint['weight']:g}. The probabilities combine the "
                "photo with the hint.", icon="💬")


def exif_text(res: LocateResult, level: float = 0.9) -> str:
    """The EXIF truth in words: where, how far the top-1 is, and whether it lies inside the `level` region."""
    text = (f"EXIF GPS {res.exif_gps[0]:.4f}, {res.exif_gps[1]:.4f}: top-1 is **{km(res.exif_error_km)}** away")
    inside = res.exif_in_region(level)
    if inside is not None:
        text += f"; it lies **{'inside' if inside else 'outside'}** the {pct(level)} search region"
    return text + "."


def reference_caption(row) -> str:
    """One reference in words, as text: its ID, place, similarity and km from the top-1."""
    return md_text(f"{row.IMG_ID} · {place_label(row.place, row.country)} · similarity {row.similarity:.2f} · "
                   f"{km(row.km)} from the top-1")


def show_references(refs: pd.DataFrame) -> None:
    """An answer's "Similar reference photos" strip: per reference its thumbnail when the set stores one
    (re-drawn from pixels by `show_photo`, no metadata), its ID, place, similarity and km from the top-1."""
    if refs is None or not len(refs):
        return
    st.markdown(f"**{STRIP_TITLE}**")
    for col, row in zip(st.columns(len(refs)), refs.itertuples()):
        with col:
            thumb = getattr(row, "thumbnail", None)
            if isinstance(thumb, bytes) and thumb:
                show_photo(thumb, str(row.IMG_ID))
            st.caption(reference_caption(row))


def render_locate_result(res: LocateResult, model: GeoLocator, *, image: Image.Image | bytes | None = None,
                         level: float = 0.9, map_height: int = 420, map_memo: tuple | None = None) -> None:
    """One photo's answer: photo, top-k table, heatmap map with the `level` search region (and the nearest reference
    photos), the similar reference photos' strip, the regions' table, the hint it used, EXIF truth and error (or
    its error notice).

    map_memo: (group, key) under which this session remembers the map's HTML (`show_remembered_map`): the
    results' key and the photo's place in them."""
    st.subheader(md_text(res.name))
    if not res.ok:
        show_error(f"{res.name}: {res.error}")
        return
    random_label(model)
    hint_notice(res)
    if res.outside_calibration:
        st.warning("This photo's localizability lies outside what the calibration saw (beyond its 1st–99th "
                   "percentile): the calibrated coverage may not hold for it.", icon="⚠️")
    note = next((r.calibration_note for r in res.regions if r.calibration_note), "")
    if note:  # e.g. a calibration fitted on photo sets, used on one photo
        st.warning(md_text(note[:1].upper() + note[1:] + "."), icon="⚠️")
    region = res.region(level)
    left, right = st.columns([1, 2])
    # the map first: its message reaches the browser, which starts drawing it, while the rest is still made
    with right:
        def build():
            return prediction_map(res.prediction, res.table, truth=res.exif_gps, truth_km=res.exif_error_km,
                                  region=region, references=res.references)

        if map_memo is None:
            show_map(build(), height=map_height)
        else:
            show_remembered_map(map_memo[0], (map_memo[1], level), build, height=map_height)
        outline = ""
        if region is not None:
            dashed = " dashed" if REGION_STYLES.get(round(level, 2), {}).get("dashArray") else ""
            outline = (f" Outlined{dashed}: the {pct(level)} search region, the smallest area holding "
                       + ("that share of the probability." if not region.calibrated else
                          f"{pct(level)} of the truths on held-out photos (calibrated)."))
        st.caption("Shading: probability over the candidate points." + outline + " Dots: top-k (dark = top-1)."
                   + (" Green: EXIF GPS; red dashes: error of the top-1." if res.exif_gps else "")
                   + (" Purple: the most similar reference photos." if res.references is not None
                      and len(res.references) else ""))
        show_references(res.references)
        if res.regions:  # a static table: its cells wrap, so the countries and the calibration stay readable
            st.table(region_table(res, drawn=level), hide_index=True, border="horizontal")
    with left:
        if image is not None:  # the photo as read once (`geocore.data.images.Photo`), or its bytes
            show_photo(image, res.name)
        st.table(topk_display(res.table), hide_index=True, border="horizontal")
        if res.exif_gps is not None:
            (st.success if res.exif_in_region(0.9) is not False else st.warning)(exif_text(res, 0.9))
        else:
            st.caption("No GPS position in this photo's EXIF, so no error to show.")
