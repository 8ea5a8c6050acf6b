"""Reference photos (`geocore.refs`): build from real pixels with geoclip-tiny, store, search, fuse, locate."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from geocore.errors import InputError
from geocore.geo.distance import haversine_km
from geocore.locate import locate
from geocore.models.prediction import Prediction
from geocore.models.registry import create_model
from geocore.refs import (FusionParams, build_reference_set, fine_top_k, load_reference_set, nearest_references,
                          reference_info, reweight, save_reference_set)
from geocore.refs.store import MANIFEST, chance_similarity

N_PHOTOS = 20


def _photo(seed: int) -> Image.Image:
    """A distinct random picture: a colour gradient, noise and shapes."""
    rng = np.random.default_rng(seed)
    h, w = 180, 240
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    base = np.stack([x * rng.uniform(50, 255), y * rng.uniform(50, 255), (1 - x) * rng.uniform(50, 255)], -1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        box = (x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 100))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img


def _jpeg(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("geoclip-tiny").eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """20 geotagged JPEGs spread over the world, and their CSV."""
    root = tmp_path_factory.mktemp("refs")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(-60, 70, N_PHOTOS), rng.uniform(-180, 180, N_PHOTOS)
    ids = [f"p{i:02d}.jpg" for i in range(N_PHOTOS)]
    for i, name in enumerate(ids):
        (images / name).write_bytes(_jpeg(_photo(i)))
    csv = root / "refs.csv"
    pd.DataFrame({"IMG_ID": ids, "LAT": lat, "LON": lon, "note": [f"n{i}" for i in range(N_PHOTOS)]}).to_csv(
        csv, index=False)
    return root, csv, images


@pytest.fixture(scope="module")
def refs(model, photos, tmp_path_factory):
    _, csv, images = photos
    return build_reference_set(model, csv, images=images, output=tmp_path_factory.mktemp("set") / "REFS",
                               thumbnails=True, batch_size=8, progress=False, accelerator="cpu")


def test_build_stores_every_photo_and_round_trips(refs, model, photos):
    _, csv, images = photos
    truth = pd.read_csv(csv)
    assert len(refs) == N_PHOTOS and len(refs.skipped) == 0
    assert refs.embeddings.dtype == np.float16 and refs.embeddings.shape == (N_PHOTOS, 512)
    np.testing.assert_allclose(np.linalg.norm(refs.embeddings.astype(np.float32), axis=1), 1.0, atol=2e-3)
    again = load_reference_set(refs.path, model)
    assert isinstance(again.embeddings, np.memmap)
    np.testing.assert_array_equal(np.asarray(again.embeddings), refs.embeddings)
    assert list(again.table["IMG_ID"]) == list(truth["IMG_ID"]) and list(again.table["note"]) == list(truth["note"])
    np.testing.assert_array_equal(again.latlon, truth[["LAT", "LON"]].to_numpy())
    import hashlib
    assert again.table["SHA256"].iloc[3] == hashlib.sha256((images / "p03.jpg").read_bytes()).hexdigest()
    thumb = Image.open(io.BytesIO(again.thumbnail("p03.jpg")))
    assert thumb.format == "JPEG" and max(thumb.size) <= 160 and not thumb.getexif()
    # the stored embedding is the one locate computes for the photo
    pixels = model.preprocess(Image.open(images / "p03.jpg").convert("RGB"))[None]
    with torch.no_grad():
        emb = model.image_embeddings(pixels)[0].numpy()
    np.testing.assert_allclose(again.embeddings[3].astype(np.float32), emb, atol=2e-3)
    info = reference_info(again)
    assert info["count"] == N_PHOTOS and info["model"] == "geoclip-tiny"
    assert info["continents"]["references"].sum() == N_PHOTOS


def test_a_reencoded_copy_answers_at_its_reference_and_the_file_never_finds_itself(refs, model, photos):
    _, csv, images = photos
    truth = pd.read_csv(csv).set_index("IMG_ID")
    original = Image.open(images / "p07.jpg").convert("RGB")
    smaller = original.resize((int(original.width * 0.9), int(original.height * 0.9)), Image.Resampling.LANCZOS)
    copy = _jpeg(smaller, quality=85)
    exact = (images / "p07.jpg").read_bytes()
    res_copy, res_same = locate(model, [("copy.jpg", copy), ("p07.jpg", images / "p07.jpg")], refs=refs, top_k=3)
    spot = truth.loc["p07.jpg", ["LAT", "LON"]].to_numpy(float)
    assert res_copy.references["IMG_ID"].iloc[0] == "p07.jpg"
    assert haversine_km(res_copy.table[["lat", "lon"]].to_numpy()[0], spot) < 1.0
    assert res_copy.references["km"].iloc[0] < 1.0
    assert "p07.jpg" not in set(res_same.references["IMG_ID"])  # same SHA-256: never its own neighbour
    assert res_same.extras["refs"]["sha256"] == refs.table.set_index("IMG_ID").loc["p07.jpg", "SHA256"]
    assert len(exact) > 0 and res_copy.references["thumbnail"].iloc[0][:2] == b"\xff\xd8"


def test_locate_with_refs_keeps_regions_calibration_hints_and_refinement(refs, model, photos):
    from geocore.uncertainty import fit_calibration

    _, _, images = photos
    copy = _jpeg(Image.open(images / "p11.jpg").convert("RGB"), quality=85)
    spot = refs.latlon[refs.table["IMG_ID"].tolist().index("p11.jpg")]
    [fine] = locate(model, [("c.jpg", copy)], refs=refs, top_k=3, refine=True)
    assert haversine_km(fine.table[["lat", "lon"]].to_numpy()[0], spot) < 1.0  # refined, still the reference's GPS
    [plain] = locate(model, [("c.jpg", copy)], top_k=3, regions=(0.5, 0.9))
    plain_cal = fit_calibration(np.linspace(0.05, 0.95, 40), model=model.model_name,
                                fingerprint=model.candidate_cells())
    with pytest.raises(InputError, match="fitted without reference photos"):  # its masses hold without references
        locate(model, [("c.jpg", copy)], refs=refs, regions=(0.5, 0.9), calibration=plain_cal)
    cal = fit_calibration(np.linspace(0.05, 0.95, 40), model=model.model_name, fingerprint=model.candidate_cells(),
                          refs=refs.set_fingerprint)
    [res] = locate(model, [("c.jpg", copy)], refs=refs, top_k=3, regions=(0.5, 0.9), calibration=cal, refine=True,
                   hint="a beach")
    assert res.ok and res.calibrated and len(res.regions) == 2 and res.extras["hint"]["text"] == "a beach"
    assert res.prediction.probs_full.shape == plain.prediction.probs_full.shape
    assert torch.isclose(res.prediction.probs_full.sum(), torch.tensor(1.0), atol=1e-4)
    assert res.references["IMG_ID"].iloc[0] == "p11.jpg" and res.references["weight"].iloc[0] > 0.99


def test_refused_for_another_model_or_an_incomplete_set(refs, photos, tmp_path):
    other = create_model("geoclip-tiny").eval()
    with torch.no_grad():
        other.mlp[0].weight.add_(1e-3)  # fine-tuned weights: another fingerprint
    with pytest.raises(InputError, match="other weights"):
        load_reference_set(refs.path, other)
    with pytest.raises(InputError, match="other weights"):
        locate(other, [], refs=refs)
    manifest = json.loads((refs.path / MANIFEST).read_text())
    renamed = load_reference_set(refs.path)
    renamed.manifest = dict(manifest, model="geoclip")
    with pytest.raises(InputError, match="built with model 'geoclip', not 'geoclip-tiny'"):
        renamed.check_model(other)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in refs.path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / MANIFEST).write_text(json.dumps(dict(manifest, complete=False)))
    with pytest.raises(InputError, match="incomplete"):
        load_reference_set(broken)
    (broken / MANIFEST).write_text(json.dumps(dict(manifest, dim=768)))
    with pytest.raises(InputError, match="do not match"):
        load_reference_set(broken)
    (broken / MANIFEST).unlink()
    with pytest.raises(InputError, match="never finished"):
        load_reference_set(broken)


def test_bad_rows_and_files_are_skipped_and_listed(model, photos, tmp_path):
    _, csv, images = photos
    (images / "corrupt.jpg").write_bytes(_jpeg(_photo(99))[:300])
    (images / "text.jpg").write_bytes(b"not an image at all")
    rows = pd.read_csv(csv).iloc[:4]
    bad = pd.DataFrame({"IMG_ID": ["corrupt.jpg", "text.jpg", "p05.jpg", "p06.jpg", "p01.jpg", "../refs.csv",
                                   "missing.jpg"],
                        "LAT": [1.0, 2.0, float("nan"), 95.0, 3.0, 4.0, 5.0], "LON": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
                        "note": ["x"] * 7})
    path = tmp_path / "bad.csv"
    pd.concat([rows, bad]).to_csv(path, index=False)
    built = build_reference_set(model, path, images=images, output=tmp_path / "R", progress=False, batch_size=4,
                                accelerator="cpu")
    reasons = dict(zip(built.skipped["name"], built.skipped["reason"]))
    assert list(built.table["IMG_ID"]) == ["p00.jpg", "p02.jpg", "p03.jpg"]  # p01 is given twice: both skipped
    assert "appears 2 times" in reasons["p01.jpg"] and "not a position" in reasons["p05.jpg"]
    assert "not a position" in reasons["p06.jpg"] and "'..'" in reasons["../refs.csv"]
    assert "not a file" in reasons["missing.jpg"]
    assert "truncated or corrupt" in reasons["corrupt.jpg"] and "not an image" in reasons["text.jpg"]
    assert len(load_reference_set(tmp_path / "R", model).skipped) == 8  # p01 twice: both rows


def test_exif_folder_source(model, tmp_path):
    folder = tmp_path / "exif"
    folder.mkdir()
    for i, gps in enumerate([(48.85, 2.35), None]):
        img = _photo(200 + i)
        exif = Image.Exif()
        if gps:
            g = exif.get_ifd(0x8825)
            g.update({1: "N", 2: (48.0, 51.0, 0.0), 3: "E", 4: (2.0, 21.0, 0.0)})
        img.save(folder / f"e{i}.jpg", exif=exif)
    built = build_reference_set(model, folder, output=tmp_path / "R", progress=False, accelerator="cpu")
    assert list(built.table["IMG_ID"]) == ["e0.jpg"] and abs(built.table["LAT"].iloc[0] - 48.85) < 1e-9
    assert "no EXIF GPS" in built.skipped["reason"].iloc[0]


def test_resume_after_an_interrupted_build(model, photos, tmp_path):
    _, csv, images = photos
    out = tmp_path / "R"

    def die(batch_idx: int) -> None:
        if batch_idx == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_reference_set(model, csv, images=images, output=out, batch_size=4, progress=False, accelerator="cpu",
                            on_batch=die)
    with pytest.raises(InputError, match="incomplete"):
        load_reference_set(out)  # a killed build never reads as a complete set
    parts = sorted(p.name for p in (tmp_path / "R.parts").glob("part-*.parquet"))
    assert len(parts) == 2
    done = build_reference_set(model, csv, images=images, output=out, batch_size=4, progress=False,
                               accelerator="cpu", resume=True)
    fresh = build_reference_set(model, csv, images=images, output=tmp_path / "F", batch_size=4, progress=False,
                                accelerator="cpu")
    assert list(done.table["IMG_ID"]) == list(fresh.table["IMG_ID"])
    np.testing.assert_array_equal(done.embeddings, fresh.embeddings)
    assert not (tmp_path / "R.parts").exists()


def test_faiss_path_agrees_with_the_exact_scan(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 6000, 64
    centres = rng.normal(size=(300, d))
    emb = centres[rng.integers(0, 300, n)] + 0.3 * rng.normal(size=(n, d))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
    table = pd.DataFrame({"IMG_ID": [f"r{i}" for i in range(n)], "LAT": rng.uniform(-80, 80, n),
                          "LON": rng.uniform(-180, 180, n), "SHA256": [f"{i:064x}" for i in range(n)]})
    manifest = {"format": "geocore-references", "version": 1, "model": "m", "fingerprint": "f", "embedding": "e",
                "dim": d, "count": n, "complete": True, "chance_similarity": 0.5}
    from geocore.refs.store import ReferenceSet

    saved = save_reference_set(ReferenceSet(manifest, table, emb), tmp_path / "R", index_above=1000, progress=False)
    refs = load_reference_set(tmp_path / "R")
    assert refs.index is not None and saved.manifest["index"]["kind"] == "IVF-SQ8"
    q = torch.from_numpy(emb[:200].astype(np.float32)) + 0.05 * torch.randn(200, d)
    q = q / q.norm(dim=1, keepdim=True)
    s_ex, i_ex = nearest_references(refs, q, 10, exact=True)
    s_ix, i_ix = nearest_references(refs, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_ex.tolist(), i_ix.tolist())])
    assert recall >= 0.99
    assert torch.allclose(s_ex[:, 0], s_ix[:, 0], atol=1e-3)
    # the query's own file is excluded on both paths
    own = [f"{i:064x}" for i in range(200)]
    for exact in (True, False):
        _, idx = nearest_references(refs, torch.from_numpy(emb[:200].astype(np.float32)), 5,
                                    exclude_sha256=own, exact=exact)
        assert not (idx == torch.arange(200)[:, None]).any()


def test_fusion_with_no_reference_nearby_leaves_the_answer_alone():
    """Neighbours no more similar than chance: the top-1 and the distribution stay the model's."""
    g = torch.tensor([[0.0, 0.0], [10.0, 10.0], [40.0, -70.0], [-30.0, 140.0]])
    probs = torch.tensor([[0.1, 0.6, 0.2, 0.1]])
    coarse = Prediction(coords=g[[1]][None], probs=probs[:, [1]], candidates=g, probs_full=probs, indices=None)
    refs_ll = torch.tensor([[[40.01, -70.0], [-30.0, 140.02]]])
    params = FusionParams()
    from geocore.refs.reweight import log_evidence

    chance = log_evidence(torch.tensor([[0.3, 0.32]]), chance=0.3, params=params)
    fused = reweight(coarse, refs_ll, chance, params, 1)
    assert torch.equal(fused.indices, torch.tensor([[1]]))
    assert torch.allclose(fused.probs_full, probs, atol=0.03)  # at chance a neighbour weighs exp(-t0/tau)
    fine = fine_top_k(fused, refs_ll, chance, params, 2)
    assert torch.allclose(fine.coords[0, 0].double(), g[1].double())
    strong = log_evidence(torch.tensor([[0.95, 0.32]]), chance=0.3, params=params)
    fine = fine_top_k(reweight(coarse, refs_ll, strong, params, 1), refs_ll, strong, params, 2)
    assert haversine_km(fine.coords[0, 0].double(), refs_ll[0, 0].double()) < 1e-6  # the reference's own GPS


def test_chance_similarity_is_the_typical_best_unrelated_look_alike():
    latlon = np.array([[0.0, 0.0], [0.0, 0.1], [50.0, 100.0], [-40.0, -60.0]])
    emb = np.eye(4, dtype=np.float16)
    emb[1] = emb[0]  # a look-alike next door does not count: it is not unrelated
    emb[3] = (np.array([0.6, 0, 0.8, 0])).astype(np.float16)
    chance, n = chance_similarity(latlon, emb)
    assert n == 4 and chance == pytest.approx(0.7, abs=1e-3)  # best far look-alikes: 0.6, 0.6, 0.8, 0.8


def _exif_jpeg(seed: int, gps: tuple[float, float] | None) -> bytes:
    """A generated photo as JPEG bytes, with EXIF GPS (degrees, north/east) when given."""
    exif = Image.Exif()
    if gps:
        g = exif.get_ifd(0x8825)
        g.update({1: "N", 2: (float(gps[0]), 0.0, 0.0), 3: "E", 4: (float(gps[1]), 0.0, 0.0)})
    buf = io.BytesIO()
    _photo(seed).save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_a_set_built_in_memory_from_uploaded_photos(model):
    """Uploads with EXIF GPS become a reference set held in memory: a re-encoded copy answers at its photo's GPS,
    the very same file never finds itself, photos without GPS or unreadable are listed."""
    from geocore.refs import reference_set_from_photos

    places = [(48.0, 2.0), (40.0, 74.0), (33.0, 151.0), (35.0, 139.0), (22.0, 43.0), (30.0, 31.0)]
    photos = [(f"u{i}.jpg", _exif_jpeg(300 + i, gps)) for i, gps in enumerate(places)]
    photos += [("nogps.jpg", _exif_jpeg(399, None)), ("broken.jpg", b"\xff\xd8 not really")]
    refs = reference_set_from_photos(model, photos)
    assert list(refs.table["IMG_ID"]) == [f"u{i}.jpg" for i in range(6)] and refs.path is None
    assert refs.embeddings.dtype == np.float16 and refs.thumbnails and len(refs.thumbnails) == 6
    assert dict(zip(refs.skipped["name"], refs.skipped["reason"]))["nogps.jpg"] == "no GPS position in its EXIF"
    assert "broken.jpg" in set(refs.skipped["name"])
    copy = _jpeg(Image.open(io.BytesIO(photos[2][1])).convert("RGB").resize((216, 162)), quality=85)
    [res] = locate(model, [("query.jpg", copy)], refs=refs, top_k=3)
    assert haversine_km(res.table[["lat", "lon"]].to_numpy()[0], np.array(places[2])) < 1.0
    [same] = locate(model, [("u2.jpg", photos[2][1])], refs=refs, top_k=3)
    assert "u2.jpg" not in set(same.references["IMG_ID"])
    with pytest.raises(InputError, match="EXIF GPS"):
        reference_set_from_photos(model, photos[-2:])
