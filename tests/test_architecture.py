"""The layering of docs/architecture.md, enforced: who may import whom inside geocore (lazy imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "geocore"

# layer → the geocore layers it may import (itself always allowed). Top-level modules are their own layer.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "resources": set(),
    "geo": {"errors", "resources", "weights"},  # weights: the gallery that ships with GeoCLIP's heads
    "weights": {"errors"},
    "data": {"errors", "geo"},
    "models": {"errors", "geo", "weights", "data"},
    "uncertainty": {"errors", "geo", "data", "models", "eval.metrics"},  # models: the Prediction type
    "explain": {"errors", "geo", "data", "models"},
    "eval": {"errors", "geo", "data", "models", "uncertainty", "explain", "locate", "refs", "cases"},
    "locate": {"errors", "geo", "data", "models", "uncertainty", "hints", "refs"},
    # eval: the Lightning predict loop only, imported inside build_reference_set (eval imports refs' API, not back)
    "refs": {"errors", "geo", "data", "models", "uncertainty", "eval"},
    "cases": {"errors", "geo", "data", "models", "uncertainty", "locate", "hints"},
    "hints": {"errors", "models"},
    "report": {"errors", "geo", "data", "models", "uncertainty", "explain", "locate", "eval", "viz", "weights", "refs", "cases",
               "hints"},
    "viz": {"errors", "geo", "eval", "uncertainty"},
    "train": {"errors", "geo", "data", "models", "weights", "eval.metrics"},
    "cli": {"*"},
    "__main__": {"cli"},
    "__init__": set(),
}


def layer_of(module: str) -> str:
    """geocore.models.geoclip → "models"; geocore.eval.metrics stays "eval.metrics" when the table names it."""
    parts = module.split(".")[1:]
    if len(parts) >= 2 and ".".join(parts[:2]) in {"eval.metrics"}:
        return ".".join(parts[:2])
    return parts[0] if parts else "__init__"


def imports(path: Path) -> set[str]:
    """Every geocore module a file imports, at top level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("geocore")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("geocore") and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_every_import_follows_the_layering():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        me = ".".join(rel.parts)
        mine = layer_of(me) if me != "geocore.__init__" else "__init__"
        own = mine.split(".")[0]
        allowed = ALLOWED.get(mine, ALLOWED.get(own))
        assert allowed is not None, f"{me}: layer {mine!r} is missing from docs/architecture.md and this table"
        for target in imports(path):
            if target in ("geocore", "geocore.__version__"):  # the package's version: anyone
                continue
            other = layer_of(target)
            if other.split(".")[0] == own or "*" in allowed:
                continue
            if other in allowed or other.split(".")[0] in allowed:
                continue
            # `from geocore.eval import metrics` names eval.metrics through the attribute
            if target.startswith("geocore.eval.metrics") and "eval.metrics" in allowed:
                continue
            bad.append(f"{me} imports {target}")
    assert not bad, "imports that break docs/architecture.md:\n" + "\n".join(sorted(set(bad)))


def test_the_library_never_imports_the_app():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import streamlit" not in text and "from app" not in text, path


def test_the_documented_example_model_works_end_to_end(tmp_path, one_thread):
    """The "adding a model" example of docs/architecture.md, run as written: register, predict, explain, save."""
    import re

    import numpy as np
    import torch
    from PIL import Image

    from geocore.explain.gradcam import gradcam
    from geocore.geo.cells import partition_from_frame
    from geocore.locate import locate
    from geocore.models import registry

    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# geocore/models/my_cells.py.*?)```", doc, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "architecture.md", "exec"), namespace)  # noqa: S102 - our own documentation
    try:
        import pandas as pd

        tokens = [["1", "3"], ["11", "13", "31", "33"], ["14", "1c", "34", "3c"]]  # nested S2 cells
        parts = [partition_from_frame(pd.DataFrame({
            "class_label": range(len(t)), "hex_id": t, "imgs_per_cell": 100,
            "latitude_mean": np.linspace(-40, 40, len(t)), "longitude_mean": np.linspace(-100, 100, len(t))}),
            f"level{i}") for i, t in enumerate(tokens)]
        tiny = {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32}
        model = registry.create_model("my-cells", partitions=parts, backbone_kwargs=tiny).eval()
        photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
        import io

        buf = io.BytesIO()
        photo.save(buf, format="PNG")
        [res] = locate(model, [("p.png", buf.getvalue())], top_k=2)
        assert res.ok and len(res.table) == 2
        assert gradcam(model, photo).cam.shape == (40, 50)
        path = model.save_checkpoint(tmp_path / "my.safetensors")
        again = registry.create_model("my-cells", pretrained=str(path)).eval()
        assert torch.equal(again.centroids, model.centroids)
    finally:
        registry.unregister_model("my-cells")
