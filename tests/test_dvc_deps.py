"""dvc.yaml's code deps are exactly what each stage's code imports.

DVC templating cannot append to lists (dvc#7151, #8171), so every stage
lists its code files by hand. This test derives the list from the imports
(lazy ones included) and fails, naming stage and file, on a file that is
missing (a change there would not re-run the stage) or declared but never
imported (a change there re-runs it for nothing). Two allowances, each named:

- "model classes": a stage that loads the trained model (or builds one from
  the ``model`` params) runs the code of every model class a conf/model
  option can name (the torch MLP);
- "shipped in the Bento": ``package`` builds an archive whose content is the
  service's import closure, so a change there must rebuild it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tabular_pipeline import imports
from tabular_pipeline.serving.package import SERVICE

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
MODEL_OUT = "${train.model_out}"


def code_deps(stage: str) -> set[Path]:
    return {
        Path(d) for d in STAGES[stage].get("deps", []) if isinstance(d, str) and d.endswith(".py")
    }


def model_class_modules() -> list[str]:
    """Project modules that a conf/model option's ``_target_`` (or task variant) names."""
    found = []
    for path in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        for value in _strings(yaml.safe_load(path.read_text())):
            module = value.rsplit(".", 1)[0]
            if module.split(".")[0] in imports.PROJECT_PACKAGES:
                found.append(module)
    return found


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def expected(stage: str) -> set[Path]:
    roots = [f"stages.{stage}"]
    # unpickled model classes (a stage loading the model) or built ones (from `model`)
    if MODEL_OUT in STAGES[stage].get("deps", []) or "model" in STAGES[stage].get("params", []):
        roots += model_class_modules()
    if stage == "package":
        roots.append(SERVICE.split(":")[0])  # shipped in the Bento
    return imports.closure(ROOT, roots)


def test_model_classes_are_found() -> None:
    assert "tabular_pipeline.models.torch_mlp" in model_class_modules()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_match_imports(stage: str) -> None:
    assert (ROOT / "stages" / f"{stage}.py").is_file(), f"{stage}: no stages/{stage}.py"
    declared, needed = code_deps(stage), expected(stage)
    missing = sorted(str(p) for p in needed - declared)
    unused = sorted(str(p) for p in declared - needed)
    assert not missing, f"stage {stage}: imported but not in dvc.yaml deps: {missing}"
    assert not unused, f"stage {stage}: in dvc.yaml deps but never imported: {unused}"


def test_closure_follows_lazy_and_from_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "tabular_pipeline"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from tabular_pipeline.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\nimport numpy\n")
    (pkg / "sub" / "c.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    found = imports.closure(tmp_path, ["tabular_pipeline.a"])
    assert {p.as_posix() for p in found} == {
        "tabular_pipeline/__init__.py",
        "tabular_pipeline/a.py",
        "tabular_pipeline/sub/__init__.py",
        "tabular_pipeline/sub/b.py",
        "tabular_pipeline/sub/c.py",
    }
    assert imports.third_party(tmp_path, found) == {"numpy"}
