"""The layering of docs/architecture.md, enforced: who may import whom inside geocore (lazy imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "geocore"

# layer → the geocore layers it may import (itself always allowed). Top-level modules are their own layer.
ALLOWED: dict[str, set[str]] = {
    "tensors": set(),  # as_numpy / on_cpu: below everything
    "errors": {"tensors"},
    "geo": {"tensors", "errors", "weights"},  # weights: the gallery that ships with GeoCLIP's heads
    "weights": {"tensors", "errors"},
    "present": {"tensors", "errors"},
    "metrics": {"tensors", "errors", "geo"},
    "data": {"tensors", "errors", "geo"},
    "models": {"tensors", "errors", "geo", "weights", "data"},
    "runtime": {"tensors", "errors", "data", "models"},
    "uncertainty": {"tensors", "errors", "geo", "data", "models", "metrics"},  # models: the Prediction type
    "explain": {"tensors", "errors", "geo", "data", "models"},
    "hints": {"tensors", "errors", "models"},
    "refs": {"tensors", "errors", "geo", "data", "models", "uncertainty", "runtime", "present"},
    "request": {"tensors", "errors", "geo", "data", "models", "uncertainty", "hints", "refs"},
    "locate": {"tensors", "errors", "geo", "data", "models", "uncertainty", "hints", "refs", "present", "request"},
    "cases": {"tensors", "errors", "geo", "data", "models", "uncertainty", "locate", "hints", "present", "request"},
    "eval": {"tensors", "errors", "geo", "data", "models", "uncertainty", "explain", "locate", "refs", "cases",
             "metrics", "runtime", "present", "request"},
    "viz": {"tensors", "errors", "geo", "eval", "uncertainty", "metrics", "present"},
    "report": {"tensors", "errors", "geo", "data", "models", "uncertainty", "explain", "locate", "eval", "viz",
               "weights", "refs", "cases", "hints", "metrics", "present", "request"},
    "train": {"tensors", "errors", "geo", "data", "models", "weights", "metrics", "runtime"},
    "cli": {"*"},
    "__main__": {"cli"},
    "__init__": set(),
}


def layer_of(module: str) -> str:
    """geocore.models.geoclip → "models"; a top-level module (geocore.locate) is its own layer."""
    parts = module.split(".")[1:]
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
        own = layer_of(me) if me != "geocore.__init__" else "__init__"
        allowed = ALLOWED.get(own)
        assert allowed is not None, f"{me}: layer {own!r} is missing from docs/architecture.md and this table"
        for target in imports(path):
            if target in ("geocore", "geocore.__version__"):  # the package's version: anyone
                continue
            other = layer_of(target)
            if other == own or "*" in allowed or other in allowed:
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


def test_no_two_modules_outside_cli_share_a_file_name():
    """One name per concept: `report.py` in two places, or `regions.py` in three, reads as one thing and is not."""
    app = PACKAGE.parent / "app"
    seen: dict[str, list[str]] = {}
    for path in [*PACKAGE.rglob("*.py"), *app.rglob("*.py")]:
        rel = path.relative_to(PACKAGE.parent)
        if path.name == "__init__.py" or rel.parts[:2] == ("geocore", "cli"):
            continue
        seen.setdefault(path.name, []).append(str(rel))
    shared = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not shared, f"modules sharing a file name: {shared}"


def test_the_layer_table_of_docs_architecture_is_this_table():
    """docs/architecture.md's table names every layer here, with the same imports allowed."""
    import re

    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)(?:/|\.py)?` \| .*? \| ([^|]+) \|$", doc, re.M)
    documented = {name: {x.split(" ")[0].strip("`") for x in re.split(r",\s*", may) if x.strip() not in ("–", "")}
                  for name, may in rows}
    for layer, allowed in ALLOWED.items():
        if layer in ("__main__", "__init__", "cli"):
            continue
        assert layer in documented, f"layer {layer} is missing from docs/architecture.md"
        assert documented[layer] == allowed, f"{layer}: docs say {sorted(documented[layer])}, test {sorted(allowed)}"
