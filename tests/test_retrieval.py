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


def test_half_copy_is_reused_and_follows_changes():
    from geocore.models import retrieval

    q, g = _unit(1), _unit(HALF_PRECISION_ABOVE + 1, seed=3)
    first = cosine_scores(q, g)
    copy = retrieval._last[2]
    torch.testing.assert_close(cosine_scores(q, g), first)
    assert retrieval._last[2] is copy  # second scan reused the float16 copy
    g.mul_(-1)  # in place: the copy must be rebuilt
    torch.testing.assert_close(cosine_scores(q, g), -first)
