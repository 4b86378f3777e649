"""The satpipe pipeline as an Airflow DAG: ``dvc pull``, one task per DVC stage, ``dvc push``.

The stage tasks and their order are generated from the checkout's ``dvc.yaml`` whenever the DAG
file is parsed, so the DAG cannot drift from the pipeline. Stage B runs after stage A when one of
B's ``deps`` is one of A's outputs (``outs``, ``metrics`` or ``plots``), lies inside one, or
contains one: the rule DVC builds its own graph by. Stages with no upstream stage run after the
pull; stages nothing depends on run before the push.

Each task runs the checkout's own DVC (``<venv>/bin/dvc``, the project's environment) in the
checkout: Airflow lives in a virtualenv of its own, whose pins clash with the project's, and never
imports the project. A stage task is ``dvc repro --single-item <stage>``, so a stage whose inputs
did not change since the committed ``dvc.lock`` is skipped, exactly as ``dvc repro`` would. A
failing command raises :class:`DvcCommandError` carrying the failing stage's one-line error.

Environment, read when the file is parsed:
    SATPIPE_REPO: the project checkout (default: the repository holding this file).
    SATPIPE_VENV: the project's virtualenv (default: ``<checkout>/.venv``).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import yaml
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

# Airflow imports a DAG file under a mangled module name; a fixed name keeps the log readable.
log = logging.getLogger("satpipe_pipeline")

DAG_ID = "satpipe_pipeline"
PULL = "dvc_pull"
PUSH = "dvc_push"

# One stage may run for this long before Airflow kills it and the run fails (a retry gets as much
# again). Sized from what each stage does: downloads and per-tile work get hours, bookkeeping
# minutes. A stage added to dvc.yaml and not listed here gets the default.
STAGE_TIMEOUTS = {
    "check_params": timedelta(minutes=5),
    "ingest": timedelta(hours=2),  # may download or read remote scenes
    "tile": timedelta(hours=2),
    "train": timedelta(minutes=30),
    "batch_infer": timedelta(hours=2),
    "health": timedelta(minutes=15),
    "evaluate": timedelta(minutes=15),
    "maps": timedelta(minutes=30),
}
DEFAULT_STAGE_TIMEOUT = timedelta(hours=1)
TRANSFER_TIMEOUT = timedelta(hours=1)

# A stage is retried once, soon: a transient failure (a network blip while reading a scene, a
# worker killed under memory pressure) passes on the second try, a real error fails twice quickly.
STAGE_RETRIES = 1
STAGE_RETRY_DELAY = timedelta(seconds=10)
# Pull and push only talk to the DVC remote, where waiting a little longer helps.
TRANSFER_RETRIES = 2
TRANSFER_RETRY_DELAY = timedelta(minutes=1)

# The keys of a stage whose entries are paths it writes.
OUTPUT_KEYS = ("outs", "metrics", "plots")
# What a stage prints on stderr for a known failure (stages/_cli.py): one line, then exit 1.
STAGE_ERROR_PREFIX = "error: "


class DvcCommandError(RuntimeError):
    """A DVC command run by a task failed; ``reason`` is the one line that says why."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def default_checkout() -> Path:
    """The project checkout: ``$SATPIPE_REPO``, or the repository that holds this file."""
    env = os.environ.get("SATPIPE_REPO")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2]


def default_venv(checkout: Path) -> Path:
    """The project's virtualenv: ``$SATPIPE_VENV``, or ``<checkout>/.venv``."""
    env = os.environ.get("SATPIPE_VENV")
    return Path(env).resolve() if env else checkout / ".venv"


def _paths(entries: Iterable[Any], wdir: str) -> list[str]:
    """Paths of ``deps``/``outs`` entries (a path, or a one-key mapping of path to options)."""
    paths = []
    for entry in entries:
        path = next(iter(entry)) if isinstance(entry, dict) else entry
        paths.append(os.path.normpath(os.path.join(wdir, str(path))).replace(os.sep, "/"))
    return paths


def load_stages(dvc_yaml: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Every stage of ``dvc_yaml``, in file order, as ``name -> (deps, outputs)``.

    Paths are relative to the file's directory (a stage's ``wdir`` applied).

    Raises:
        ValueError: the file has no stages, or a stage uses ``foreach``/``matrix`` (its expanded
            names are DVC's business; run those with plain ``dvc repro``).
    """
    with dvc_yaml.open(encoding="utf-8") as f:
        document = yaml.safe_load(f) or {}
    stages = document.get("stages") or {}
    if not stages:
        raise ValueError(f"{dvc_yaml}: no stages")
    graph: dict[str, tuple[list[str], list[str]]] = {}
    for name, spec in stages.items():
        if "foreach" in spec or "matrix" in spec:
            raise ValueError(f"{dvc_yaml}: stage {name!r} uses foreach/matrix, not supported")
        wdir = spec.get("wdir", ".")
        outs = [p for key in OUTPUT_KEYS for p in _paths(spec.get(key) or [], wdir)]
        graph[name] = (_paths(spec.get("deps") or [], wdir), outs)
    return graph


def _overlap(a: str, b: str) -> bool:
    """True when path ``a`` is ``b``, lies inside it, or contains it."""
    return a == b or a.startswith(f"{b}/") or b.startswith(f"{a}/")


def stage_graph(stages: dict[str, tuple[list[str], list[str]]]) -> dict[str, list[str]]:
    """``stage -> the stages it runs after``, in the order of ``stages``.

    Stage B runs after stage A when one of B's deps overlaps one of A's outputs.
    """
    return {
        name: [
            other
            for other, (_, outs) in stages.items()
            if other != name and any(_overlap(d, o) for d in deps for o in outs)
        ]
        for name, (deps, _) in stages.items()
    }


def dvc_env(venv: Path) -> dict[str, str]:
    """This environment with ``venv`` activated, so ``python`` in a stage is the project's."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def failure_line(stderr: Iterable[str]) -> str:
    """The line that says why a command failed.

    The stage's own ``error: ...`` line when it printed one (DVC prints its generic "failed to
    reproduce" line after it), otherwise the last non-empty line on stderr.
    """
    lines = [line.strip() for line in stderr if line.strip()]
    for line in reversed(lines):
        if line.startswith(STAGE_ERROR_PREFIX):
            return line
    return lines[-1] if lines else "(nothing on stderr)"


def _log_lines(stream: IO[str], keep: collections.deque[str] | None = None) -> None:
    """Log every line of ``stream`` as it arrives; remember the last ones in ``keep``."""
    for line in stream:
        line = line.rstrip("\n")
        log.info("%s", line)
        if keep is not None:
            keep.append(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    """End ``proc`` and the processes it started (its session): TERM, then KILL after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_dvc(args: list[str], checkout: Path, venv: Path) -> str:
    """Run ``<venv>/bin/dvc *args`` in ``checkout``, its output going to the task log.

    The command runs in a session of its own; if the task is stopped (its execution timeout, or
    a kill from the scheduler) the command and the stage it runs are ended with it.

    Returns:
        The command's standard output.

    Raises:
        DvcCommandError: the command exited non-zero; its ``reason`` is :func:`failure_line`.
    """
    cmd = [str(venv / "bin" / "dvc"), *args]
    if not Path(cmd[0]).is_file():
        raise DvcCommandError(f"no DVC at {cmd[0]}: run `make install` in {checkout}")
    log.info("running %s in %s", " ".join(cmd), checkout)
    stdout: collections.deque[str] = collections.deque()
    stderr: collections.deque[str] = collections.deque(maxlen=200)
    proc = subprocess.Popen(
        cmd,
        cwd=checkout,
        env=dvc_env(venv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    reader = threading.Thread(target=_log_lines, args=(proc.stdout, stdout), daemon=True)
    reader.start()
    try:
        _log_lines(proc.stderr, stderr)
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    reader.join()
    if code != 0:
        reason = failure_line(stderr)
        raise DvcCommandError(f"`dvc {' '.join(args)}` failed (exit {code}): {reason}", reason)
    return "\n".join(stdout)


def _has_remote(checkout: Path, venv: Path) -> bool:
    """True when the checkout's DVC config names at least one remote."""
    return bool(run_dvc(["remote", "list"], checkout, venv).strip())


def transfer(command: str, checkout: str, venv: str) -> None:
    """``dvc pull`` or ``dvc push``; skipped, with a log line, when no DVC remote is configured.

    The pull allows missing data: what the remote lacks is rebuilt by the stages.
    """
    repo, env = Path(checkout), Path(venv)
    if not _has_remote(repo, env):
        log.info("no DVC remote configured in %s: skipping dvc %s", repo, command)
        return
    run_dvc([command, "--allow-missing"] if command == "pull" else [command], repo, env)


def repro(stage: str, checkout: str, venv: str) -> None:
    """Reproduce one stage, without its upstream stages (the DAG ran those already).

    ``--wait-for-lock``: DVC holds a lock on the checkout while it works; a task that finds it
    taken (someone running ``dvc`` by hand) waits instead of failing.

    Raises:
        DvcCommandError: the stage failed: ``stage '<name>' failed: <its one-line error>``.
    """
    try:
        run_dvc(["--wait-for-lock", "repro", "--single-item", stage], Path(checkout), Path(venv))
    except DvcCommandError as exc:
        # The command and DVC's own summary are in the log just above; the stage's line is news.
        raise DvcCommandError(f"stage {stage!r} failed: {exc.reason}", exc.reason) from None


def _stage_groups(graph: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The stages that run after no other, and those no other runs after."""
    downstream = {up for ups in graph.values() for up in ups}
    return [s for s, ups in graph.items() if not ups], [s for s in graph if s not in downstream]


def _transfer_task(task_id: str, command: str, paths: dict[str, str]) -> PythonOperator:
    """The task that runs :func:`transfer` for ``command`` (``pull`` or ``push``)."""
    return PythonOperator(
        task_id=task_id,
        python_callable=transfer,
        op_kwargs={"command": command, **paths},
        retries=TRANSFER_RETRIES,
        retry_delay=TRANSFER_RETRY_DELAY,
        execution_timeout=TRANSFER_TIMEOUT,
    )


def build_dag(checkout: Path, venv: Path) -> DAG:
    """The daily DAG for the pipeline in ``checkout``'s ``dvc.yaml``."""
    graph = stage_graph(load_stages(checkout / "dvc.yaml"))
    paths = {"checkout": str(checkout), "venv": str(venv)}
    with DAG(
        dag_id=DAG_ID,
        description="satpipe: dvc pull, every DVC stage of dvc.yaml, dvc push",
        schedule="@daily",
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        # One DVC workspace: its stages run one at a time (DVC locks it anyway), one run at a time.
        max_active_runs=1,
        max_active_tasks=1,
        default_args={"owner": "satpipe"},
        tags=["satpipe", "dvc"],
        doc_md=__doc__,
    ) as dag:
        pull = _transfer_task(PULL, "pull", paths)
        tasks = {
            stage: PythonOperator(
                task_id=stage,
                python_callable=repro,
                op_kwargs={"stage": stage, **paths},
                retries=STAGE_RETRIES,
                retry_delay=STAGE_RETRY_DELAY,
                execution_timeout=STAGE_TIMEOUTS.get(stage, DEFAULT_STAGE_TIMEOUT),
            )
            for stage in graph
        }
        push = _transfer_task(PUSH, "push", paths)
        for stage, upstream in graph.items():
            for up in upstream:
                tasks[up] >> tasks[stage]
        roots, leaves = _stage_groups(graph)
        pull >> [tasks[s] for s in roots]
        [tasks[s] for s in leaves] >> push
    return dag


_checkout = default_checkout()
dag = build_dag(_checkout, default_venv(_checkout))
