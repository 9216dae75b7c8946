"""No module of the project reaches into another module's private names (``_name``).

import-linter checks which modules import which, not which names, so this reads the source
instead. A helper two modules share gets a public name in a module both may import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "fairskin",
    "fairskin_site",
    "common",
    "accounts",
    "jobs",
    "catalog",
    "training",
    "generation",
    "review",
    "bench",
    "scripts",
)
SKIPPED_FOLDERS = {"migrations", "__pycache__"}


@dataclass(frozen=True)
class SourceModule:
    name: str  # dotted, e.g. "generation.work"; a package's __init__ is the package
    is_package: bool
    path: Path


def project_modules(root: Path = ROOT) -> dict[str, SourceModule]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if SKIPPED_FOLDERS & set(relative.parts[:-1]):
                continue
            parts = relative.with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = SourceModule(name=name, is_package=is_package, path=path)
    return modules


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(module: SourceModule, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _private_module_part(importer: str, target: str) -> str | None:
    """A private module (``pkg._impl``) is private to its package: siblings may import it."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _is_private(part) and importer.split(".")[:i] != parts[:i]:
            return ".".join(parts[: i + 1])
    return None


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None when the chain does not start at a plain name."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(attrs)]


def private_imports(source: str, module: SourceModule, known: set[str]) -> list[tuple[int, str]]:
    """(line, dotted name) for each private name of another project module this source uses:
    ``from x import _name``, ``import x._mod`` and ``x._name`` on an imported project module."""
    tops = {name.split(".")[0] for name in known}
    found: set[tuple[int, str]] = set()
    bound: dict[str, str] = {}  # local name -> the project module it refers to
    tree = ast.parse(source, filename=str(module.path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in tops:
                    continue
                private = _private_module_part(module.name, alias.name)
                if private:
                    found.add((node.lineno, private))
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(module, node)
            if source_module.split(".")[0] not in tops or source_module == module.name:
                continue
            private = _private_module_part(module.name, source_module)
            if private:
                found.add((node.lineno, private))
            for alias in node.names:
                full = f"{source_module}.{alias.name}"
                if full in known:  # a submodule: private to its package, like ``import x._mod``
                    private = _private_module_part(module.name, full)
                    if private:
                        found.add((node.lineno, private))
                elif _is_private(alias.name):
                    found.add((node.lineno, full))
                if full in known:
                    bound[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        chain = _dotted(node) if isinstance(node, ast.Attribute) else None
        if not chain or chain[0] not in bound:
            continue
        current = bound[chain[0]]
        for attr in chain[1:]:
            if _is_private(attr):
                if current != module.name:
                    found.add((node.lineno, f"{current}.{attr}"))
                break
            if f"{current}.{attr}" not in known:
                break  # an attribute of an object, not a module: out of scope
            current = f"{current}.{attr}"
    return sorted(found)


def test_no_module_imports_a_private_name_of_another_module():
    modules = project_modules()
    # The walk must actually see the code it guards, or this test passes on nothing.
    assert {
        "generation.work",
        "training.work",
        "fairskin.review.sampling",
        "catalog.services",
        "bench.catalog_import",
    } <= set(modules)
    known = set(modules)
    problems = [
        f"{module.path.relative_to(ROOT)}:{line}: {name}"
        for module in modules.values()
        for line, name in private_imports(module.path.read_text(), module, known)
    ]
    assert not problems, (
        "private names used across modules; give the helper a public name "
        "in a module both may import:\n" + "\n".join(problems)
    )


KNOWN = {
    "catalog",
    "catalog.services",
    "catalog._impl",
    "catalog._impl.rows",
    "training",
    "training.work",
    "generation",
    "generation.work",
    "generation.plan",
}
WORK = SourceModule("generation.work", is_package=False, path=Path("work.py"))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from training.work import _local_file, run_training", [(1, "training.work._local_file")]),
        ("from .plan import _split", [(1, "generation.plan._split")]),
        ("from . import _helper", [(1, "generation._helper")]),  # its package's, still private
        ("from catalog import _impl", [(1, "catalog._impl")]),
        ("import catalog._impl.rows", [(1, "catalog._impl")]),
        ("from catalog._impl.rows import parse", [(1, "catalog._impl")]),
        (
            "import training.work\n\ntraining.work._set_threads()",
            [(3, "training.work._set_threads")],
        ),
        ("import training.work as th\nth._cache()", [(2, "training.work._cache")]),
        (
            "from catalog import services\nx = services._image_fields",
            [(2, "catalog.services._image_fields")],
        ),
    ],
)
def test_checker_reports_private_names_of_other_modules(source, expected):
    assert private_imports(source, WORK, KNOWN) == expected


@pytest.mark.parametrize(
    "source",
    [
        "from training.work import run_training",
        "from catalog.services import __all__",
        "from os import _exit",  # not the project's: out of scope
        "from generation.work import _cached",  # its own name
        "from catalog import services\nservices.Image._meta",  # a model's API, not a module's
        "def f(services):\n    return services._x",
    ],
)
def test_checker_allows_public_dunder_own_and_third_party_names(source):
    assert private_imports(source, WORK, KNOWN) == []


def test_a_private_module_may_be_imported_by_its_own_package():
    rows = SourceModule("catalog.services", is_package=False, path=Path("services.py"))
    assert private_imports("from catalog._impl.rows import parse", rows, KNOWN) == []
