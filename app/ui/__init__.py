"""The app's shared pieces, one module per concern; pages import the ones they use.

- `page`: page setup, error notices, the responsible-use text.
- `models`: the model picker, cached model loading, the random-backbone label, gallery (region) choice, text hint.
- `maps`: offline folium/Leaflet maps (basemap, probability heatmap, search region, prediction map).
- `regions`: search regions (level toggle, calibration upload parsed in memory, the regions' table).
- `deck`: offline deck.gl (pydeck) maps and their click selection.
- `results`: photos and located results (top-k table, map, regions, hint, EXIF error).

Pages import it as `ui`: `streamlit run app/Home.py` puts the `app/` folder on `sys.path` itself (its main script's
folder, `streamlit.web.bootstrap`), and the tests get it from pytest's `pythonpath` (pyproject.toml).

Test-only environment variables (never set them for real use):
- GEOCORE_APP_TEST_MODEL=<registry name>: preselect this (random, labelled) model.
- GEOCORE_APP_TEST_GALLERY=small: give that model a small 1000 km grid gallery (fast on CPU).
- GEOCORE_APP_OFFLINE=1: skip the tile reachability check (always offline basemap).
"""
