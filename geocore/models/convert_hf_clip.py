"""transformers `CLIPModel` state dict → open_clip `CLIP` state dict (vision and text towers).

Used by the parity tests (the `geoclip` reference runs transformers' CLIP) and to load a cached
`openai/clip-vit-large-patch14` transformers checkpoint as the GeoCLIP backbone.
"""

from __future__ import annotations

import re

import torch

_LAYER = re.compile(r"(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)")
_BLOCK_RENAMES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_DIRECT = {
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",  # conv1 has no bias
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: transformers' spelling
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}
_SKIP = re.compile(r".*position_ids$")


def is_hf_clip_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for a transformers CLIPModel state dict (keys like `vision_model.…`)."""
    return any(k.startswith(("vision_model.", "text_model.")) for k in state_dict)


def hf_clip_to_open_clip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/reshape a transformers CLIPModel state dict to open_clip's `CLIP` names.

    q/k/v projections are concatenated into `attn.in_proj_{weight,bias}` (nn.MultiheadAttention);
    the (out, in) projection Linear weights become open_clip's (in, out) `visual.proj` / `text_projection`.
    """
    sd = {k.removeprefix("model."): v for k, v in state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if _SKIP.match(key):
            continue
        if key in _DIRECT:
            out[_DIRECT[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.T.contiguous()  # (proj, width) → (width, proj)
            continue
        m = _LAYER.fullmatch(key)
        if m is None:
            raise KeyError(f"unexpected key in a transformers CLIP state dict: {key!r}")
        tower, idx, rest = m.groups()
        prefix = f"{'visual.' if tower == 'vision_model' else ''}transformer.resblocks.{idx}."
        qm = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
        if qm:
            qkv.setdefault((prefix, qm.group(2)), {})[qm.group(1)] = value
            continue
        for old, new in _BLOCK_RENAMES.items():
            if rest.startswith(old + "."):
                out[prefix + new + rest[len(old):]] = value
                break
        else:
            raise KeyError(f"unexpected key in a transformers CLIP state dict: {key!r}")
    for (prefix, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"incomplete q/k/v projections under {prefix} ({sorted(parts)})")
        out[f"{prefix}attn.in_proj_{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # (3W, …)
    return out


def open_clip_cfg_from_hf_config(config) -> dict:
    """An open_clip `CLIP(**cfg)` config equivalent to a transformers `CLIPConfig` (quick_gelu on)."""
    v, t = config.vision_config, config.text_config
    return {
        "embed_dim": config.projection_dim,
        "quick_gelu": v.hidden_act == "quick_gelu",
        "vision_cfg": {
            "image_size": v.image_size, "patch_size": v.patch_size, "width": v.hidden_size,
            "layers": v.num_hidden_layers, "head_width": v.hidden_size // v.num_attention_heads,
            "mlp_ratio": v.intermediate_size / v.hidden_size,
        },
        "text_cfg": {
            "context_length": t.max_position_embeddings, "vocab_size": t.vocab_size, "width": t.hidden_size,
            "heads": t.num_attention_heads, "layers": t.num_hidden_layers,
            "mlp_ratio": t.intermediate_size / t.hidden_size,
        },
    }
