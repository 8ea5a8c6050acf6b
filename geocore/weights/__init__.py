"""Pretrained weights: where they live, whether they are here, and (only when asked) downloading them.

`resolve`, `status` and `paths` never touch the network; `download.download_weights` is the only code
that does.
"""
