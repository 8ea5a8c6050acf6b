"""`--precision auto|fp32|bf16`: what `auto` picks from the CPU's flags, the choice is per thread, bf16 reaches the
towers but not the location encoder, bf16 answers agree with fp32 (tiny random models), Grad-CAM under bf16, CLI."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.errors import InputError
from geocore.explain.gradcam import gradcam
from geocore.locate import locate
from geocore.models import precision as prec
from geocore.models.precision import compute_autocast, current_precision, resolve_precision, use_precision
from geocore.models.registry import create_model

sys.path.insert(0, str(Path(__file__).parent))
from test_explain_gradcam import tiny_geodecoder, tiny_translocator  # noqa: E402

# probabilities of the tiny models under bf16 vs fp32, max |Δ| measured on this CPU (AVX512-BF16): geoclip-tiny
# 0.0036 (images, 200 points; top-1 prob 0.17) and 0.0022 (text); TransLocator 9e-5, GeoDecoder 8e-4 (20 cells).
# The bound leaves room for other CPUs' bf16 kernels.
PROB_TOL = 0.01


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest)."""


def cpuinfo(flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: Fake\nflags\t\t: fpu sse2 avx2 {flags}\nbogomips\t: 1\n\nprocessor\t: 1\n"


@pytest.fixture
def fake_cpu(monkeypatch):
    """`fake_cpu(flags)`: /proc/cpuinfo as a CPU with these flags (cpu_bf16_flags' cache cleared around it)."""

    def use(flags: str) -> None:
        text = cpuinfo(flags)

        class FakePath:  # what cpu_bf16_flags reads: Path("/proc/cpuinfo").read_text(...)
            def __init__(self, path: str) -> None:
                assert path == "/proc/cpuinfo"

            def read_text(self, *args, **kwargs) -> str:
                return text

        monkeypatch.setattr(prec, "Path", FakePath)
        prec.cpu_bf16_flags.cache_clear()

    yield use
    prec.cpu_bf16_flags.cache_clear()


def photos(n: int = 6) -> list[Image.Image]:
    """Structured stand-ins (gradients, stripes, blocks of colour), not noise: their embeddings differ more."""
    out = []
    yy, xx = np.mgrid[0:120, 0:160] / 160.0
    for i in range(n):
        rng = np.random.default_rng(i)
        base = np.stack([np.sin(xx * (i + 1) * 6 + c) * np.cos(yy * (7 - i) * 4) for c in rng.random(3) * 6], -1)
        img = (base * 0.5 + 0.5) * rng.random(3) + rng.random(3) * 0.3
        out.append(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)))
    return out


# ---- what `auto` picks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "found", "auto"), [
    ("avx512f avx512_bf16", ("avx512_bf16",), "bf16"),
    ("amx_tile amx_bf16 amx_int8 avx512_bf16", ("amx_bf16", "avx512_bf16"), "bf16"),
    ("avx512f avx512bw avx512_vnni", (), "fp32"),
    ("", (), "fp32"),
])
def test_auto_follows_the_cpu_flags(fake_cpu, flags, found, auto) -> None:
    fake_cpu(flags)
    assert prec.cpu_bf16_flags() == found
    assert resolve_precision("auto", "cpu") == auto
    assert resolve_precision("AUTO", torch.device("cpu")) == auto
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision(None, "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for: used even where it is slow


def test_auto_keeps_small_models_in_fp32(fake_cpu) -> None:
    from geocore.models.precision import BF16_MIN_PARAMETERS, precision_reason

    fake_cpu("avx512f avx512_bf16")
    small = torch.nn.Linear(100, 100)
    big = torch.nn.Module()
    big.register_parameter("w", torch.nn.Parameter(torch.empty(BF16_MIN_PARAMETERS, device="meta")))
    assert resolve_precision("auto", "cpu", small) == "fp32" and resolve_precision("auto", "cpu", big) == "bf16"
    assert resolve_precision("bf16", "cpu", small) == "bf16"  # asked for: given
    assert precision_reason("auto", "cpu", small) == "fp32 (auto: a 0.0M-parameter model, too small for bf16 to pay)"
    assert precision_reason("auto", "cpu", big) == "bf16 (auto: this CPU has avx512_bf16)"
    with use_precision("auto", "cpu", small) as used:
        assert used == "fp32" == current_precision()


def test_auto_on_other_devices_and_bad_values(fake_cpu) -> None:
    fake_cpu("avx512_bf16")
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "cuda") == "fp32"  # no GPU: nothing to be fast on
    assert resolve_precision("auto", "meta") == "fp32"
    for bad in ("fp16", "half", "", "bfloat16 "):
        with pytest.raises(InputError, match=r"--precision .*expected one of auto, fp32, bf16"):
            resolve_precision(bad or "x", "cpu")
    with pytest.raises(InputError):
        with use_precision("fp8"):
            pass


def test_choice_is_per_thread_and_restored() -> None:
    assert current_precision() == "fp32" and isinstance(compute_autocast("cpu"), contextlib.nullcontext)
    with use_precision("bf16"):
        autocast = compute_autocast("cpu")
        assert isinstance(autocast, torch.autocast) and autocast.fast_dtype == torch.bfloat16
    barrier, seen = threading.Barrier(2), {}

    def worker(name: str, choice: str) -> None:
        with use_precision(choice, "cpu") as used:
            barrier.wait()  # both threads are inside their own `use_precision` now
            seen[name] = (used, current_precision())
            barrier.wait()
        seen[name + "_after"] = current_precision()

    threads = [threading.Thread(target=worker, args=("a", "bf16")), threading.Thread(target=worker, args=("b", "fp32"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"] == ("bf16", "bf16") and seen["b"] == ("fp32", "fp32")
    assert seen["a_after"] == seen["b_after"] == "fp32"
    with use_precision("bf16"):
        other: list[str] = []
        t = threading.Thread(target=lambda: other.append(current_precision()))
        t.start()
        t.join()
        assert current_precision() == "bf16" and other == ["fp32"]  # a new thread does not inherit it
        with use_precision("fp32"):
            assert current_precision() == "fp32"
        assert current_precision() == "bf16"
    assert current_precision() == "fp32"


# ---- bf16 reaches the towers, not the location encoder ------------------------------------------------------------


def _dtype_hook(module: torch.nn.Module, seen: list) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))


@pytest.fixture(scope="module")
def tiny_geoclip():
    g = torch.Generator().manual_seed(0)
    gallery = torch.stack([torch.rand(200, generator=g) * 140 - 60, torch.rand(200, generator=g) * 360 - 180], 1)
    return create_model("geoclip-tiny", gallery=gallery)


def test_bf16_runs_the_geoclip_towers_and_keeps_the_encoder_fp32(tiny_geoclip) -> None:
    m = tiny_geoclip
    pixels = torch.stack([m.preprocess(im) for im in photos(2)])
    image_seen, text_seen, loc_seen = [], [], []
    hooks = [_dtype_hook(m.clip.visual.transformer.resblocks[0].mlp.c_fc, image_seen),
             _dtype_hook(m.clip.transformer.resblocks[0].mlp.c_fc, text_seen),
             _dtype_hook(m.location_encoder.capsules[2].mlp[0], loc_seen)]
    try:
        with use_precision("bf16"):
            emb = m.image_embeddings(pixels)
            text = m.text_embeddings(["a beach"])
            loc = m.embed_locations(torch.tensor([[48.85, 2.35]]))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # an outer autocast (e.g. training) cannot reach it
            loc_outer = m.location_encoder(torch.tensor([[48.85, 2.35]]))
        fp32 = m.image_embeddings(pixels)
    finally:
        for h in hooks:
            h.remove()
    assert image_seen == [torch.bfloat16, torch.float32] and text_seen == [torch.bfloat16]
    assert loc_seen == [torch.float32, torch.float32]
    assert emb.dtype == text.dtype == loc.dtype == loc_outer.dtype == torch.float32
    assert torch.equal(m.embed_locations(torch.tensor([[48.85, 2.35]])), loc)  # bit for bit: never in bf16
    assert not torch.equal(emb, fp32) and torch.allclose(emb, fp32, atol=0.05)


def test_clip_attention_is_plain_attention_with_a_contiguous_projection(tiny_geoclip) -> None:
    """`AutocastSelfAttention` (the CPU bf16 slow path avoided): the same numbers as nn.MultiheadAttention, under
    autocast and not, with the text tower's causal mask and with gradients (Grad-CAM)."""
    import copy

    from geocore.models.clip_backbone import AutocastSelfAttention

    attn = [m for m in tiny_geoclip.clip.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert len(attn) == 4 and all(type(m) is AutocastSelfAttention for m in attn)  # 2 image + 2 text blocks
    ours = attn[0]
    plain = copy.deepcopy(ours)
    plain.__class__ = torch.nn.MultiheadAttention
    x = torch.randn(3, 50, ours.embed_dim, requires_grad=True)
    causal = torch.full((50, 50), float("-inf")).triu_(1)
    for mask in (None, causal):
        for autocast in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                a = ours(x, x, x, need_weights=False, attn_mask=mask)[0]
                b = plain(x, x, x, need_weights=False, attn_mask=mask)[0]
            assert a.dtype == b.dtype == (torch.bfloat16 if autocast else torch.float32)
            assert torch.equal(a, b)  # the same operations, only the projection input laid out differently
    grad = torch.autograd.grad(a.float().sum(), x)[0]
    assert grad.shape == x.shape and torch.isfinite(grad).all()


@pytest.mark.parametrize("build", [tiny_translocator, tiny_geodecoder], ids=["translocator", "geodecoder"])
def test_bf16_runs_the_cell_backbones_and_heads_stay_fp32(build) -> None:
    model = build()
    vit = model.rgb if hasattr(model, "rgb") else model.backbone
    head = model.heads["fine"] if isinstance(model.heads, torch.nn.ModuleDict) else model.heads[2]
    tower, heads = [], []
    hooks = [_dtype_hook(vit.blocks[0].mlp.fc1, tower), _dtype_hook(head, heads)]
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    extra = {"seg": torch.randint(0, 150, (2, 64, 64))} if model.needs_segmentation else {}
    try:
        p32 = model.predict(pixels, 5, full=True, **extra)
        with use_precision("bf16"):
            p16 = model.predict(pixels, 5, full=True, **extra)
    finally:
        for h in hooks:
            h.remove()
    assert tower == [torch.float32, torch.bfloat16] and heads == [torch.float32, torch.float32]
    assert p16.probs_full.dtype == torch.float32
    assert torch.equal(p16.indices[:, 0], p32.indices[:, 0])
    assert 0 < float((p16.probs_full - p32.probs_full).abs().max()) < PROB_TOL


# ---- answers agree with fp32 --------------------------------------------------------------------------------------


def test_locate_bf16_agrees_with_fp32_and_fp32_is_the_exact_default(tiny_geoclip, tmp_path) -> None:
    sources = [(f"p{i}.png", im) for i, im in enumerate(photos(6))]
    for name, im in sources:
        im.save(tmp_path / name)
    sources = [(name, tmp_path / name) for name, _ in sources]
    default = locate(tiny_geoclip, sources, top_k=5, full=True)
    fp32 = locate(tiny_geoclip, sources, top_k=5, full=True, precision="fp32")
    bf16 = locate(tiny_geoclip, sources, top_k=5, full=True, precision="bf16")
    pixels = torch.stack([tiny_geoclip.preprocess(Image.open(p).convert("RGB")) for _, p in sources])
    plain = tiny_geoclip.predict(pixels, 5, full=True)  # no context at all: the reference computation
    p_default = torch.cat([r.prediction.probs_full for r in default])
    assert torch.equal(p_default, plain.probs_full) and torch.equal(p_default, torch.cat([r.prediction.probs_full
                                                                                           for r in fp32]))
    assert [r.precision for r in default] == ["fp32"] * 6 and [r.precision for r in bf16] == ["bf16"] * 6
    top1_32 = [int(r.prediction.indices[0, 0]) for r in fp32]
    assert len(set(top1_32)) >= 2  # the photos do not all land on one point: agreement means something
    assert [int(r.prediction.indices[0, 0]) for r in bf16] == top1_32
    diff = max(float((a.prediction.probs_full - b.prediction.probs_full).abs().max()) for a, b in zip(fp32, bf16))
    assert 0 < diff < PROB_TOL


def test_text_queries_under_bf16(tiny_geoclip) -> None:
    queries = ["a beach", "snowy mountains", "a city street at night"]
    p32 = tiny_geoclip.predict_text(queries, 3, full=True)
    with use_precision("bf16"):
        p16 = tiny_geoclip.predict_text(queries, 3, full=True)
    assert torch.equal(p16.indices[:, 0], p32.indices[:, 0])
    assert float((p16.probs_full - p32.probs_full).abs().max()) < PROB_TOL


# ---- Grad-CAM under bf16 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", ["geoclip", tiny_geodecoder], ids=["geoclip", "geodecoder"])
def test_gradcam_backward_under_bf16_matches_fp32(tiny_geoclip, build) -> None:
    model = tiny_geoclip if build == "geoclip" else build()
    img = photos(1)[0]
    a, b = gradcam(model, img, 3), gradcam(model, img, 3, precision="bf16")
    assert a.precision == "fp32" and b.precision == "bf16" and a.target_desc == b.target_desc
    assert b.cam.dtype == np.float32 and b.cam.max() > 0.5
    assert np.corrcoef(a.cam.ravel(), b.cam.ravel())[0, 1] > 0.98
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0 and current_precision() == "fp32"


# ---- the command line ---------------------------------------------------------------------------------------------


def test_cli_precision_auto_bf16_and_fp32(tmp_path, capsys, fake_cpu, monkeypatch) -> None:
    from geocore.models import precision

    src = tmp_path / "p.png"
    photos(1)[0].save(src)
    fake_cpu("avx512f avx512_bf16")
    assert main(["locate", str(src), "--model", "geoclip-tiny", "--top-k", "2", "--json"]) == 0
    out = capsys.readouterr()  # the tiny model is below BF16_MIN_PARAMETERS: bf16 would be slower
    assert "precision: fp32 (auto: a " in out.err and "-parameter model, too small for bf16 to pay)" in out.err
    assert json.loads(out.out)[0]["precision"] == "fp32"
    monkeypatch.setattr(precision, "BF16_MIN_PARAMETERS", 0)
    assert main(["locate", str(src), "--model", "geoclip-tiny", "--top-k", "2", "--json"]) == 0
    out = capsys.readouterr()
    assert "precision: bf16 (auto: this CPU has avx512_bf16)" in out.err
    assert json.loads(out.out)[0]["precision"] == "bf16"
    fake_cpu("avx512f")
    assert main(["locate", str(src), "--model", "geoclip-tiny", "--top-k", "2"]) == 0
    assert "precision: fp32 (auto: this CPU has no AMX or AVX512-BF16)" in capsys.readouterr().out
    assert main(["locate", str(src), "--model", "geoclip-tiny", "--precision", "bf16", "--json"]) == 0
    out = capsys.readouterr()
    assert "precision: bf16" in out.err and json.loads(out.out)[0]["precision"] == "bf16"
    assert main(["text", "a beach", "--model", "geoclip-tiny", "--precision", "bf16", "--json"]) == 0
    out = capsys.readouterr()
    assert "precision: bf16" in out.err and {r["precision"] for r in json.loads(out.out)} == {"bf16"}
    cam = tmp_path / "cam.png"
    assert main(["explain", str(src), "--model", "geoclip-tiny", "--precision", "fp32", "--output", str(cam)]) == 0
    assert "precision: fp32" in capsys.readouterr().out and cam.is_file()


@pytest.mark.parametrize("command", [["locate", "{src}"], ["text", "a beach"],
                                     ["explain", "{src}", "--output", "{cam}"]])
def test_cli_bad_precision_is_one_line(tmp_path, capsys, command) -> None:
    src, cam = tmp_path / "p.png", tmp_path / "cam.png"
    photos(1)[0].save(src)
    args = [a.format(src=src, cam=cam) for a in command]
    assert main([*args, "--model", "geoclip-tiny", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --precision 'fp16': expected one of auto, fp32, bf16"
    assert not cam.exists()
