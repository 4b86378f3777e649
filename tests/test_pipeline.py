"""End to end through DVC: a fresh clone reproduces dvc.lock; experiments change tile counts."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.headlines import HEADLINES, check_headlines
from tests.helpers import clone_working_tree, run, tool_env

pytestmark = pytest.mark.slow


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file DVC writes under data/ (scenes, tiles, index, model, predictions...)."""
    data = root / "data"
    return {
        p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data.rglob("*"))
        if p.is_file() and p.name != ".gitignore"
    }


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the repository after ``dvc repro``."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    dest = clone_working_tree(tmp_path_factory.mktemp("clone") / "repo")
    run(["dvc", "repro"], cwd=dest)
    return dest


def test_fresh_clone_reproduces_dvc_lock(clone: Path) -> None:
    result = run(
        ["git", "diff", "--exit-code", "--stat", "dvc.lock", "data/metrics", "data/reports"],
        cwd=clone,
        check=False,
    )
    assert result.returncode == 0, f"dvc repro changed committed files:\n{result.stdout}"
    status = run(["dvc", "status"], cwd=clone)
    assert "up to date" in status.stdout


def test_lock_pins_the_evaluation_and_the_maps(clone: Path) -> None:
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    outs = {o["path"] for name in ("evaluate", "maps") for o in lock[name]["outs"]}
    assert outs == {
        "data/metrics/evaluate.json",
        "data/reports/evaluate.json",
        "data/plots/confusion.json",
        "data/plots/threshold_curve.json",
        "data/plots/feature_histogram.json",
        "data/plots/confusion_pixels.json",
        "data/plots/class_iou.json",
        "data/maps",
        "data/quicklook",
    }
    evaluation = yaml.safe_load((clone / "data/reports/evaluate.json").read_text())
    assert evaluation["evaluated"] is True and evaluation["overall"]["tiles"] > 0


def test_metrics_files_hold_only_the_headline_figures(clone: Path) -> None:
    figures = check_headlines(
        lambda name: clone / f"data/metrics/{name}.json",
        lambda name: clone / f"data/reports/{name}.json",
    )
    assert figures == 10  # every dvc exp show column the pipeline adds
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=clone).stdout)
    files = next(iter(shown.values()))["data"]
    assert sorted(files) == sorted(f"data/metrics/{name}.json" for name in HEADLINES)


def test_plots_render_every_plot(clone: Path, tmp_path: Path) -> None:
    run(["dvc", "plots", "show", "-o", str(tmp_path / "out")], cwd=clone)
    html = (tmp_path / "out/index.html").read_text()
    for field in ('"actual"', '"balanced_accuracy"', '"inference"', '"training"'):
        assert field in html, field
    assert [p.name for p in (tmp_path / "out/static").iterdir()] == [
        "workspace_data_quicklook_synthetic-42.png"
    ]


def test_second_repro_runs_nothing(clone: Path) -> None:
    result = run(["dvc", "repro"], cwd=clone)
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


def test_two_runs_in_separate_dirs_are_byte_identical(clone: Path, tmp_path: Path) -> None:
    second = clone_working_tree(tmp_path / "again")
    run(["dvc", "repro"], cwd=second)
    assert _digests(second) == _digests(clone)


def test_param_typo_fails_with_the_key_named(clone: Path) -> None:
    # DVC itself refuses to override a key that does not exist ...
    result = run(["dvc", "exp", "run", "-S", "tile.sise=512"], cwd=clone, check=False)
    assert result.returncode != 0 and "tile.sise" in result.stderr
    # ... but appending one (+key) or a typo typed into params.yaml reaches our validation,
    # including a misspelt section that no stage but check_params depends on.
    for key, named in (("tile.sise", "tile.sise"), ("tiles.size", "tiles")):
        result = run(["dvc", "exp", "run", "-S", f"+{key}=512"], cwd=clone, check=False)
        assert result.returncode != 0
        assert f"unknown key '{named}'" in result.stdout + result.stderr
        run(["git", "checkout", "--", "params.yaml"], cwd=clone)
    text = (clone / "params.yaml").read_text()
    (clone / "params.yaml").write_text(text.replace("  size: 256", "  sise: 256"))
    result = run(["dvc", "repro"], cwd=clone, check=False)
    assert result.returncode != 0
    assert "unknown key 'tile.sise'" in result.stdout + result.stderr
    run(["git", "checkout", "--", "params.yaml"], cwd=clone)


def test_experiment_changes_tile_count_without_reingesting(clone: Path) -> None:
    before = yaml.safe_load((clone / "data/metrics/tile.json").read_text())["tiles"]
    result = run(["dvc", "exp", "run", "-S", "tile.size=512", "--name", "t512"], cwd=clone)
    assert "Running stage 'ingest'" not in result.stdout
    assert "Running stage 'tile'" in result.stdout
    after = yaml.safe_load((clone / "data/metrics/tile.json").read_text())["tiles"]
    assert before > after > 0
    show = run(["dvc", "exp", "show", "--no-pager", "--csv"], cwd=clone).stdout
    assert "t512" in show
    diff = run(["dvc", "metrics", "diff", "HEAD"], cwd=clone).stdout
    assert re.search(r"^data/metrics/tile\.json\s+tiles\s", diff, re.MULTILINE)
    assert re.search(r"^data/metrics/evaluate\.json\s+bal_acc\s", diff, re.MULTILINE)


def test_queued_experiments_run(clone: Path) -> None:
    for size in (128, 384):
        run(
            ["dvc", "exp", "run", "--queue", "-S", f"tile.size={size}", "--name", f"q{size}"],
            cwd=clone,
        )
    run(["dvc", "queue", "start", "--jobs", "1"], cwd=clone)
    run(["dvc", "queue", "logs", "q128"], cwd=clone, check=False)
    deadline_runs = 0
    while deadline_runs < 120:
        status = run(["dvc", "queue", "status"], cwd=clone).stdout
        if "Queued" not in status and "Running" not in status:
            break
        deadline_runs += 1
        subprocess.run(["sleep", "1"], check=True)
    assert status.count("Success") >= 2, status
    show = run(["dvc", "exp", "show", "--no-pager", "--csv"], cwd=clone).stdout
    assert "q128" in show and "q384" in show


def test_exp_show_fits_a_200_column_terminal(clone: Path) -> None:
    """After the experiments above, every changed metric and param shows in full, no `…`.

    The README's command: queued experiments add the queue's State and Executor columns.
    """
    show = ["dvc", "exp", "show", "--only-changed", "--drop", "State|Executor", "--no-pager"]
    rows = list(csv.reader(io.StringIO(run([*show, "--csv"], cwd=clone).stdout)))
    headline = {key for name in HEADLINES for key in HEADLINES[name][1]} | {"f1_dark", "f1_bright"}
    changed = [c for c in rows[0] if c in headline or c.startswith("tile.")]
    assert {"tiles", "eval_tiles", "bal_acc", "tile.size"} <= set(changed), changed
    table = subprocess.run(
        show, cwd=clone, env={**tool_env(), "COLUMNS": "200"}, capture_output=True, text=True
    ).stdout
    header = f" {table.splitlines()[1]} "
    for column in changed:
        assert f" {column} " in header, f"{column} truncated in:\n{table}"
