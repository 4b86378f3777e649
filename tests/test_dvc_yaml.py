"""dvc.yaml stays honest: each stage lists exactly the code it runs and reads the params it uses."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in {"satpipe", "stages"}:
        return None
    candidate = REPO.joinpath(*parts).with_suffix(".py")
    return candidate if candidate.is_file() else None


def code_closure(script: Path) -> set[str]:
    """Repo-relative paths of the script and every satpipe/stages module it imports (transitive)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            module = _module_file(name)
            if module is not None:
                todo.append(module)
    return {p.relative_to(REPO).as_posix() for p in seen if p.name != "__init__.py"}


def test_stage_code_deps_are_exactly_the_modules_imported() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = REPO / "stages" / f"{name}.py"
        assert f"python -m stages.{name} " in stage["cmd"] + " ", name
        declared = {d for d in stage["deps"] if d.endswith(".py")}
        assert declared == code_closure(script), f"stage {name}: deps differ from its imports"


def test_each_stage_reads_only_its_own_sections() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    expected = {
        "check_params": [{"params.yaml": None}],
        "ingest": ["ingest"],
        "tile": ["tile", "features"],
        "train": ["train"],
        "batch_infer": ["batch_infer"],
        "health": ["health"],
    }
    for name, stage in stages.items():
        assert stage["params"] == expected[name], name
    assert set(params) == {"ingest", "tile", "features", "train", "batch_infer", "health"}
