"""Serve by registry stage: which git revision GTO assigns an artifact's stage to.

GTO (DVC's git-tag model registry, installed with DVC) keeps versions and stage assignments as
git tags: ``gto register threshold-model`` tags ``threshold-model@v0.0.1``, and ``gto assign
threshold-model --version v0.0.1 --stage prod`` tags ``threshold-model#prod#1``. With
``SATPIPE_ARTIFACT`` and ``SATPIPE_STAGE`` set, the service serves the model that ``dvc.lock``
pins at the commit of the stage's latest active assignment (GTO's default order, as ``gto show``
prints it), read through DVC as ``SATPIPE_REV`` does.

Checking for a new assignment is cheap: :func:`tags_signature` stats the tag refs (loose tags
and ``packed-refs``), and the registry is read again only when they change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from satpipe.core.errors import LockfileError


class RegistryError(LockfileError):
    """The artifact or stage has no assignment to serve (not ready, 503)."""


@dataclass(frozen=True)
class Assignment:
    """An artifact's version assigned to a stage, and the commit it names."""

    artifact: str
    stage: str
    version: str
    rev: str


def _git_dir(repo_root: Path) -> Path:
    git = repo_root / ".git"
    if git.is_file():  # a worktree or submodule: "gitdir: <path>"
        target = git.read_text().strip().removeprefix("gitdir:").strip()
        git = (repo_root / target).resolve()
    return git


def tags_signature(repo_root: Path) -> tuple[tuple[int, int], ...]:
    """A cheap fingerprint of the repository's tags: changes when a tag is added or removed."""
    git = _git_dir(repo_root)
    out = []
    for path in (git / "refs" / "tags", git / "packed-refs"):
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0))
        else:
            out.append((st.st_mtime_ns, st.st_size))
    # Assignment tags nest no deeper than refs/tags/<name>, but artifact names may hold "/".
    for root, dirs, _ in os.walk(git / "refs" / "tags"):
        for name in dirs:
            st = os.stat(os.path.join(root, name))
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def resolve(repo_root: Path, artifact: str, stage: str) -> Assignment:
    """The latest active assignment of ``artifact`` to ``stage``.

    Raises:
        RegistryError: not a git repository, no such artifact, or no version in that stage
            (the message lists the artifacts or the stages that have assignments).
    """
    from gto.base import VersionSort
    from gto.exceptions import GTOException
    from gto.registry import GitRegistry

    try:
        with GitRegistry.from_url(str(repo_root)) as registry:
            state = registry.get_state()
            artifacts = state.get_artifacts()
            if artifact not in artifacts:
                known = ", ".join(sorted(artifacts)) or "none registered"
                raise RegistryError(
                    f"registry: no artifact {artifact!r} (artifacts: {known}); register a "
                    f"version with `gto register {artifact}`"
                )
            stages = artifacts[artifact].get_vstages(
                versions_per_stage=1, sort=VersionSort.Timestamp
            )
    except GTOException as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise RegistryError(f"registry at {repo_root}: {reason}") from exc
    if not stages.get(stage):
        assigned = ", ".join(sorted(s for s, v in stages.items() if v)) or "none"
        raise RegistryError(
            f"registry: stage {stage!r} of {artifact!r} has no assignment (stages assigned: "
            f"{assigned}); assign one with `gto assign {artifact} --stage {stage}`"
        )
    vstage = stages[stage][0]
    return Assignment(artifact, stage, vstage.version, vstage.commit_hexsha)
