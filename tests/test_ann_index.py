"""The approximate gallery index (FAISS IVF-SQ8, exact re-ranking) on small galleries with the index forced on."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from geocore.geo.gallery import default_gallery
from geocore.models import ann_index, retrieval
from geocore.models.registry import create_model

M = 4000


def _points(n, seed):
    g = torch.Generator().manual_seed(seed)
    base = default_gallery()
    pts = base[torch.randint(0, base.shape[0], (n,), generator=g)] + torch.randn(n, 2, generator=g) * 0.05
    return torch.stack([pts[:, 0].clamp(-90, 90), torch.remainder(pts[:, 1] + 180, 360) - 180], 1)


@pytest.fixture(scope="module")
def base_model():
    return create_model("geoclip-tiny")


def _queries(model, n=200, noise=3.0, seed=7):
    g = model.embed_locations(_points(n, seed))
    z = torch.randn(n, 512, generator=torch.Generator().manual_seed(seed)) / 512**0.5
    return F.normalize(g + noise * z, dim=-1)


def test_recall_against_the_exact_scan(base_model):
    gallery = _points(M, 1)
    ivf, exact = base_model.with_gallery(gallery, index="ivf"), base_model.with_gallery(gallery, index="exact")
    assert ivf.uses_index() and not exact.uses_index()
    q = _queries(base_model)
    got, want = ivf.predict_embeddings(q, 5), exact.predict_embeddings(q, 5)
    recall1 = (got.indices[:, 0] == want.indices[:, 0]).float().mean()
    recall5 = torch.tensor([len(set(a) & set(b)) / 5 for a, b in zip(got.indices.tolist(), want.indices.tolist())])
    assert recall1 >= 0.99 and recall5.mean() >= 0.99
    # the background sample covers this whole gallery: the outside mass is exact, so are the probabilities
    same = got.indices == want.indices
    torch.testing.assert_close(got.probs[same], want.probs[same], rtol=1e-4, atol=1e-7)


def test_auto_mode_follows_the_threshold(base_model, monkeypatch):
    model = base_model.with_gallery(_points(300, 2))
    assert not model.uses_index()
    monkeypatch.setattr(ann_index, "INDEX_ABOVE", 299)
    assert model.uses_index()
    with pytest.raises(Exception, match="index: expected one of auto, exact, ivf"):
        model.set_gallery(_points(300, 2), index="hnsw")


def test_the_100k_default_stays_exact_and_never_imports_faiss():
    code = ("import sys, torch; from geocore.models.registry import create_model; m = create_model('geoclip-tiny'); "
            "from geocore.geo.candidates import GalleryCells; assert not m.uses_index(); "
            "p = m.predict_embeddings(m.embed_locations(torch.tensor([[48.85, 2.35]])), 5, full=True); "
            "assert p.outside_mass is None and p.probs_full.shape == (1, 100000); "
            "assert 'faiss' not in sys.modules, 'faiss imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_index_is_built_once_and_reloaded(base_model, monkeypatch):
    gallery = _points(M, 3)
    first = base_model.with_gallery(gallery, index="ivf")
    q = _queries(base_model, 20)
    a = first.predict_embeddings(q, 5)
    path = ann_index.index_path(first.gallery_cache.last_path, ann_index.nlist_for(M))
    assert path.is_file()

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(ann_index.AnnIndex, "build", no_build)
    second = base_model.with_gallery(gallery, index="ivf")  # new instance: loads the file
    b = second.predict_embeddings(q, 5)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.probs, b.probs)


def test_a_corrupt_index_file_is_rebuilt(base_model):
    gallery = _points(M, 4)
    model = base_model.with_gallery(gallery, index="ivf")
    q = _queries(base_model, 20)
    a = model.predict_embeddings(q, 5)
    path = ann_index.index_path(model.gallery_cache.last_path, ann_index.nlist_for(M))
    path.write_bytes(b"not a faiss index" * 100)
    again = base_model.with_gallery(gallery, index="ivf")
    with pytest.warns(UserWarning, match="unreadable or stale"):
        b = again.predict_embeddings(q, 5)
    assert torch.equal(a.indices, b.indices)
    assert ann_index.AnnIndex.load(path, M, 512, 8) is not None  # rewritten


def test_float16_cache_round_trip(base_model, monkeypatch):
    monkeypatch.setattr(retrieval, "HALF_PRECISION_ABOVE", 1000)
    gallery = _points(3000, 5)
    model = base_model.with_gallery(gallery)
    emb = model.gallery_embeddings()
    assert emb.dtype == torch.float16 and model.gallery_cache.last_source == "computed"
    emb = emb.clone()  # the cache is a memory map of the file this test garbles below
    path = model.gallery_cache.last_path
    assert np.load(path, mmap_mode="r").dtype == np.float16
    assert path.stat().st_size < 3000 * 512 * 2 + 1000  # half the float32 size
    ref = model.location_encoder.embed(gallery)
    assert (emb.float() - ref).abs().max() < 1e-3
    view = base_model.with_gallery(gallery)
    assert torch.equal(view.gallery_embeddings(), emb) and view.gallery_cache.last_source == "disk"
    raw = bytearray(path.read_bytes())
    raw[-4000:] = b"\x00" * 4000  # zeroed rows still parse
    path.write_bytes(bytes(raw))
    broken = base_model.with_gallery(gallery)
    with pytest.warns(UserWarning, match="unreadable"):
        again = broken.gallery_embeddings()
    assert torch.equal(again, emb) and broken.gallery_cache.last_source == "computed"


def test_outside_mass_is_bounded_and_probabilities_sum_to_at_most_one(base_model, monkeypatch):
    monkeypatch.setattr(ann_index, "BACKGROUND", 500)
    monkeypatch.setattr(ann_index, "RETRIEVE", 200)
    gallery = _points(M, 6)
    model = base_model.with_gallery(gallery, index="ivf")
    q = _queries(base_model, 50, noise=5.0)
    # every retrieved point, to compare with the exact softmax
    ret = ann_index.retrieve(model.gallery_index(), q, model.gallery_embeddings(), model.logit_scale.exp(),
                             ann_index.background_sample(M, 500), 200)
    pred = ann_index.indexed_prediction(ret, model.gallery, 5, full=True)
    exact = model.similarity_logits(q, model.gallery_embeddings()).double().softmax(-1)  # (B, M)
    true_outside = 1 - exact.gather(1, ret.ids).sum(1)
    assert (true_outside > 0.05).any()  # noisy queries: the outside mass matters here
    # the bound holds for the true mass when the retrieved set is the exact top-200
    logits = model.similarity_logits(q, model.gallery_embeddings())
    top = logits.topk(200, dim=1)
    exact_ret = ann_index.Retrieved(top.indices, top.values, ret.bg_ids, ret.bg_logits, M)
    bound = ann_index.indexed_prediction(exact_ret, model.gallery, 5).outside_bound.double()
    assert (1 - exact.gather(1, top.indices).sum(1) <= bound + 1e-5).all()
    top_sum = F.pad(ret.logits, (0, 0)).double()
    retrieved = (top_sum - torch.logaddexp(torch.logsumexp(top_sum, 1),
                                           ann_index.outside_log_mass(ret)[0])[:, None]).exp().sum(1)
    torch.testing.assert_close(retrieved + pred.outside_mass.double(), torch.ones(50, dtype=torch.float64),
                               rtol=0, atol=1e-5)
    assert (pred.probs.sum(1) <= 1 + 1e-6).all()
    torch.testing.assert_close(pred.probs_full.sum(1).double(), torch.ones(50, dtype=torch.float64),
                               rtol=0, atol=1e-4)
    # the estimate is close to the truth (a 500-point sample of 3,800)
    ok = true_outside > 0.05
    assert ((pred.outside_mass.double()[ok] - true_outside[ok]).abs() / true_outside[ok]).median() < 0.25


def _png(seed):
    arr = np.random.default_rng(seed).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_locate_with_regions_hints_and_heatmap_on_an_indexed_gallery(base_model):
    from geocore.geo.candidates import GalleryS2Cells
    from geocore.locate import locate

    model = base_model.with_gallery(_points(M, 8), index="ivf")
    cells = model.candidate_cells()
    assert isinstance(cells, GalleryS2Cells) and len(cells) == M
    assert abs(cells.areas_km2[cells.site_first].sum() / len(cells.site_first) - cells.areas_km2.mean()) >= 0
    results = locate(model, [("a.png", _png(0)), ("b.png", _png(1))], top_k=3, regions=(0.5, 0.9),
                     hint="a coastal city in Japan", hint_weight=0.5)
    for res in results:
        assert res.error is None
        pred = res.prediction
        assert pred.probs_full.shape == (1, M) and abs(float(pred.probs_full.sum()) - 1) < 1e-4
        small, large = res.regions
        assert 0 < small.area_km2 <= large.area_km2 and large.held_mass > 0.9
        assert not small.geometry.is_empty
        # the region's cells hold its points: their areas add up
        assert small.area_km2 == pytest.approx(float(cells.areas_km2[small.indices].sum()), rel=1e-6)
    # each gallery point lies in its own region cell
    assert (cells.locate(model.gallery[:50]) == cells.site_first[cells.site_of[:50]]).all()


def test_geocore_index_builds_ahead_what_locate_then_reuses(base_model, monkeypatch, tmp_path, capsys):
    """`geocore index GALLERY.csv` (default model, no CLIP weights needed) leaves the embeddings and the index in
    the cache; a model given the same gallery then loads both instead of building."""
    from geocore.cli.main import main
    from geocore.models.gallery_cache import cache_key
    from geocore.models.location_encoder import load_location_encoder

    gallery = _points(3000, 11)
    csv = tmp_path / "gallery.csv"
    csv.write_text("LAT,LON\n" + "\n".join(f"{a:.6f},{b:.6f}" for a, b in gallery.tolist()) + "\n")
    assert main(["index", str(csv), "--index", "ivf"]) == 0
    err = capsys.readouterr().err
    assert "3,000 points: embeddings computed" in err and "approximate index of 3,000 points" in err
    from geocore.geo.gallery import gallery_from_csv

    gallery = gallery_from_csv(csv)  # the points as the command read them
    # the key `geoclip` itself would use: the wheel's location encoder, whatever backbone built the model
    points = base_model.with_gallery(gallery).gallery.cpu()
    key = cache_key(base_model.location_encoder, points, "geoclip")
    assert cache_key(load_location_encoder(), points, "geoclip") == key
    assert base_model.gallery_cache.path_for(key).is_file()  # the embeddings, written by the command

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(ann_index.AnnIndex, "build", no_build)
    again = base_model.with_gallery(gallery, index="ivf")
    again.predict_embeddings(_queries(base_model, 4), 5)  # the index: loaded, not built
    assert main(["index", str(csv), "--index", "bogus"]) == 2
    assert "index: expected one of auto, exact, ivf" in capsys.readouterr().err
