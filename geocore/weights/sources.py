"""The named weights geocore knows about, as plain data (no network, no imports of big libraries)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WeightsSource:
    """One downloadable (or bundled) set of weights.

    kind:      "wheel" (ships in an installed package), "hf" (one file of a Hugging Face Hub repo) or
               "hf-snapshot" (a transformers folder: `snapshot_files` plus one of `filenames`)
    repo_id:   Hub repo, for kinds "hf" and "hf-snapshot"
    filenames: candidate (weights) files in the repo, preferred first
    snapshot_files: for "hf-snapshot", files the folder needs besides the weights (config.json, ...)
    size_mb:   expected download size (approximate), when known
    alternates: other (repo_id, filename) pairs whose cached copy also works (converted on load)
    """

    name: str
    description: str
    kind: str
    repo_id: str = ""
    filenames: tuple[str, ...] = ()
    size_mb: float | None = None
    package: str = ""
    package_files: tuple[str, ...] = ()
    open_clip: tuple[str, str] | None = None  # (architecture, pretrained tag)
    alternates: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    snapshot_files: tuple[str, ...] = ()


SOURCES: dict[str, WeightsSource] = {
    s.name: s
    for s in (
        WeightsSource(
            name="geoclip-heads",
            description="GeoCLIP location encoder, image MLP and logit scale (+ 100K MP-16 GPS gallery)",
            kind="wheel",
            package="geoclip",
            package_files=(
                "model/weights/location_encoder_weights.pth",
                "model/weights/image_encoder_mlp_weights.pth",
                "model/weights/logit_scale_weights.pth",
                "model/gps_gallery/coordinates_100K.csv",
            ),
        ),
        WeightsSource(
            name="clip-vit-l-14",
            description="OpenAI CLIP ViT-L/14 (open_clip 'ViT-L-14', pretrained='openai'), the GeoCLIP backbone",
            kind="hf",
            # open_clip 3.3: get_pretrained_cfg('ViT-L-14', 'openai')['hf_hub'] == 'timm/vit_large_patch14_clip_224.openai/'
            # (trailing slash = open_clip's default file names, safetensors preferred)
            repo_id="timm/vit_large_patch14_clip_224.openai",
            filenames=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            size_mb=1710.0,  # ~428M fp32 parameters
            open_clip=("ViT-L-14", "openai"),
            # the transformers copy that the `geoclip` package itself downloads; converted on load
            alternates=(
                ("openai/clip-vit-large-patch14", "model.safetensors"),
                ("openai/clip-vit-large-patch14", "pytorch_model.bin"),
            ),
        ),
        # SegFormer (Xie et al., NeurIPS 2021) fine-tuned on ADE20K (150 classes) at 512x512, for
        # `geocore segment` and TransLocator's segmentation branch (geocore.explain.segmentation).
        WeightsSource(
            name="segformer-b0-ade",
            description="SegFormer-B0 ADE20K semantic segmentation (150 classes), transformers folder",
            kind="hf-snapshot",
            repo_id="nvidia/segformer-b0-finetuned-ade-512-512",
            filenames=("model.safetensors", "pytorch_model.bin"),
            snapshot_files=("config.json", "preprocessor_config.json"),
            size_mb=15.0,  # ~3.8M fp32 parameters
        ),
        WeightsSource(
            name="segformer-b2-ade",
            description="SegFormer-B2 ADE20K semantic segmentation (150 classes), transformers folder",
            kind="hf-snapshot",
            repo_id="nvidia/segformer-b2-finetuned-ade-512-512",
            filenames=("model.safetensors", "pytorch_model.bin"),
            snapshot_files=("config.json", "preprocessor_config.json"),
            size_mb=110.0,  # ~27.5M fp32 parameters
        ),
    )
}


def source_for_open_clip(model_name: str, tag: str) -> WeightsSource | None:
    """The table entry for open_clip (architecture, tag), if geocore knows it."""
    for s in SOURCES.values():
        if s.open_clip == (model_name, tag):
            return s
    return None


def download_command(name: str) -> str:
    """The shell command that fetches weights `name`."""
    return f"geocore weights download {name}"
