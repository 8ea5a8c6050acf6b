import torch

from geocore.models.retrieval import HALF_PRECISION_ABOVE, cosine_scores


def _unit(n, d=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def test_small_galleries_are_exact_float32():
    q, g = _unit(3), _unit(1000, seed=1)
    torch.testing.assert_close(cosine_scores(q, g), q @ g.T, rtol=0, atol=0)


def test_half_precision_scan_keeps_the_ranking():
    q, g = _unit(4), _unit(HALF_PRECISION_ABOVE + 1, seed=2)
    exact = q @ g.T
    approx = cosine_scores(q, g)
    assert approx.dtype == torch.float32
    assert (approx - exact).abs().max() < 3e-4
    # the top-5 sets agree wherever the exact scores are separated by more than the error
    for i in range(4):
        top = exact[i].topk(6).values
        if (top[4] - top[5]) > 1e-3:
            assert set(approx[i].topk(5).indices.tolist()) == set(exact[i].topk(5).indices.tolist())


def test_large_galleries_are_scanned_in_float16_made_once():
    from geocore.models.registry import create_model
    from geocore.models.retrieval import use_half

    assert use_half(HALF_PRECISION_ABOVE + 1) and not use_half(HALF_PRECISION_ABOVE)
    g = torch.Generator().manual_seed(0)
    points = torch.stack([torch.rand(HALF_PRECISION_ABOVE + 1, generator=g) * 170 - 85,
                          torch.rand(HALF_PRECISION_ABOVE + 1, generator=g) * 360 - 180], dim=1)
    model = create_model("geoclip-tiny", gallery=points)
    emb = model.embed_locations(torch.tensor([[48.85, 2.35], [-33.9, 151.2]]))
    first = model.predict_embeddings(emb, 5, full=True)
    exact = (model.logit_scale.exp() * emb @ model.gallery_embeddings().float().T).softmax(-1)
    assert (first.probs_full - exact).abs().max() < 1e-4  # float16 scan, float32 answer
    again = model.predict_embeddings(emb, 5)
    assert torch.equal(first.indices, again.indices)
