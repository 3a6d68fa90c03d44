"""Which project files a piece of code needs, read from its imports (never by running it).

Two consumers need the same answer, so it is computed in one place:

- the ``package`` stage ships exactly the package modules that the service
  and the model's own classes import, and pins the third-party distributions
  they import (a Bento must load with no editable install of the project);
- ``tests/test_dvc_deps.py`` checks that each stage's code deps in
  ``dvc.yaml`` are the import closure of its script.

Every ``import`` counts, including the lazy ones inside functions: a lazy
import is still code the stage runs.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# `user` is the generated project's own package (docs/your-code.md): its classes in a
# model ship in the Bento like the template's.
PROJECT_PACKAGES = ("tabular_pipeline", "stages", "user")


def imports_of(root: Path, rel: Path) -> Iterable[tuple[str, tuple[str, ...]]]:
    """(module, imported names) for every import statement in ``root / rel``."""
    tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=str(rel))
    package = rel.parent.parts  # a/b/c.py and a/b/__init__.py both live in package a.b
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            yield module, tuple(a.name for a in node.names)


def module_file(root: Path, module: str) -> Path | None:
    """The file of a project module (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(root)
    return None


def _with_parents(root: Path, module: str) -> list[Path]:
    """Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first."""
    parts = module.split(".")
    files = []
    for i in range(1, len(parts) + 1):
        found = module_file(root, ".".join(parts[:i]))
        if found is not None:
            files.append(found)
    return files


def closure(root: Path, modules: Iterable[str]) -> set[Path]:
    """Project files (relative to ``root``) that importing ``modules`` may execute."""
    todo = [f for m in modules for f in _with_parents(root, m)]
    seen: set[Path] = set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for module, names in imports_of(root, rel):
            if module.split(".")[0] not in PROJECT_PACKAGES:
                continue
            todo.extend(_with_parents(root, module))
            for name in names:  # `from pkg import submodule`
                sub = module_file(root, f"{module}.{name}")
                if sub is not None:
                    todo.append(sub)
    return seen


def third_party(root: Path, files: Iterable[Path]) -> set[str]:
    """Top-level non-stdlib, non-project modules that ``files`` import."""
    found = set()
    for rel in files:
        for module, _ in imports_of(root, rel):
            top = module.split(".")[0]
            if top and top not in sys.stdlib_module_names and top not in PROJECT_PACKAGES:
                found.add(top)
    return found


def object_modules(obj: Any) -> set[str]:
    """Modules of every class and function reachable from ``obj`` (what its pickle imports).

    A pickle names the class of each object it holds; walking the object graph
    finds the same classes without re-reading the file (a joblib pickle is
    not a plain pickle stream, so pickletools cannot scan it).
    """
    seen: set[int] = set()
    modules: set[str] = set()
    todo = [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, type) or (callable(item) and hasattr(item, "__module__")):
            module = getattr(item, "__module__", None)
            if isinstance(module, str):
                modules.add(module)
            if isinstance(item, type):
                continue
        modules.add(type(item).__module__)
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            todo.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            todo.extend(vars(item).values())
    return modules
