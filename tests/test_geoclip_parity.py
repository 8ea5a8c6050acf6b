"""GeoCLIP parity with the `geoclip` reference package (MIT), and the weights/caching contract.

Nothing here downloads: the reference's CLIP is random (tiny, or ViT-L/14 for the one slow test); the
heads and gallery are the real ones shipped in the `geoclip` wheel.
"""

from __future__ import annotations

import socket
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

warnings.filterwarnings("ignore", category=FutureWarning)

import geoclip.model.image_encoder as ref_image_encoder  # noqa: E402
from geoclip import GeoCLIP as RefGeoCLIP  # noqa: E402
from geoclip import LocationEncoder as RefLocationEncoder  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

from geocore.errors import GeocoreError, WeightsMissingError  # noqa: E402
from geocore.geo.gallery import default_gallery  # noqa: E402
from geocore.models.clip_backbone import build_clip, clip_image_transform  # noqa: E402
from geocore.models.convert_hf_clip import hf_clip_to_open_clip, open_clip_cfg_from_hf_config  # noqa: E402
from geocore.models.gallery_cache import cache_key  # noqa: E402
from geocore.models.geoclip import TINY_CLIP_CFG, GeoCLIP, geoclip_from_clip  # noqa: E402
from geocore.models.location_encoder import LocationEncoder  # noqa: E402
from geocore.models.registry import create_model, model_entry  # noqa: E402
from geocore.weights.download import download_weights  # noqa: E402
from geocore.weights.paths import geoclip_package_dir  # noqa: E402
from geocore.weights.resolve import resolve_clip_checkpoint  # noqa: E402
from geocore.weights.status import weights_status  # noqa: E402

TINY_HF = dict(
    projection_dim=768,  # so the wheel MLP (768 → 768 → 512) fits
    vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                       patch_size=32, image_size=224, projection_dim=768),
    text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                     vocab_size=49408, max_position_embeddings=77, projection_dim=768, bos_token_id=0,
                     eos_token_id=2),  # as the reference's config: eos 2 → argmax pooling, like open_clip
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOCORE_CACHE_DIR", str(tmp_path / "cache"))


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    """Real-looking (smooth, coloured) images of varied sizes."""
    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (480, 640), (500, 333), (1024, 768), (301, 224)]
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        a = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        im = Image.fromarray(a).resize((w, h), Image.BILINEAR).filter(ImageFilter.GaussianBlur(2))
        out.append(im)
    return out


def _gallery_subset(n: int = 3000, seed: int = 0) -> torch.Tensor:
    g = torch.unique(default_gallery(), dim=0)  # no duplicate points → no exact logit ties
    idx = torch.randperm(g.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return g[idx]


# ---- 1. location encoder ------------------------------------------------------------------------


def test_location_encoder_matches_reference():
    ref = RefLocationEncoder().eval()  # loads the wheel weights
    ours = LocationEncoder.from_geoclip_file(geoclip_package_dir() / "model/weights/location_encoder_weights.pth")
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([[90.0, 0.0], [-90.0, 0.0], [0.0, 180.0], [0.0, -180.0], [0.0, 0.0],
                            [90.0, 180.0], [-90.0, -180.0], [45.0, 180.0], [-45.0, -180.0], [89.999, 179.999]])
    rand = torch.stack([torch.rand(4000, generator=g) * 180 - 90, torch.rand(4000, generator=g) * 360 - 180], 1)
    pts = torch.cat([special, rand, default_gallery()[:1000]])
    with torch.no_grad():
        a, b = ref(pts), ours.eval()(pts)
    cos = F.cosine_similarity(a, b, dim=-1)
    assert a.dtype == b.dtype == torch.float32
    assert cos.min().item() >= 0.99999, f"min cosine {cos.min().item()}"
    # the normalised inference path agrees, chunked or not
    emb = ours.embed(pts, chunk_size=777)
    assert F.cosine_similarity(emb, a, dim=-1).min().item() >= 0.99999
    assert torch.equal(emb, ours.embed(pts))
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(pts)), atol=1e-5)


# ---- 2/3. whole model with the same random backbone ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair():
    """(reference GeoCLIP with a tiny random transformers CLIP, our GeoCLIP with the converted weights)."""
    torch.manual_seed(0)
    hf_cfg = CLIPConfig(**TINY_HF)
    tiny = CLIPModel(hf_cfg).eval()
    mp = pytest.MonkeyPatch()
    mp.setattr(ref_image_encoder, "CLIPModel", lambda config: tiny)  # skip building a random ViT-L
    try:
        ref = RefGeoCLIP(clip_pretrained=False).eval()
    finally:
        mp.undo()
    assert ref.image_encoder.CLIP is tiny
    gallery = _gallery_subset()
    ref.gps_gallery = gallery
    clip = build_clip(clip_cfg=open_clip_cfg_from_hf_config(hf_cfg), state_dict=hf_clip_to_open_clip(tiny.state_dict()))
    ours = geoclip_from_clip(clip, gallery=gallery)
    return ref, ours


def test_tiny_backbone_features_and_topk_match(tiny_pair, tmp_path):
    ref, ours = tiny_pair
    images = _images(5)
    for i, im in enumerate(images):
        im.save(tmp_path / f"{i}.png")
    pixels = torch.cat([ref.image_encoder.preprocess_image(im) for im in images])  # reference preprocessing
    with torch.no_grad():
        ref_feat = ref_image_encoder._extract_image_features(ref.image_encoder.CLIP.get_image_features(pixel_values=pixels))
        ours_feat = ours.forward_features(pixels)
        ref_logits = ref(pixels, ref.gps_gallery)
        ours_logits = ours(pixels)
    assert torch.allclose(ours_feat, ref_feat, atol=1e-5, rtol=1e-4)
    # logits = 39.7 · cosine; the σ = 2^8 Fourier phases amplify float32 rounding of the projection (~1e-7)
    # to ~1e-3 rad, so a few gallery points differ by a few 1e-3 in logit (1e-4 in cosine)
    assert (ours_logits - ref_logits).abs().max().item() < 1e-2
    pred = ours.predict(pixels, top_k=5)
    for i in range(len(images)):
        ref_gps, ref_prob = ref.predict(str(tmp_path / f"{i}.png"), top_k=5)  # the reference's own API
        assert torch.equal(pred.coords[i], ref_gps)
        assert torch.allclose(pred.probs[i], ref_prob, atol=1e-5)


def test_tiny_text_tower_matches(tiny_pair):
    ref, ours = tiny_pair
    texts = ["a photo taken in Paris", "a beach in Brazil", "snowy mountains of Nepal"]
    tokens = ours.tokenize(texts)  # (3, 77), the same ids for both sides
    with torch.no_grad():
        hf = ref_image_encoder._extract_image_features(ref.image_encoder.CLIP.get_text_features(input_ids=tokens))
        oc = ours.clip.encode_text(tokens)
        assert torch.allclose(oc, hf, atol=1e-5, rtol=1e-4)
        loc = F.normalize(ref.location_encoder(ref.gps_gallery), dim=-1)
        txt = F.normalize(ref.image_encoder.mlp(hf), dim=-1)
        ref_top = (ref.logit_scale.exp() * txt @ loc.T).softmax(-1).topk(5)
    pred = ours.predict_text(texts, top_k=5)
    assert torch.equal(pred.indices, ref_top.indices)
    # text queries are peaked (p ≈ 0.3), so the few-1e-3 logit differences (see above) show as ~1e-4
    assert torch.allclose(pred.probs, ref_top.values, atol=1e-5)


def test_preprocessing_matches_clip_image_processor():
    from transformers import CLIPImageProcessor

    clip = build_clip(clip_cfg=TINY_CLIP_CFG, seed=0)
    ours = clip_image_transform(clip, "ViT-L-14", "openai")  # resize 224 bicubic, centre crop, OPENAI mean/std
    hf = CLIPImageProcessor()
    rng = np.random.default_rng(3)
    # camera and web sizes, both orientations, and every residue of the resized side mod 4 (L mod 4 == 3 is where
    # a half-to-even rounded crop lands one pixel off)
    sizes = [(640, 427), (1024, 683), (227, 224), (224, 227), (4032, 3024), (3024, 4032), (1920, 1080), (800, 600),
             (500, 375), (300, 300), (225, 224), (226, 224), (1280, 853), (853, 1280), (1600, 1067), (2048, 1365)]
    sizes += [(224 + k, 224) for k in range(0, 20)] + [(224, 224 + k) for k in range(1, 20)]
    sizes += [(int(w), int(h)) for w, h in rng.integers(224, 1400, (10, 2))]
    assert len(set(sizes)) >= 50
    worst, worst_size = 0.0, None
    for w, h in sorted(set(sizes)):
        # photo-like (smooth) content: on pure noise the two bicubic resizers differ by a few levels at edges
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(2))
        a = ours(im)
        b = hf(images=im, return_tensors="pt")["pixel_values"][0]
        assert a.shape == b.shape == (3, 224, 224)
        diff = (a - b).abs().max().item()
        if diff > worst:
            worst, worst_size = diff, (w, h)
    assert worst < 0.05, (worst, worst_size)  # ~0.015 = one uint8 level of resize rounding / std


@pytest.mark.slow
def test_real_size_vit_l14_random_backbone_matches():
    """Full ViT-L/14 (24 layers), random init on the reference side, converted to open_clip."""
    torch.manual_seed(0)
    ref = RefGeoCLIP(clip_pretrained=False).eval()  # random ViT-L/14 + real wheel heads
    gallery = _gallery_subset(2000, seed=1)
    ref.gps_gallery = gallery
    clip = build_clip("ViT-L-14", state_dict=hf_clip_to_open_clip(ref.image_encoder.CLIP.state_dict()))
    ours = geoclip_from_clip(clip, clip_model="ViT-L-14", tag="openai", gallery=gallery)
    pixels = torch.cat([ref.image_encoder.preprocess_image(im) for im in _images(2, seed=5)])
    with torch.no_grad():
        ref_feat = ref_image_encoder._extract_image_features(ref.image_encoder.CLIP.get_image_features(pixel_values=pixels))
        ours_feat = ours.forward_features(pixels)
        ref_probs = ref(pixels, gallery).softmax(-1)
    assert torch.allclose(ours_feat, ref_feat, atol=1e-4, rtol=1e-4)
    pred = ours.predict(pixels, top_k=5)
    top = ref_probs.topk(5)
    assert torch.equal(pred.indices, top.indices)
    assert torch.allclose(pred.probs, top.values, atol=1e-5)


# ---- 4. gallery embedding cache ------------------------------------------------------------------


def _count_encoder_calls(model: GeoCLIP, monkeypatch) -> list[int]:
    calls = [0]
    inner = model.location_encoder.forward

    def counting(latlon):
        calls[0] += 1
        return inner(latlon)

    monkeypatch.setattr(model.location_encoder, "forward", counting)
    return calls


def test_gallery_embeddings_are_cached(monkeypatch):
    gallery = _gallery_subset(500, seed=2)
    model = create_model("geoclip-tiny", gallery=gallery)
    calls = _count_encoder_calls(model, monkeypatch)
    pixels = torch.stack([model.preprocess(im) for im in _images(2)])
    p1 = model.predict(pixels, top_k=3)
    assert calls[0] == 1 and model.gallery_cache.last_source == "computed"
    p2 = model.predict(pixels, top_k=3)
    assert calls[0] == 1 and model.gallery_cache.last_source == "memory"
    assert torch.equal(p1.indices, p2.indices)
    path = model.gallery_cache.path_for(model.gallery_cache.last_key)
    assert path.is_file() and np.load(path).dtype == np.float32

    fresh = create_model("geoclip-tiny", gallery=gallery)  # a new process would see the same file
    fresh_calls = _count_encoder_calls(fresh, monkeypatch)
    p3 = fresh.predict(pixels, top_k=3)
    assert fresh_calls[0] == 0 and fresh.gallery_cache.last_source == "disk"
    assert torch.equal(p1.indices, p3.indices)

    # a changed gallery or changed weights → another key, and a recompute
    key = cache_key(model.location_encoder, model.gallery, "geoclip")
    assert cache_key(model.location_encoder, gallery[:-1], "geoclip") != key
    model.set_gallery(gallery[:-1])
    model.predict(pixels, top_k=3)
    assert calls[0] == 2
    with torch.no_grad():
        model.location_encoder.capsules[0].head.bias.add_(0.01)
    assert cache_key(model.location_encoder, model.gallery, "geoclip") != model.gallery_cache.last_key
    model.predict(pixels, top_k=3)
    assert calls[0] == 3 and model.gallery_cache.last_source == "computed"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_file_is_recomputed(monkeypatch, damage):
    gallery = _gallery_subset(300, seed=4)
    model = create_model("geoclip-tiny", gallery=gallery)
    expected = model.gallery_embeddings().clone()
    path = model.gallery_cache.path_for(model.gallery_cache.last_key)
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"not a numpy file at all", "truncated": raw[: len(raw) // 2],
                      "wrong_shape": b""}[damage])
    if damage == "wrong_shape":
        np.save(path, np.ones((3, 512), np.float32))
    fresh = create_model("geoclip-tiny", gallery=gallery)
    calls = _count_encoder_calls(fresh, monkeypatch)
    with pytest.warns(UserWarning, match="recomputing"):
        emb = fresh.gallery_embeddings()
    assert calls[0] == 1 and torch.allclose(emb, expected, atol=1e-6)
    assert np.load(path).shape == (300, 512)  # rewritten


# ---- 5. weights ----------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def empty_weights_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("GEOCORE_WEIGHTS_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_missing_backbone_raises_without_network(empty_weights_env, no_network):
    t = time.monotonic()
    with pytest.raises(WeightsMissingError) as err:
        create_model("geoclip", pretrained="openai")
    msg = str(err.value)
    assert "geocore weights download clip-vit-l-14" in msg and "\n" not in msg
    assert str(empty_weights_env / "hf") in msg  # says where it looked
    assert time.monotonic() - t < 30  # generous; it is ~instant
    info = model_entry("geoclip").weights_info()
    assert not info.present and "geocore weights download" in info.how_to_get


def _save_tiny_open_clip(path):
    from safetensors.torch import save_file

    clip = build_clip(clip_cfg=TINY_CLIP_CFG, seed=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return clip


def test_checkpoint_in_weights_dir_is_found(empty_weights_env, no_network, monkeypatch):
    wd = empty_weights_env / "weights"
    ckpt = wd / "clip-vit-l-14" / "open_clip_model.safetensors"
    clip = _save_tiny_open_clip(ckpt)
    monkeypatch.setenv("GEOCORE_WEIGHTS_DIR", str(wd))
    assert resolve_clip_checkpoint("ViT-L-14", "openai") == ckpt
    model = create_model("geoclip", pretrained="openai", clip_cfg=TINY_CLIP_CFG, gallery=_gallery_subset(50))
    assert model.random_backbone is False
    assert torch.equal(model.clip.visual.conv1.weight, clip.visual.conv1.weight)
    assert model_entry("geoclip").weights_info().present
    rows = {r.name: r for r in weights_status()}
    assert rows["clip-vit-l-14"].present and rows["clip-vit-l-14"].where == str(ckpt)


def test_checkpoint_in_hf_cache_is_found(empty_weights_env, no_network):
    snap = empty_weights_env / "hf" / "hub" / "models--timm--vit_large_patch14_clip_224.openai"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    ckpt = snap / "snapshots" / "abc123" / "open_clip_model.safetensors"
    _save_tiny_open_clip(ckpt)
    assert resolve_clip_checkpoint("ViT-L-14", "openai") == ckpt


def test_transformers_clip_in_hf_cache_is_converted(empty_weights_env, no_network):
    """A cached `openai/clip-vit-large-patch14` (what geoclip itself downloads) also works."""
    from safetensors.torch import save_file

    snap = empty_weights_env / "hf" / "hub" / "models--openai--clip-vit-large-patch14"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("def456")
    torch.manual_seed(1)
    hf_cfg = CLIPConfig(**TINY_HF)
    tiny = CLIPModel(hf_cfg).eval()
    ckpt = snap / "snapshots" / "def456" / "model.safetensors"
    ckpt.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(ckpt))
    assert resolve_clip_checkpoint("ViT-L-14", "openai") == ckpt
    model = create_model("geoclip", pretrained="openai", clip_cfg=open_clip_cfg_from_hf_config(hf_cfg),
                         gallery=_gallery_subset(50))
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = ref_image_encoder._extract_image_features(tiny.get_image_features(pixel_values=pixels))
        assert torch.allclose(model.forward_features(pixels), want, atol=1e-5, rtol=1e-4)


def test_weights_status_reports_wheel_heads():
    rows = {r.name: r for r in weights_status()}
    heads = rows["geoclip-heads"]
    assert heads.present and heads.size_mb > 40 and heads.how_to_get == ""
    assert "clip-vit-l-14" in rows and rows["clip-vit-l-14"].size_mb


def test_download_refuses_when_offline(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GeocoreError, match="HF_HUB_OFFLINE=1 is set.*unset it"):
        download_weights("clip-vit-l-14")


def test_download_without_network_fails_with_one_line(empty_weights_env, monkeypatch, no_network):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at import time
    t = time.monotonic()
    with pytest.raises(GeocoreError) as err:
        download_weights("clip-vit-l-14", progress=False, echo=lambda s: None)
    assert time.monotonic() - t < 10
    msg = str(err.value)
    assert "could not download 'clip-vit-l-14'" in msg and "\n" not in msg
