"""The Airflow DAG (orchestration/): its task graph is dvc.yaml's stage graph, and a run works.

Airflow lives in its own virtualenv (``make airflow``), so these tests run
``orchestration/dag_check.py`` with that venv's python and read the JSON it writes. The DAG's
tasks run the project's DVC: here the venv running these tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import BIN, REPO, clone_working_tree, run, stage

AIRFLOW_PYTHON = REPO / "orchestration" / ".venv" / "bin" / "python"
DAG_ID = "satpipe_pipeline"
PULL, PUSH = "dvc_pull", "dvc_push"

pytestmark = pytest.mark.skipif(
    not AIRFLOW_PYTHON.is_file(), reason="no Airflow venv: run `make airflow`"
)


def _airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for the Airflow venv: its own home and SQLite database, no SATPIPE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SATPIPE_", "AIRFLOW"))}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
        **extra,
    )
    return env


def _airflow(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the Airflow venv's python with ``args``; its output is returned, not checked."""
    return subprocess.run(
        [str(AIRFLOW_PYTHON), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _report(
    command: str, root: Path, home: Path, **extra: str
) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
    """``dag_check.py <command>`` from checkout ``root``: its JSON report and the process."""
    out = home / f"{command}.json"
    done = _airflow(
        [str(root / "orchestration" / "dag_check.py"), command, str(out)],
        _airflow_env(home, **extra),
        root,
    )
    if done.returncode != 0 or not out.is_file():
        pytest.fail(f"dag_check.py {command} failed ({done.returncode}):\n{done.stderr[-5000:]}")
    return json.loads(out.read_text()), done


def _expected_graph(dvc_yaml: Path) -> tuple[list[str], set[tuple[str, str]]]:
    """dvc.yaml's stages in order, and the edges (A, B): a dep of B is or lies in an out of A."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]

    def paths(entries: list[Any]) -> list[str]:
        return [next(iter(e)) if isinstance(e, dict) else e for e in entries]

    outs = {
        name: paths(spec.get("outs", []) + spec.get("metrics", []) + spec.get("plots", []))
        for name, spec in stages.items()
    }
    edges = {
        (a, b)
        for b, spec in stages.items()
        for dep in paths(spec.get("deps", []))
        for a in stages
        if a != b and any(dep == out or dep.startswith(f"{out}/") for out in outs[a])
    }
    return list(stages), edges


def _reachable(start: str, edges: set[tuple[str, str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for a, b in edges:
            if a == node and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow metadata database (SQLite) after ``airflow db migrate``, to copy per test."""
    home = tmp_path_factory.mktemp("airflow")
    airflow = AIRFLOW_PYTHON.parent / "airflow"
    done = subprocess.run(
        [str(airflow), "db", "migrate"],
        env=_airflow_env(home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return home / "airflow.db"


@pytest.fixture
def airflow_home(tmp_path: Path, migrated_db: Path) -> Path:
    """A fresh AIRFLOW_HOME holding a copy of the migrated database."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copy2(migrated_db, home / "airflow.db")
    return home


def test_dag_imports_and_its_graph_is_the_stage_graph(tmp_path: Path) -> None:
    report, _ = _report("graph", REPO, tmp_path)
    assert report["import_errors"] == {}
    assert list(report["dags"]) == [DAG_ID]
    dag = report["dags"][DAG_ID]
    assert dag["schedule"] == "@daily"
    tasks = dag["tasks"]
    order, edges = _expected_graph(REPO / "dvc.yaml")
    # One task per stage, in dvc.yaml's order, between the pull and the push.
    assert list(tasks) == [PULL, *order, PUSH]
    # A sanity check that the expected graph itself reads dvc.yaml as meant.
    assert {("ingest", "tile"), ("tile", "train"), ("train", "batch_infer")} <= edges

    stage_edges = {(up, t) for t in order for up in tasks[t]["upstream"] if up != PULL}
    assert stage_edges == edges
    roots = {s for s in order if not any(b == s for _, b in edges)}
    leaves = {s for s in order if not any(a == s for a, _ in edges)}
    assert tasks[PULL]["upstream"] == []
    assert {t for t in order if PULL in tasks[t]["upstream"]} == roots
    assert set(tasks[PUSH]["upstream"]) == leaves
    # So every stage runs after the pull and before the push.
    everything = edges | {(PULL, r) for r in roots} | {(leaf, PUSH) for leaf in leaves}
    assert _reachable(PULL, everything) == {*order, PUSH}
    assert all(PUSH in _reachable(s, everything) for s in order)

    assert tasks[PULL]["retries"] == tasks[PUSH]["retries"] == 2
    assert all(tasks[s]["retries"] == 1 for s in order)
    assert all(task["execution_timeout"] for task in tasks.values())


@pytest.mark.slow
def test_dag_run_reproduces_the_pipeline_on_a_fresh_clone(
    tmp_path: Path, airflow_home: Path
) -> None:
    clone = clone_working_tree(tmp_path / "repo")
    # An empty local remote (in the untracked .dvc/config.local): the pull finds nothing there,
    # the stages build everything, the push uploads it.
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "--default", "store", str(remote)], clone)
    # The DAG file in the clone finds its checkout by itself; the clone has no .venv of its own.
    report, done = _report("test", clone, airflow_home, SATPIPE_VENV=str(BIN.parent))
    logs = done.stdout + done.stderr
    assert report["state"] == "success", logs[-5000:]
    assert set(report["tasks"].values()) == {"success"}, report["tasks"]
    for name in ("ingest", "tile", "train", "batch_infer", "maps"):
        assert f"Running stage '{name}'" in logs
    diff = run(
        ["git", "diff", "--exit-code", "--stat", "dvc.lock", "data/metrics", "data/reports"],
        clone,
        False,
    )
    assert diff.returncode == 0, f"the DAG run changed committed files:\n{diff.stdout}"
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert "in sync" in run(["dvc", "status", "--cloud"], clone).stdout


@pytest.mark.slow
def test_a_failing_stage_fails_the_run_with_its_error(tmp_path: Path, airflow_home: Path) -> None:
    clone = clone_working_tree(tmp_path / "repo")
    params = clone / "params.yaml"
    text = params.read_text()
    assert "  size: 256 " in text
    params.write_text(text.replace("  size: 256 ", "  size: -1  "))
    # The stage's own one-line error, straight from the stage.
    direct = stage("check_params", cwd=clone)
    assert direct.returncode == 1
    error = direct.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "tile.size" in error

    report, done = _report("test", clone, airflow_home, SATPIPE_VENV=str(BIN.parent))
    logs = done.stdout + done.stderr
    assert report["state"] == "failed", logs[-5000:]
    states = report["tasks"]
    failed = {name for name, state in states.items() if state == "failed"}
    # check_params fails, and so may any stage that validates the whole params.yaml (ingest
    # does); nothing downstream runs, the push included.
    assert "check_params" in failed
    assert states[PULL] == "success"
    assert f"no DVC remote configured in {clone}: skipping dvc pull" in logs
    assert {states[t] for t in states if t not in failed | {PULL}} == {"upstream_failed"}
    # Each failed task raised with its stage named and the stage's error line.
    for name in failed:
        raised = [line for line in logs.splitlines() if f"stage '{name}' failed: " in line]
        assert raised, logs[-5000:]
        expected = f"DvcCommandError: stage '{name}' failed: {error}"
        assert all(line.endswith(expected) for line in raised), raised
