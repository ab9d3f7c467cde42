"""Imports flow one way, language → IR → passes → codegen → build → runtime → train → cli.

PIPELINE lists every module of netc in that order; a module may import only modules listed
before it. A new module must be placed in the list, which is the architecture at a glance.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "netc"

PIPELINE = [
    "span", "resources", "errors", "files",                           # leaves
    "ir", "syntax", "parse", "values", "layer_args", "lower",          # language → IR
    "passes.shapes", "passes.params", "passes.receptive", "passes.schedule", "passes.memory",
    "passes.cost",
    "passes", "report", "diagram",                                     # analyses and reports
    "codegen.env", "codegen.views", "codegen",                         # IR → C text
    "build",                                                           # C text → loaded library
    "data.dataset", "data.idx", "data.download", "data.mnist", "data.cifar", "data.arrays",
    "data.images", "data.picture", "data.folder", "data.normalize", "data.synthetic",
    "data.augment",
    "data",                                                            # data sets, no netc deps
    "runtime", "gradcheck", "checkpoint", "distributed", "train", "plot",
    "interop", "interop.c_library",                                    # networks leaving netc
    "cli", "__main__",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def netc_imports(path: Path) -> set[str]:
    """The netc modules a file imports, relative imports resolved; `__version__` is metadata."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join(base + [node.module]))
            else:
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("netc."):
            found.add(node.module.removeprefix("netc."))
    return {m for m in found if m not in ("", "__version__")}


def test_every_module_is_placed_in_the_pipeline():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")} - {""}
    assert modules == set(PIPELINE)


def test_imports_only_flow_down_the_pipeline():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if not name:  # netc/__init__.py re-exports the public API from every stage
            continue
        earlier = set(PIPELINE[:PIPELINE.index(name)])
        assert netc_imports(path) <= earlier, f"{name} imports {netc_imports(path) - earlier}"
