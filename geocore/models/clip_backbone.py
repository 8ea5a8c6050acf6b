"""The frozen open_clip backbone of GeoCLIP: build, load a local checkpoint, preprocess, tokenize.

Nothing here downloads: checkpoints come from `geocore.weights.resolve`, the tokenizer vocabulary and
model configs are bundled with open_clip.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from geocore.errors import InputError
from geocore.models.convert_hf_clip import hf_clip_to_open_clip, is_hf_clip_state_dict

if TYPE_CHECKING:
    import open_clip


def clip_config(clip_model: str | None = None, clip_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """open_clip `CLIP(**cfg)` keyword arguments for a built-in architecture name or a custom dict."""
    import open_clip  # imported lazily: ~5 s, and not needed to list models or report missing weights

    if clip_cfg is not None:
        return dict(clip_cfg)
    cfg = open_clip.get_model_config(clip_model or "")
    if cfg is None:
        raise InputError(f"unknown open_clip architecture {clip_model!r}; e.g. ViT-L-14, ViT-B-32")
    return cfg


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .bin / .pt checkpoint (`weights_only`), unwrapped and in open_clip naming."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # TorchScript archives, pickles with code, truncated or corrupt files
        raise InputError(f"{path}: not a loadable state dict ({type(err).__name__}); "
                         "use a .safetensors or a plain state-dict .bin/.pt") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise InputError(f"{path}: expected a state dict of tensors")
    if next(iter(sd)).startswith("module."):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    for extra in ("input_resolution", "context_length", "vocab_size"):  # OpenAI archive metadata
        sd.pop(extra, None)
    return hf_clip_to_open_clip(sd) if is_hf_clip_state_dict(sd) else sd


def _new_clip(cfg: dict[str, Any], quick_gelu: bool, device: str | None = None) -> open_clip.CLIP:
    import open_clip

    cfg = {**cfg, "quick_gelu": cfg.get("quick_gelu", False) or quick_gelu}
    cfg.pop("custom_text", None)
    with torch.device(device) if device else nullcontext():
        return open_clip.model.CLIP(**cfg)


def build_clip(
    clip_model: str | None = None,
    clip_cfg: dict[str, Any] | None = None,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    quick_gelu: bool = True,
    seed: int | None = None,
) -> open_clip.CLIP:
    """A frozen, eval-mode open_clip CLIP: from `state_dict` if given, else random (seeded if `seed`)."""
    cfg = clip_config(clip_model, clip_cfg)
    if state_dict is None:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = _new_clip(cfg, quick_gelu)
    else:
        # skip the (seconds-long) random init: build on the meta device and adopt the loaded tensors
        model = _new_clip(cfg, quick_gelu, device="meta")
        state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}  # fp16 files
        if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
            state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
        try:
            model.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as err:
            first = " ".join(str(err).split())[:300]
            raise InputError(f"checkpoint does not fit open_clip {clip_model or 'custom config'}: {first}") from None
        model.attn_mask = _causal_mask(model.attn_mask.shape[0])
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise InputError(f"checkpoint is missing tensors for {', '.join(left[:5])}")
    autocast_friendly_attention(model)
    model.requires_grad_(False)
    return model.eval()


class AutocastSelfAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` whose batch-first self-attention, under autocast, projects a contiguous
    sequence-first copy of its input; otherwise exactly `nn.MultiheadAttention` (same weights and state dict).

    PyTorch's batch-first path hands a transposed view to the input projection, and on CPU a bf16 matmul of a
    transposed 3-D input copies the weight once per token position (ViT-L/14: 1.6 GB per layer), which made
    bf16 five times slower than fp32 instead of faster."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        if not (self.batch_first and self._qkv_same_embed_dim and query is key and key is value
                and torch.is_autocast_enabled(query.device.type)):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        x = query.transpose(0, 1).contiguous()  # (L, B, E)
        out, weights = F.multi_head_attention_forward(
            x, x, x, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias, self.bias_k,
            self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias,
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        return out.transpose(0, 1), weights


def autocast_friendly_attention(model: nn.Module) -> nn.Module:
    """Make every plain `nn.MultiheadAttention` in `model` an `AutocastSelfAttention`, in place; returns `model`."""
    for module in model.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = AutocastSelfAttention
    return model


def _causal_mask(n: int) -> torch.Tensor:
    return torch.full((n, n), float("-inf")).triu_(1)  # as open_clip's build_causal_mask


class FloorCenterCrop(T.CenterCrop):
    """Centre crop whose offset is floor((L − size) / 2), as CLIP's reference preprocessing (transformers'
    `CLIPImageProcessor`) crops. torchvision rounds half to even instead, which lands one pixel off whenever the
    resized side L satisfies L mod 4 == 3 (640×427, 1024×683, 227×224, …)."""

    def forward(self, img: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        ch, cw = self.size
        if isinstance(img, Image.Image):
            w, h = img.size
        else:
            h, w = img.shape[-2:]
        if w < cw or h < ch:  # smaller than the crop: torchvision pads; keep its behaviour
            return super().forward(img)
        return TF.crop(img, (h - ch) // 2, (w - cw) // 2, ch, cw)


def clip_image_transform(
    model: open_clip.CLIP, clip_model: str | None = None, tag: str | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's eval transform for the backbone (openai: resize 224 bicubic, centre crop, OPENAI mean/std),
    with the reference's floor-rounded centre crop (`FloorCenterCrop`)."""
    import open_clip

    cfg = asdict(open_clip.transform.PreprocessCfg())
    if clip_model and tag:
        pre = open_clip.get_pretrained_cfg(clip_model, tag) or {}
        cfg.update({k: pre[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pre})
    size = model.visual.image_size
    pipeline = open_clip.image_transform(
        size, is_train=False, mean=cfg["mean"], std=cfg["std"], resize_mode=cfg["resize_mode"],
        interpolation=cfg["interpolation"], fill_color=cfg["fill_color"],
    )
    pipeline.transforms = [FloorCenterCrop(t.size) if type(t) is T.CenterCrop else t for t in pipeline.transforms]
    return pipeline


def clip_tokenizer(model: open_clip.CLIP, clip_model: str | None = None) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's tokenizer for the text tower (bundled BPE vocabulary, no download)."""
    import open_clip

    if clip_model and open_clip.get_model_config(clip_model) is not None:
        return open_clip.get_tokenizer(clip_model)
    return open_clip.SimpleTokenizer(context_length=model.context_length)
