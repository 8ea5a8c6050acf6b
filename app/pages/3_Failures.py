"""Failures: open an evaluation results file and see where and how the model goes wrong, and how sure it was.

The analysis is `geocore.eval.analysis` (annotation, error bands, metrics, per-region accuracy, comparison,
localizability filter), the search-region tables `geocore.eval.coverage` (coverage, abstention, recall
against area) and the figures `geocore.viz`; this page lays them out.
"""

import hashlib
import os

import pandas as pd
import streamlit as st

from geocore import viz
from geocore.data.images import image_bytes_digest
from geocore.data.roots import read_inside, resolve_inside
from geocore.data.text import readable
from geocore.errors import GeocoreError
from geocore.eval.analysis import (
    BAND_COLORS, BAND_NAMES, FAILED, accuracy_by_true_region, annotate_results, compare_results, metrics_row,
    most_localizable,
)
from geocore.present import SEA, km, pct
from geocore.eval.results import MAX_PARQUET_BYTES, read_results
from geocore.eval.coverage import calibration_fit, has_coverage_columns, coverage_tables
from ui.deck import hex_rgba, world_deck
from ui.folders import NOT_SHARED, data_roots, files_in, folder_input, shared_file
from ui.maps import prediction_map, show_map
from ui.models import load_model, model_picker, random_label
from ui.page import (
    md_text, release_free_memory, setup_page, show_error, show_figure, show_unavailable,
)
from ui.search_regions import calibration_upload, km2
from ui.photo_answer import pixels_only, show_photo
from ui.safe_tables import show_table

SCENES = ("S3_Label", "S16_Label", "S365_Label")
RESULTS_MAX_BYTES = MAX_PARQUET_BYTES  # a results file from a shared folder: what the Parquet reader decompresses

setup_page("Failures", "🔎")
st.title("Failures")
st.caption("Open a results file written by `geocore evaluate` (Parquet or CSV).")


@st.cache_data(show_spinner="Reading results…", max_entries=8)
def annotated(name: str, key: str, _source) -> pd.DataFrame:
    """The results file `name` read (`_source`: its bytes, or a file open on them) and annotated, cached by `key`
    (the bytes' digest, or the opened file's path, inode, mtime and size): a rerun does not read it again."""
    data = _source if isinstance(_source, bytes) else _source.read()
    return annotate_results(read_results(name, data))


def image_max_bytes() -> int:
    """The largest image read from a shared folder: what the server takes as an upload."""
    return int(st.get_option("server.maxUploadSize")) << 20


def pick_results(label: str, key: str) -> tuple[str, pd.DataFrame] | None:
    """Upload, or choose from a folder this server shares (`ui.folders`); returns (name, annotated frame) or None."""
    shared = data_roots().enabled
    sources = ["Pick from a folder", "Upload"] if shared else ["Upload"]
    src = st.radio(f"{label}: source", sources, horizontal=True, key=f"{key}_src") if shared else "Upload"
    try:
        if src == "Upload":
            up = st.file_uploader(f"{label}: results file", type=["parquet", "csv"], key=f"{key}_up")
            if not shared and key == "a":
                st.caption(NOT_SHARED)
            if up is None:
                return None
            data = up.getvalue()
            return up.name, annotated(up.name, hashlib.sha256(data).hexdigest(), data)
        path = folder_input(f"{label}: folder", key=f"{key}_dir", env="GEOCORE_RESULTS_DIR")
        if path is None:
            return None
        files = files_in(path, (".parquet", ".csv"))
        if not files:
            st.info(f"No .parquet or .csv results files in {md_text(path)}.")
            return None
        choice = shared_file(path, st.selectbox(f"{label}: file", files, key=f"{key}_file"))
        # read through the opened file, checked to lie in the shared folders (a link swapped in is refused)
        with data_roots().open_file(choice, max_bytes=RESULTS_MAX_BYTES, name=choice.name) as file:
            stat = os.fstat(file.fileno())
            key = f"{choice}:{stat.st_dev}:{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"
            return choice.name, annotated(choice.name, key, file)
    except (GeocoreError, ValueError) as err:  # ValueError: what a reader lets through is still one line
        show_error(err)
        return None


def metrics_table(*frames: tuple[pd.DataFrame, str]) -> None:
    show_table(pd.DataFrame([metrics_row(df, label) for df, label in frames]))


def coverage_display(coverage: pd.DataFrame) -> pd.DataFrame:
    """`coverage_tables(...)["coverage"]` as analysts read it: level, mass used, coverage (%), areas (km²)."""
    return pd.DataFrame({
        "region": [pct(v) for v in coverage["nominal"]],
        "mass used": coverage["mass"].round(3),
        "coverage (%)": (100 * coverage["coverage"]).round(1),
        "median area (km²)": [km2(a) for a in coverage["median_area_km2"]],
        "mean area (km²)": [km2(a) for a in coverage["mean_area_km2"]],
    })


def how_sure(df: pd.DataFrame) -> None:
    """Search regions judged on the whole file: coverage per level (calibrated with an uploaded calibration),
    accuracy against the share answered (most localizable first), recall against the area searched."""
    st.subheader("How sure was the model")
    if not has_coverage_columns(df):
        st.caption("This results file has no search-region columns (truth mass, region areas, localizability): "
                   "re-run `geocore evaluate` with this version of geocore to see how sure the model was.")
        return
    left, right = st.columns([3, 2])
    with right:
        up = calibration_upload("f_cal_up", where=st.container())
    calibration = up.calibration
    try:
        tables = coverage_tables(df, calibration)
    except GeocoreError as err:
        if calibration is None:
            show_error(err)
            return
        show_error(err, where=right, prefix="Calibration not used: ")
        calibration = None
        tables = coverage_tables(df)
    n = int(tables["abstention"]["n"].max())  # the photos judged: status ok, with a truth mass
    with left:
        show_table(coverage_display(tables["coverage"]))
        if "coverage_by_localizability" in tables:
            st.caption("Coverage (%) per localizability tercile, beside the overall figure: marginal coverage can "
                       "hide that the least localizable photos are under-covered.")
            by_bin = tables["coverage_by_localizability"]
            show_table(by_bin.assign(**{c: (100 * by_bin[c]).round(1) for c in by_bin.columns if c.endswith("%")}))
        fit = calibration_fit(df, calibration) if calibration is not None else None
        if fit is not None and fit.shifted:
            st.warning(f"Coverage may not hold here: these photos' localizability differs from the calibration's "
                       f"(two-sample KS D = {fit.statistic:.3f}, p = {fit.p_value:.2g}).", icon="⚠️")
        st.caption(f"Over the {n:,} located photos of the file (the filters do not apply). Coverage: the share of "
                   "photos whose true location lies inside the region; "
                   + (f"calibrated on {calibration.n:,} photos of {md_text(calibration.model)}, so it should "
                      "match the level."
                      if calibration is not None else
                      "not calibrated (raw probability mass): an over-confident model covers less than the level."))
    c1, c2 = st.columns(2)
    with c1:
        show_figure(viz.plot_abstention(tables["abstention"], title="Answer only the most localizable photos")
                    .figure)
        with st.expander("Abstention table"):
            show_table(tables["abstention"].round(3))
    with c2:
        show_figure(viz.plot_recall_vs_area(tables["recall_vs_area"], coverage=tables["coverage"],
                                            title="Truth found against the area searched").figure)


def lines_deck(df: pd.DataFrame, limit: int = 5000):
    """Truth → prediction as deck.gl great-circle arcs coloured by error band (WebGL: thousands stay smooth)."""
    import pydeck as pdk

    rows = df[df["ok"]].nlargest(limit, "error_km")
    data = pd.DataFrame({
        "IMG_ID": [readable(i) for i in rows["IMG_ID"]],  # the tooltip HTML-escapes it (Streamlit's deck.gl)
        "km": [f"{v:,.0f}" for v in rows["error_km"]],
        "band": rows["band"].to_numpy(),
        "src": [[float(a), float(b)] for a, b in zip(rows["LON"], rows["LAT"])],
        "dst": [[float(a), float(b)] for a, b in zip(rows["PRED_LON"], rows["PRED_LAT"])],
        "color": [hex_rgba(BAND_COLORS.get(b, "#555555"), 210) for b in rows["band"]],
    })
    arcs = pdk.Layer("ArcLayer", data, id="errors", get_source_position="src", get_target_position="dst",
                     get_source_color="color", get_target_color="color", get_width=1.6, width_min_pixels=1,
                     great_circle=True, get_height=0, pickable=True, auto_highlight=True)
    truths = pdk.Layer("ScatterplotLayer", data, id="truths", get_position="src", get_fill_color="color",
                       get_radius=3, radius_units="'pixels'", stroked=True, get_line_color=[40, 40, 40, 255],
                       line_width_min_pixels=0.5, pickable=True)
    return world_deck([arcs, truths], tooltip={"html": "<b>{IMG_ID}</b>: {km} km ({band})"})


def region_maps(df: pd.DataFrame, radius: float) -> None:
    """Accuracy within `radius` per country and per continent of the true location: two maps, one table."""
    tables = {by: accuracy_by_true_region(df, radius, by) for by in ("country", "continent")}
    for by, table in tables.items():
        ax = viz.plot_choropleth(table["accuracy"], by=by, label=f"accuracy ≤ {radius:g} km",
                                 title=f"Accuracy per {by} (true location), grey = no images")
        show_figure(ax.figure)
    countries = tables["country"]
    show_table(countries.assign(accuracy=(100 * countries["accuracy"]).round(1))
                 .rename(columns={"accuracy": f"acc ≤ {radius:g} km (%)"}))


def drilldown(worst: pd.DataFrame, results_model: str | None) -> None:
    """One row of the worst-first table: its photo, this model's heatmap (truth, recorded prediction, error
    line) and Grad-CAM, each with a notice when it cannot be shown."""
    st.markdown("##### Open an image")
    if not data_roots().enabled:
        st.caption("Opening a row's image needs the benchmark images in a folder this server shares: its operator "
                   "sets `GEOCORE_DATA_DIRS` (see “Running a shared server” in app/README.md).")
        return
    root = folder_input("Image folder (optional): the benchmark images, named by IMG_ID", key="f_img_dir",
                        env="GEOCORE_IMAGES_DIR", placeholder="e.g. data/im2gps3k/images", default_first_root=False)
    if root is None:
        st.caption("Type the folder holding the images (inside the shared folders) to open a row with its heatmap "
                   "and Grad-CAM.")
        return
    first = worst.drop_duplicates("IMG_ID")
    if first.empty:
        st.info("No images under these filters.")
        return
    error = dict(zip(first["IMG_ID"], first["error_km"]))
    img_id = st.selectbox("Image (worst first)", list(first["IMG_ID"]), key="f_row",
                          format_func=lambda i: f"{i} — " + ("failed" if pd.isna(error[i]) else km(error[i], 0)))
    row = first[first["IMG_ID"] == img_id].iloc[0]
    truth = (float(row["LAT"]), float(row["LON"]))
    ok = bool(row["ok"])
    recorded = (float(row["PRED_LAT"]), float(row["PRED_LON"])) if ok else None

    def paren(c: str) -> str:
        return md_text(c) if c == SEA else f"({md_text(c)})"

    st.markdown(f"**{md_text(img_id)}** — truth {truth[0]:.4f}, {truth[1]:.4f} {paren(row['country'])}; "
                + (f"recorded prediction {recorded[0]:.4f}, {recorded[1]:.4f} {paren(row['pred_country'])}, "
                   f"**{km(row['error_km'])}** away" if ok else f"no prediction ({md_text(row['status'])})"))
    try:  # as `geocore evaluate` reads it, the folder joined with the IMG_ID, but never leaving the folder
        path = resolve_inside(root, str(img_id).strip())
    except GeocoreError as err:
        show_error(err, prefix="Not opened: ")
        return
    if not path.is_file():
        st.info(f"{md_text(img_id)} is not in the folder {md_text(root)}.", icon="ℹ️")
        return
    from geocore.data.images import load_image

    try:  # read through the opened file, checked to lie in the image folder (a link swapped in is refused)
        data = read_inside(path, [root], max_bytes=image_max_bytes(), name=str(img_id))
        image = load_image(data, name=img_id)
    except GeocoreError as err:
        show_error(err)
        return
    name = model_picker(key="model_failures", prefer=results_model)  # its notice (if any) above the image
    model = load_model(name) if name else None
    left, right = st.columns([1, 2])
    with left:
        show_photo(image, img_id)
    if model is None:
        right.info("The heatmap and Grad-CAM need a model with weights (see above).", icon="ℹ️")
        return
    key = (name, str(path), image_bytes_digest(data))
    cache = st.session_state.setdefault("_failures_drill", {})
    if key not in cache:
        cache.clear()  # one image at a time
        from geocore.explain.gradcam import gradcam
        from geocore.locate import locate

        out: dict = {}
        try:
            with st.spinner(f"Running {name} on {md_text(img_id)}…"):
                out["res"] = locate(model, [(img_id, data)], top_k=min(5, model.num_candidates()), full=True)[0]
        except GeocoreError as err:
            out["res_error"] = str(err)
        try:
            with st.spinner("Computing Grad-CAM…"):
                out["cam"] = gradcam(model, image)
        except (ImportError, GeocoreError) as err:
            out["cam_error"] = err
        cache[key] = out
    out = cache[key]
    with right:
        random_label(model)
        res = out.get("res")
        if res is None or not res.ok:
            show_error(f"{img_id}: {out.get('res_error') or res.error}")
        else:
            m = prediction_map(res.prediction, res.table, truth=truth, truth_km=row["error_km"] if ok else None,
                               truth_label=f"truth of {img_id}", recorded=recorded,
                               recorded_label=f"prediction in the results file ({results_model or '?'})")
            show_map(m, height=420)
            st.caption(f"Shading: {name}'s probabilities now. Blue dots: its top-k. Green: truth. Orange ring: the "
                       "results file's prediction; red dashes: its error.")
    with left:
        if "cam" in out:
            st.image(pixels_only(out["cam"].overlay), width="stretch",
                     caption=f"Grad-CAM — where {name} looked for: {out['cam'].target_desc}")
        else:
            show_unavailable("Grad-CAM", out["cam_error"])


def comparison(df: pd.DataFrame, name: str) -> None:
    """A second results file against the first: metrics side by side, images only one of them gets right."""
    other = pick_results("Second results file", "b")
    if other is None:
        return
    name_b, df_b = other
    r = st.number_input("Right within (km)", 0.1, 20000.0, 25.0, key="cmp_radius")
    metrics_table((df, name), (df_b, name_b))
    both = compare_results(df, df_b, r)
    n = both["right"].value_counts()
    st.write(f"{len(both)} images in both. Within {r:g} km: **{n.get('only a', 0)}** only by {md_text(name)}, "
             f"**{n.get('only b', 0)}** only by {md_text(name_b)}, {n.get('both', 0)} by both.")
    for col, which, good, bad in zip(st.columns(2), ("only a", "only b"), (name, name_b), (name_b, name)):
        col.markdown(f"Right in **{md_text(good)}**, wrong in **{md_text(bad)}**")
        with col:
            show_table(both[both["right"] == which].drop(columns="right").round(1))


picked = pick_results("Results", "a")
if picked is not None:
    name, df = picked
    model_names = ", ".join(sorted(map(str, df["model"].dropna().unique()))) or "?"
    st.subheader("Metrics")
    st.caption(f"{md_text(name)} — model {md_text(model_names)}. Accuracy (%) within each radius of the true location, as "
               "the papers print it; failed images are left out and counted.")
    metrics_table((df, name))
    how_sure(df)

    with st.sidebar:
        st.header("Filters")
        keep_share = 100
        if has_coverage_columns(df):
            keep_share = st.slider("Most localizable photos kept (%)", 5, 100, 100, 5, key="f_loc",
                                   help="Rank photos by the area of their 90 % search region (smallest first) and "
                                        "keep this share: what the model would answer if it abstained on the rest.")
        bands = st.multiselect("Error band", [*BAND_NAMES, FAILED], default=list(BAND_NAMES), key="f_band")
        countries_sel = st.multiselect("Country (true)", sorted(df["country"].unique()), key="f_country")
        scene_cols = [c for c in SCENES if c in df.columns]
        scene_col = st.selectbox("Scene labels", ["(any)"] + scene_cols, key="f_scene_col")
        scene_vals = []
        if scene_col != "(any)":
            scene_vals = st.multiselect("Scene", sorted(df[scene_col].dropna().unique().tolist()), key="f_scene")
        radius = st.number_input("Radius for 'right' (km)", 0.1, 20000.0, 750.0, key="f_radius")
    view = df[df["band"].isin(bands)]
    if keep_share < 100:
        view = view[most_localizable(df, keep_share / 100)[view.index]]
    if countries_sel:
        view = view[view["country"].isin(countries_sel)]
    if scene_vals:
        view = view[view[scene_col].isin(scene_vals)]
    st.write(f"**{len(view)}** of {len(df)} images match the filters.")
    if len(view) and view["ok"].any() and len(view) < len(df):
        metrics_table((view, "filtered"))

    tab_dist, tab_map, tab_geo, tab_worst, tab_cmp = st.tabs(
        ["Error distribution", "Truth → prediction", "Per country / continent", "Worst first", "Compare two files"])
    with tab_dist:
        if view["ok"].any():
            show_figure(viz.plot_error_histogram(view.loc[view["ok"], "error_km"]).figure)
        else:
            st.info("No located images under these filters.")
    with tab_map:
        st.caption("Arcs from each true location (dot) to its top-1 prediction, coloured by error band "
                   "(the 5000 largest errors under the filters). Drag to pan, scroll to zoom, hover for the image.")
        st.markdown(" ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in BAND_COLORS.items()),
                    unsafe_allow_html=True)
        st.pydeck_chart(lines_deck(view), height=480, key="lines_deck")
    with tab_geo:
        if view["ok"].any():
            region_maps(view, radius)
        else:
            st.info("No located images under these filters.")
    with tab_worst:
        cols = ["IMG_ID", "error_km", "country", "pred_country", "LAT", "LON", "PRED_LAT", "PRED_LON", "band"]
        cols += [c for c in ("localizability", "area_90_km2") if c in view.columns]
        cols += [c for c in SCENES if c in view.columns] + ["status"]
        ordered = view.sort_values("error_km", ascending=False, na_position="first")
        show_table(ordered[cols].round({"error_km": 1, "LAT": 4, "LON": 4, "PRED_LAT": 4, "PRED_LON": 4,
                                        "localizability": 2, "area_90_km2": 0}))
        models = df["model"].dropna().astype(str).unique()
        drilldown(ordered, models[0] if len(models) == 1 else None)
    with tab_cmp:
        comparison(df, name)
    release_free_memory()  # the figures, maps and tables drawn are garbage now
