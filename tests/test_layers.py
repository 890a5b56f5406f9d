"""The package's layers: data flows one way (rasters -> d-pixels -> embeddings -> store -> heads
-> maps), so a module never imports a module of a higher layer, and the parts that the light
core ships (store, geometry, pictures) never import the model or the heavy engines. Every import
counts, also those inside functions: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tessera"

#: Lowest first. A module may import modules of its own layer and of lower ones.
LAYERS: list[tuple[str, ...]] = [
    ("tessera.errors", "tessera.atomic", "tessera.progress", "tessera.cpus", "tessera.bands",
     "tessera.dims", "tessera.quantize", "tessera.dpixel", "tessera.geotiff", "tessera.simulate"),
    ("tessera.geo",),
    ("tessera.model",),
    ("tessera.sampling", "tessera.infer", "tessera.table"),
    ("tessera.preprocess",),
    ("tessera.store",),
    ("tessera.pipeline", "tessera.train"),
    ("tessera.downstream", "tessera.demo"),
    ("tessera.viz",),
    ("tessera.cli", "tessera.__main__"),
]

#: Parts that must stay independent of others even where the layer order would allow it.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "tessera.geo": ("tessera.dpixel", "tessera.simulate", "tessera.geotiff"),
    "tessera.preprocess": ("tessera.model", "tessera.sampling", "tessera.infer", "tessera.table"),
    "tessera.store": ("tessera.model", "tessera.sampling", "tessera.infer", "tessera.table",
                      "tessera.preprocess", "tessera.dpixel", "tessera.simulate"),
    "tessera.viz": ("tessera.model", "tessera.sampling", "tessera.infer", "tessera.table",
                    "tessera.preprocess", "tessera.pipeline", "tessera.train",
                    "tessera.downstream", "tessera.demo"),
}

#: Third-party packages the light core must run without.
HEAVY = ("torch", "dask", "sklearn", "tensorboard")
LIGHT = ("tessera.errors", "tessera.atomic", "tessera.progress", "tessera.cpus", "tessera.bands",
         "tessera.dims",
         "tessera.quantize", "tessera.dpixel", "tessera.geotiff", "tessera.geo", "tessera.store",
         "tessera.viz", "tessera.cli.common", "tessera.cli.store", "tessera.cli.viz")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, me: str | None = None) -> list[tuple[int, str]]:
    """Every module a file imports (absolute names), with the line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = me or _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            # `from tessera import infer` imports the module tessera.infer
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names if mod == "tessera"]
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer(name: str) -> int | None:
    for i, group in enumerate(LAYERS):
        if any(_within(name, p) for p in group):
            return i
    return None


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [_module_name(p) for p in MODULES
               if _module_name(p) != "tessera" and _layer(_module_name(p)) is None]
    assert not missing, f"modules in no layer (add them to LAYERS): {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_upwards(path):
    me = _module_name(path)
    if me == "tessera":
        return  # the package root only re-exports lazily
    mine = _layer(me)
    bad = []
    for line, name in _imports(path):
        if not _within(name, "tessera") or name == "tessera":
            continue
        theirs = _layer(name)
        if theirs is not None and mine is not None and theirs > mine:
            bad.append(f"line {line}: {name} (layer {theirs} > {mine})")
        for part, banned in FORBIDDEN.items():
            if _within(me, part) and any(_within(name, b) for b in banned):
                bad.append(f"line {line}: {name} (forbidden in {part})")
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports upwards: " + "; ".join(bad)


@pytest.mark.parametrize("path", [p for p in MODULES
                                  if any(_within(_module_name(p), m) for m in LIGHT)],
                         ids=lambda p: _module_name(p))
def test_light_core_never_imports_heavy_packages(path):
    bad = [f"line {line}: {name}" for line, name in _imports(path)
           if name.split(".")[0] in HEAVY]
    assert not bad, f"{path.relative_to(PACKAGE.parent)} needs {bad} (the light core must not)"


def test_the_checker_can_fail(tmp_path):
    """The import walker sees lazy and relative imports (else the tests above prove nothing)."""
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from ..infer import Embedder\n    import torch\n"
                 "from tessera import viz\n")
    found = [n for _, n in _imports(f, me="tessera.store.probe")]
    assert "tessera.infer" in found and "torch" in found and "tessera.viz" in found
