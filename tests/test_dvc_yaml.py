"""dvc.yaml stays honest: each stage lists exactly the code it runs and reads the params it uses."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from satpipe.core.params import Params

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
    if candidate.is_file():
        return candidate
    package = REPO.joinpath(*parts, "__init__.py")  # a subpackage such as satpipe.models.kinds
    return package if len(parts) > 1 and package.is_file() else None


def _packages(module: Path) -> list[Path]:
    """The ``__init__.py`` of every package that holds ``module`` (Python runs each on import)."""
    inits = []
    for parent in module.parents:
        if parent == REPO:
            break
        init = parent / "__init__.py"
        if init.is_file() and init != module:
            inits.append(init)
    return inits


def code_closure(script: Path) -> set[str]:
    """Repo-relative paths of the script and every satpipe/stages module it imports (transitive).

    Importing ``satpipe.models.kinds.threshold`` runs ``satpipe/models/__init__.py`` and
    ``satpipe/models/kinds/__init__.py`` first, so those count as imported too.
    """
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_packages(path))
        for name in _imports(path):
            module = _module_file(name)
            if module is not None:
                todo.append(module)
    top = {REPO / "satpipe" / "__init__.py", REPO / "stages" / "__init__.py"}
    return {p.relative_to(REPO).as_posix() for p in seen if p not in top}


def code_deps(script: Path) -> set[str]:
    """The code deps a stage declares: its ``stages/`` modules and ``satpipe`` subpackages.

    A subpackage (a directory) is declared when the stage imports one of its modules.
    Subpackages rather than modules keep ``dvc.lock`` short (DVC rewrites the whole lock after
    every stage, so its length is paid once per stage run); a change anywhere in a subpackage the
    stage uses reruns it.
    """
    deps = set()
    for path in code_closure(script):
        parts = path.split("/")
        deps.add(path if parts[0] == "stages" else "/".join(parts[:2]))
    return deps


def test_stage_code_deps_are_exactly_the_subpackages_imported() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = REPO / "stages" / f"{name}.py"
        assert f"python -m stages.{name} " in stage["cmd"] + " ", name
        declared = {d for d in stage["deps"] if d.startswith(("stages/", "satpipe/"))}
        assert declared == code_deps(script), f"stage {name}: deps differ from its imports"


def test_code_dependency_directories_hold_only_python() -> None:
    """DVC hashes every file of a directory dep: bytecode caches must stay out (.dvcignore)."""
    ignored = (REPO / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored
    for package in (REPO / "satpipe").iterdir():
        if package.is_dir() and package.name != "__pycache__":
            files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            assert all(p.suffix == ".py" for p in files), package


def test_each_stage_declares_exactly_its_sections_keys() -> None:
    """Params are declared key by key, never as whole sections.

    DVC's run-cache key drops every mapping key named ``size`` (it filters file metadata that
    way), so a section-level ``tile`` dependency made ``tile.size`` invisible to the run cache and
    ``dvc exp run -S tile.size=384`` restored the 256-pixel tiles. Dotted keys are recorded as
    ``tile.size`` and survive. Misspelt keys are still caught: ``check_params`` depends on the
    whole file.
    """
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    sections = {
        "ingest": ["ingest"],
        "tile": ["tile", "features"],
        "train": ["train"],
        "batch_infer": ["batch_infer"],
        "health": ["health"],
    }
    for name, secs in sections.items():
        expected = [
            f"{sec}.{field}"
            for sec in secs
            for field in Params.model_fields[sec].annotation.model_fields
        ]
        assert stages[name]["params"] == expected, name
    # check_params depends on the whole file (its md5), so any edit reruns it.
    assert "params.yaml" in stages["check_params"]["deps"]
    assert "params" not in stages["check_params"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(params) == set(Params.model_fields)
    for sec, values in params.items():
        assert set(values) == set(Params.model_fields[sec].annotation.model_fields), sec
