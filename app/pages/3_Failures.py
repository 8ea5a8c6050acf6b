"""Failures: open an evaluation results file and see where and how the model goes wrong."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hashlib  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

import components as ui  # noqa: E402
from geocore.errors import GeocoreError  # noqa: E402
from geocore.eval.metrics import LEVEL_NAMES, THRESHOLDS_KM  # noqa: E402
from geocore.eval.results import read_results  # noqa: E402

BANDS = [(0, 1), (1, 25), (25, 200), (200, 750), (750, 2500), (2500, np.inf)]
BAND_NAMES = ["≤ 1 km", "1–25 km", "25–200 km", "200–750 km", "750–2500 km", "> 2500 km"]
BAND_COLORS = ["#1a9850", "#66bd63", "#a6d96a", "#fdae61", "#f46d43", "#a50026"]
SCENES = ("S3_Label", "S16_Label", "S365_Label")

ui.setup_page("Failures", "🔎")
st.title("Failures")
st.caption("Open a results file written by `geocore evaluate` (Parquet or CSV).")


@st.cache_data(show_spinner="Reading results…", max_entries=8)
def enrich(_df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Add ok flag, error band, true/predicted country and continent (cached by `key`: file digest or path+mtime)."""
    from geocore.geo.countries import country_of

    df = _df.reset_index(drop=True).copy()
    df["IMG_ID"] = df["IMG_ID"].astype(str)
    df["ok"] = df["status"].astype(str).eq("ok") & df["error_km"].notna()
    true = country_of(df[["LAT", "LON"]].to_numpy(np.float64))
    df["country"] = true["country"].replace("", "(sea)").to_numpy()
    df["iso_a3"] = true["iso_a3"].to_numpy()
    df["continent"] = true["continent"].replace("", "(sea)").to_numpy()
    pred = pd.DataFrame({"iso_a3": [""] * len(df), "country": [""] * len(df)})
    if df["ok"].any():
        p = country_of(df.loc[df["ok"], ["PRED_LAT", "PRED_LON"]].to_numpy(np.float64))
        pred.loc[df["ok"].to_numpy(), ["iso_a3", "country"]] = p[["iso_a3", "country"]].to_numpy()
    df["pred_country"] = pred["country"].replace("", "(sea)").to_numpy()
    df["country_hit"] = np.where(df["iso_a3"].eq(""), np.nan, (pred["iso_a3"] == df["iso_a3"]).astype(float))
    err = df["error_km"].to_numpy(np.float64)
    band = np.full(len(df), "failed", dtype=object)
    for (lo, hi), nm in zip(BANDS, BAND_NAMES):
        band[(err > lo if lo > 0 else err >= lo) & (err <= hi)] = nm
    df["band"] = band
    return df


def metrics_row(df: pd.DataFrame, label: str) -> dict:
    from geocore.eval.metrics import metrics_from_errors

    ok = df[df["ok"]]
    m = metrics_from_errors(ok["error_km"].to_numpy(np.float64), ok["country_hit"].to_numpy(np.float64)).to_dict()
    row = {"results": label, "n": m["n"]}
    row.update({f"{LEVEL_NAMES[r]} {r} km": ui.fmt_pct(m[f"acc_{r}km"]) for r in THRESHOLDS_KM})
    row.update({"Median km": f"{m['median_km']:.1f}", "Mean km": f"{m['mean_km']:.1f}",
                "GeoScore": f"{m['geoscore']:.0f}", "Country acc": ui.fmt_pct(m["country_acc"])})
    if (~df["ok"]).any():
        row["failed images"] = int((~df["ok"]).sum())
    return row


def pick_results(label: str, key: str) -> tuple[str, pd.DataFrame] | None:
    """Upload or choose from a folder; returns (name, enriched frame) or None."""
    src = st.radio(f"{label}: source", ["Pick from a folder", "Upload"], horizontal=True, key=f"{key}_src")
    try:
        if src == "Upload":
            up = st.file_uploader(f"{label}: results file", type=["parquet", "csv"], key=f"{key}_up")
            if up is None:
                return None
            data = up.getvalue()
            return up.name, enrich(read_results(up.name, data), hashlib.sha256(data).hexdigest())
        folder = st.text_input(f"{label}: folder", value=os.environ.get("GEOCORE_RESULTS_DIR", "results"),
                               key=f"{key}_dir")
        path = Path(folder).expanduser()
        if not path.is_dir():
            st.info(f"No folder {folder!r}: type a folder holding results files, or upload one.")
            return None
        files = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".parquet", ".csv") and p.is_file())
        if not files:
            st.info(f"No .parquet or .csv results files in {folder}.")
            return None
        choice = st.selectbox(f"{label}: file", files, key=f"{key}_file")

        stat = (path / choice).stat()
        return choice, enrich(read_results(path / choice), f"{(path / choice).resolve()}:{stat.st_mtime_ns}:{stat.st_size}")
    except GeocoreError as err:
        ui.show_error(err)
        return None


def error_histogram(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    err = df.loc[df["ok"], "error_km"].to_numpy(np.float64)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    bins = np.logspace(-1, np.log10(20040), 40)
    ax.hist(np.clip(err, 0.1, None), bins=bins, color="#4f8ef7", edgecolor="white")
    ax.set_xscale("log")
    for r in THRESHOLDS_KM:
        ax.axvline(r, color="#888", linestyle="--", linewidth=0.8)
        ax.text(r, ax.get_ylim()[1] * 0.95, f" {LEVEL_NAMES[r]}", fontsize=7, color="#555", va="top")
    ax.set_xlabel("error of the top-1 (km, log scale)")
    ax.set_ylabel("images")
    fig.tight_layout()
    return fig


def lines_deck(df: pd.DataFrame, limit: int = 5000):
    """Truth → prediction as deck.gl great-circle arcs coloured by error band (WebGL: thousands stay smooth)."""
    import pydeck as pdk

    rows = df[df["ok"]].nlargest(limit, "error_km")
    colors = dict(zip(BAND_NAMES, BAND_COLORS))
    data = pd.DataFrame({
        "IMG_ID": rows["IMG_ID"].astype(str).to_numpy(),
        "km": [f"{v:,.0f}" for v in rows["error_km"]],
        "band": rows["band"].astype(str).to_numpy(),
        "src": [[float(a), float(b)] for a, b in zip(rows["LON"], rows["LAT"])],
        "dst": [[float(a), float(b)] for a, b in zip(rows["PRED_LON"], rows["PRED_LAT"])],
        "color": [ui.hex_rgb(colors.get(b, "#555555"), 210) for b in rows["band"]],
    })
    arcs = pdk.Layer("ArcLayer", data, id="errors", get_source_position="src", get_target_position="dst",
                     get_source_color="color", get_target_color="color", get_width=1.6, width_min_pixels=1,
                     great_circle=True, get_height=0, pickable=True, auto_highlight=True)
    truths = pdk.Layer("ScatterplotLayer", data, id="truths", get_position="src", get_fill_color="color",
                       get_radius=3, radius_units="'pixels'", stroked=True, get_line_color=[40, 40, 40, 255],
                       line_width_min_pixels=0.5, pickable=True)
    return ui.world_deck([arcs, truths], tooltip={"html": "<b>{IMG_ID}</b>: {km} km ({band})"})


def image_path(folder: Path, img_id: str) -> Path:
    """Where an IMG_ID's image is, as `geocore evaluate` found it: the folder joined with the ID."""
    return folder / str(img_id).strip()


def drilldown(worst: pd.DataFrame, results_model: str | None) -> None:
    """One row of the worst-first table: its photo, this model's heatmap (truth, recorded prediction, error
    line) and Grad-CAM, each with a notice when it cannot be shown."""
    st.markdown("##### Open an image")
    folder = st.text_input("Image folder (optional): the benchmark images, named by IMG_ID", key="f_img_dir",
                           value=os.environ.get("GEOCORE_IMAGES_DIR", ""), placeholder="e.g. data/im2gps3k/images")
    if not folder.strip():
        st.caption("Type the folder holding the images to open a row with its heatmap and Grad-CAM.")
        return
    root = Path(folder.strip()).expanduser()
    if not root.is_dir():
        st.info(f"No folder {folder!r}: type the folder holding the benchmark images.")
        return
    first = worst.drop_duplicates("IMG_ID")
    if first.empty:
        st.info("No images under these filters.")
        return
    err = dict(zip(first["IMG_ID"], first["error_km"]))
    img_id = st.selectbox("Image (worst first)", list(first["IMG_ID"]), key="f_row",
                          format_func=lambda i: f"{i} — " + ("failed" if pd.isna(err[i]) else f"{err[i]:,.0f} km"))
    row = first[first["IMG_ID"] == img_id].iloc[0]
    truth = (float(row["LAT"]), float(row["LON"]))
    ok = bool(row["ok"])
    recorded = (float(row["PRED_LAT"]), float(row["PRED_LON"])) if ok else None
    def paren(c: str) -> str:
        return c if c.startswith("(") else f"({c})"

    st.markdown(f"**{img_id}** — truth {truth[0]:.4f}, {truth[1]:.4f} {paren(row['country'])}; "
                + (f"recorded prediction {recorded[0]:.4f}, {recorded[1]:.4f} {paren(row['pred_country'])}, "
                   f"**{row['error_km']:,.1f} km** away" if ok else f"no prediction ({row['status']})"))
    path = image_path(root, img_id)
    if not path.is_file():
        st.info(f"{img_id} is not in the folder {folder}.", icon="ℹ️")
        return
    from geocore.data.images import load_image

    try:
        image = load_image(path, name=img_id)
    except GeocoreError as err:
        ui.show_error(err)
        return
    name = ui.model_picker(key="model_failures", prefer=results_model)  # its notice (if any) above the image
    model = ui.load_model(name) if name else None
    left, right = st.columns([1, 2])
    with left:
        thumb = image.copy()
        thumb.thumbnail((640, 640))
        st.image(thumb, caption=img_id, width="stretch")
    if model is None:
        right.info("The heatmap and Grad-CAM need a model with weights (see above).", icon="ℹ️")
        return
    stat = path.stat()
    key = (name, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    cache = st.session_state.setdefault("_failures_drill", {})
    if key not in cache:
        cache.clear()  # one image at a time
        from geocore.explain.gradcam import gradcam
        from geocore.locate import locate

        out: dict = {}
        try:
            with st.spinner(f"Running {name} on {img_id}…"):
                top = min(5, len(model.gallery)) if hasattr(model, "gallery") else 5
                out["res"] = locate(model, [(img_id, path)], top_k=top, full=True)[0]
        except GeocoreError as err:
            out["res_error"] = str(err)
        try:
            with st.spinner("Computing Grad-CAM…"):
                out["cam"] = gradcam(model, image, target=None)
        except (ImportError, GeocoreError) as err:
            out["cam_error"] = f"{err.name or err} is not installed" if isinstance(err, ImportError) else str(err)
        cache[key] = out
    out = cache[key]
    with right:
        ui.random_label(model)
        res = out.get("res")
        if res is None or not res.ok:
            st.error(f"{img_id}: {out.get('res_error') or res.error}")
        else:
            m = ui.prediction_map(res.prediction, res.table, truth=truth, truth_km=row["error_km"] if ok else None,
                                  truth_label=f"truth of {img_id}", recorded=recorded,
                                  recorded_label=f"prediction in the results file ({results_model or '?'})")
            ui.show_map(m, height=420)
            st.caption(f"Shading: {name}'s probabilities now. Blue dots: its top-k. Green: truth. Orange ring: the "
                       "results file's prediction; red dashes: its error.")
    with left:
        if "cam" in out:
            st.image(out["cam"].overlay, caption=f"Grad-CAM — where {name} looked for: {out['cam'].target_desc}",
                     width="stretch")
        else:
            st.info(f"Grad-CAM is not available: {out.get('cam_error')}", icon="ℹ️")


def choropleths(df: pd.DataFrame, radius: float):
    import matplotlib.pyplot as plt

    from geocore.geo.countries import countries

    ok = df[df["ok"]].assign(hit=lambda d: (d["error_km"] <= radius).astype(float))
    world = countries()
    by_country = ok[ok["iso_a3"] != ""].groupby("iso_a3").agg(acc=("hit", "mean"), n=("hit", "size"))
    by_cont = ok.groupby("continent").agg(acc=("hit", "mean"), n=("hit", "size"))
    figs = []
    for title, frame, key in (("per country", world, "iso_a3"),
                              ("per continent", world.dissolve(by="continent").reset_index(), "continent")):
        stats = by_country if key == "iso_a3" else by_cont
        g = frame.merge(stats, left_on=key, right_index=True, how="left")
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
        g.plot(column="acc", ax=ax, cmap="RdYlGn", vmin=0, vmax=1, legend=True, edgecolor="#555", linewidth=0.2,
               missing_kwds={"color": "#e6e6e6", "label": "no images"},
               legend_kwds={"label": f"accuracy ≤ {radius:g} km", "shrink": 0.6})
        ax.set_title(f"Accuracy {title} (true location), grey = no images", fontsize=9)
        ax.set_axis_off()
        fig.tight_layout()
        figs.append(fig)
    table = by_country.join(world.set_index("iso_a3")["name"]).sort_values("n", ascending=False)
    table = table.assign(acc=lambda t: (100 * t["acc"]).round(1)).rename(columns={"acc": f"acc ≤ {radius:g} km (%)"})
    return figs, table[["name", "n", f"acc ≤ {radius:g} km (%)"]]


picked = pick_results("Results", "a")
if picked is not None:
    name, df = picked
    model_names = ", ".join(sorted(map(str, df["model"].dropna().unique()))) or "?"
    st.subheader("Metrics")
    st.caption(f"{name} — model {model_names}. Accuracy (%) within each radius of the true location, as "
               "the papers print it; failed images are left out and counted.")
    st.dataframe(pd.DataFrame([metrics_row(df, name)]), hide_index=True, width="stretch")

    with st.sidebar:
        st.header("Filters")
        bands = st.multiselect("Error band", BAND_NAMES + ["failed"], default=BAND_NAMES, key="f_band")
        countries_sel = st.multiselect("Country (true)", sorted(df["country"].unique()), key="f_country")
        scene_cols = [c for c in SCENES if c in df.columns]
        scene_col = st.selectbox("Scene labels", ["(any)"] + scene_cols, key="f_scene_col")
        scene_vals = []
        if scene_col != "(any)":
            scene_vals = st.multiselect("Scene", sorted(df[scene_col].dropna().unique().tolist()), key="f_scene")
        radius = st.number_input("Radius for 'right' (km)", 0.1, 20000.0, 750.0, key="f_radius")
    view = df[df["band"].isin(bands)]
    if countries_sel:
        view = view[view["country"].isin(countries_sel)]
    if scene_vals:
        view = view[view[scene_col].isin(scene_vals)]
    st.write(f"**{len(view)}** of {len(df)} images match the filters.")
    if len(view) and view["ok"].any() and len(view) < len(df):
        st.dataframe(pd.DataFrame([metrics_row(view, "filtered")]), hide_index=True, width="stretch")

    tab_dist, tab_map, tab_geo, tab_worst, tab_cmp = st.tabs(
        ["Error distribution", "Truth → prediction", "Per country / continent", "Worst first", "Compare two files"])
    with tab_dist:
        if view["ok"].any():
            st.pyplot(error_histogram(view), clear_figure=True)
        else:
            st.info("No located images under these filters.")
    with tab_map:
        st.caption("Arcs from each true location (dot) to its top-1 prediction, coloured by error band "
                   "(the 5000 largest errors under the filters). Drag to pan, scroll to zoom, hover for the image.")
        st.markdown(" ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in zip(BAND_NAMES, BAND_COLORS)),
                    unsafe_allow_html=True)
        st.pydeck_chart(lines_deck(view), height=480, key="lines_deck")
    with tab_geo:
        if view["ok"].any():
            figs, table = choropleths(view, radius)
            for fig in figs:
                st.pyplot(fig, clear_figure=True)
            st.dataframe(table, hide_index=True, width="stretch")
        else:
            st.info("No located images under these filters.")
    with tab_worst:
        cols = ["IMG_ID", "error_km", "country", "pred_country", "LAT", "LON", "PRED_LAT", "PRED_LON", "band"]
        cols += [c for c in SCENES if c in view.columns] + ["status"]
        ordered = view.sort_values("error_km", ascending=False, na_position="first")
        worst = ordered[cols]
        st.dataframe(worst.round({"error_km": 1, "LAT": 4, "LON": 4, "PRED_LAT": 4, "PRED_LON": 4}),
                     hide_index=True, width="stretch")
        models = df["model"].dropna().astype(str).unique()
        drilldown(ordered, models[0] if len(models) == 1 else None)
    with tab_cmp:
        other = pick_results("Second results file", "b")
        if other is not None:
            name_b, df_b = other
            r = st.number_input("Right within (km)", 0.1, 20000.0, 25.0, key="cmp_radius")
            st.dataframe(pd.DataFrame([metrics_row(df, name), metrics_row(df_b, name_b)]),
                         hide_index=True, width="stretch")
            both = df[["IMG_ID", "error_km", "country"]].merge(df_b[["IMG_ID", "error_km"]], on="IMG_ID",
                                                               suffixes=("_a", "_b"))
            right_a, right_b = both["error_km_a"] <= r, both["error_km_b"] <= r
            st.write(f"{len(both)} images in both. Within {r:g} km: **{int((right_a & ~right_b).sum())}** only by "
                     f"{name}, **{int((~right_a & right_b).sum())}** only by {name_b}, "
                     f"{int((right_a & right_b).sum())} by both.")
            c1, c2 = st.columns(2)
            c1.markdown(f"Right in **{name}**, wrong in **{name_b}**")
            c1.dataframe(both[right_a & ~right_b].round(1), hide_index=True, width="stretch")
            c2.markdown(f"Right in **{name_b}**, wrong in **{name}**")
            c2.dataframe(both[~right_a & right_b].round(1), hide_index=True, width="stretch")
