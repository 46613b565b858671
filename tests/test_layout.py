"""The package's layers import only downward, and nothing imports in a circle (read from the source with ast).

    schemas, errors, faults               the contract: imports nothing else of seqpack
    pure modules (inputs, templates, ...) no Beam, no torch
    config                                the run's settings
    transforms                            Beam steps, each with its own small options
    pipeline                              the driver: build, run, commit, lock, runners
    dataset, tools, loader                the read side: no Beam; torch only in loader
    cli                                   the `seqpack` command (the top: may use every layer)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "seqpack"

CONTRACT = ("seqpack.schemas", "seqpack.errors", "seqpack.faults")
WRITE_SIDE = ("seqpack.transforms", "seqpack.pipeline")
TOP = ("seqpack.cli",)
READ_SIDE = ("seqpack.dataset", "seqpack.tools", "seqpack.loader")
RULES: dict[str, tuple[str, ...]] = {
    # layer: what it must not import (seqpack modules by prefix, or third-party roots)
    "seqpack.schemas": ("seqpack.", "apache_beam", "torch"),
    "seqpack.errors": ("seqpack.", "apache_beam", "torch"),
    "seqpack.faults": ("seqpack.", "apache_beam", "torch"),
    "seqpack.config": (*WRITE_SIDE, *READ_SIDE, "seqpack.inputs", "apache_beam", "torch"),
    "seqpack.transforms": ("seqpack.pipeline", "seqpack.config", *READ_SIDE, *TOP, "torch"),
    "seqpack.pipeline": (*READ_SIDE, *TOP, "torch"),
    "seqpack.dataset": (*WRITE_SIDE, *TOP, "seqpack.tools", "seqpack.loader", "seqpack.config", "apache_beam",
                        "torch"),
    "seqpack.tools": (*WRITE_SIDE, *TOP, "seqpack.loader", "seqpack.config", "apache_beam", "torch"),
    "seqpack.loader": (*WRITE_SIDE, *TOP, "seqpack.tools", "seqpack.config", "apache_beam"),
}
PURE_FORBIDDEN = (*WRITE_SIDE, *READ_SIDE, *TOP, "seqpack.config", "apache_beam", "torch")
"""Every other module (inputs, templates, chat, tokenizer, masking, examples, packing, ...) is pure."""
ALLOWED = {
    "seqpack.schemas": ("seqpack.schemas",),
    # A tokenizer given as gs:// or s3:// is read through Beam's filesystems, as inputs are, inside the function
    # that copies it (only for remote tokenizers; moving it to fsspec would drop the dependency).
    "seqpack.tokenizer": ("apache_beam.io.filesystems",),
    "seqpack.tokenizer_cache": ("apache_beam.io.filesystems",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (relative imports resolved); with ``top_level_only``, only those run at import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also imports under `if TYPE_CHECKING:` are not run; ignore them
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_name(path).split(".")
                package = package if path.name == "__init__.py" else package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            found |= submodules or {base}  # `from package import submodule` needs the submodule, not a cycle
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _forbidden_for(module: str) -> tuple[str, ...]:
    for layer, forbidden in RULES.items():
        if module == layer or module.startswith(layer + "."):
            return forbidden
    if module.startswith(TOP) or module == "seqpack":
        return ()
    return PURE_FORBIDDEN


def _matches(name: str, prefix: str) -> bool:
    """``seqpack.`` stands for every seqpack module; other prefixes match a module and what is inside it."""
    return name.startswith(prefix) if prefix.endswith(".") else name == prefix or name.startswith(prefix + ".")


def _violations(module: str) -> list[str]:
    forbidden = _forbidden_for(module)
    allowed = next((a for layer, a in ALLOWED.items() if _matches(module, layer)), ())
    return [
        name
        for name in sorted(imports_of(MODULES[module], top_level_only=False))
        if not any(_matches(name, a) for a in allowed) and any(_matches(name, f) for f in forbidden)
    ]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_layer_imports_only_downward(module: str) -> None:
    assert _violations(module) == [], f"{module} imports what its layer must not (see this file's docstring)"


def test_no_import_cycles() -> None:
    graph = {
        module: {name for name in imports_of(path, top_level_only=True) if name in MODULES and name != module}
        for module, path in MODULES.items()
    }
    cycles = _cycles(graph)
    assert cycles == [], f"import cycles: {cycles}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_rules_catch_an_upward_import() -> None:
    """The checker itself: a transform importing the driver, or schemas importing a pure module, is reported."""
    assert any(_matches("seqpack.pipeline.build", f) for f in _forbidden_for("seqpack.transforms.pack"))
    assert any(_matches("seqpack.masking", f) for f in _forbidden_for("seqpack.schemas.stats"))
    assert not any(_matches("seqpack.schemas.manifest", f) for f in _forbidden_for("seqpack.pipeline.run"))
    assert any(_matches("seqpack.cli.flags", f) for f in _forbidden_for("seqpack.pipeline.run"))
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_module_is_too_long_to_read_in_one_sitting() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 450}
    assert long == {}, "split these modules by concern"
