"""Load the satpipe DAG with Airflow and report on it as JSON (run by the Airflow venv's python).

The project's tests run in the project's environment, which has no Airflow; they run this script
with ``orchestration/.venv/bin/python`` instead and read the JSON it writes:

``python orchestration/dag_check.py graph OUT``
    parse the DAG folder (a ``DagBag``): import errors, and every task of every DAG with its
    upstream tasks, retries and execution timeout.
``python orchestration/dag_check.py test OUT``
    ``dag.test()``: one run of the DAG in this process, on the metadata database of
    ``$AIRFLOW_HOME`` (``airflow db migrate`` it first); the run's state and every task's.

The DAG reads ``SATPIPE_REPO`` and ``SATPIPE_VENV`` from the environment (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parent / "dags"
DAG_ID = "satpipe_pipeline"

# Airflow reads its configuration on import: set the DAG folder first (keep the caller's if set).
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow.dag_processing.dagbag import DagBag  # noqa: E402 - after the configuration above


def _bag() -> DagBag:
    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def graph() -> dict[str, Any]:
    """Import errors and every DAG's tasks (in definition order) with their settings."""
    bag = _bag()
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "schedule": str(dag.schedule),
            "max_active_tasks": dag.max_active_tasks,
            "tasks": {
                task.task_id: {
                    "upstream": sorted(task.upstream_task_ids),
                    "retries": task.retries,
                    "execution_timeout": task.execution_timeout.total_seconds()
                    if task.execution_timeout
                    else None,
                }
                for task in dag.tasks
            },
        }
    return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": dags}


def test() -> dict[str, Any]:
    """Run the DAG once with ``dag.test()``: the run's state and each task's."""
    bag = _bag()
    if DAG_ID not in bag.dags:
        return {"state": None, "import_errors": {str(k): v for k, v in bag.import_errors.items()}}
    run = bag.dags[DAG_ID].test()
    return {
        "state": str(run.state),
        "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
    }


def main(argv: list[str] | None = None) -> int:
    """Write the report of ``graph`` or ``test`` to the given file as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["graph", "test"])
    p.add_argument("out", type=Path, help="JSON file to write")
    args = p.parse_args(argv)
    report = graph() if args.command == "graph" else test()
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
