"""Service settings: one frozen, validated object read from ``SATPIPE_*`` environment variables.

Each field ``name`` is set by the variable ``SATPIPE_<NAME>`` (``SATPIPE_REPO``, ``SATPIPE_REV``,
``SATPIPE_API_KEY``...). Relative paths are relative to ``repo``. Nothing is read at import time:
:meth:`Settings.from_env` is called by the app factory, so tests build settings directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from serve.errors import SettingsError

ENV_PREFIX = "SATPIPE_"


class Settings(BaseModel):
    """What the service serves and how (see the module docstring for the variables)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: Path = Field(Path("."), description="root of the DVC project (holds dvc.lock)")
    rev: str | None = Field(
        None, description="serve the model pinned at this git revision (tag, branch, commit)"
    )
    artifact: str | None = Field(
        None, description="serve by registry stage: the GTO artifact (with SATPIPE_STAGE)"
    )
    stage: str | None = Field(
        None, description="serve the model of this artifact's latest assignment to this stage"
    )
    lock_file: str = Field("dvc.lock", description="lock file, relative to repo")
    model_path: str = Field("data/model.json", description="the train stage's model output")
    tile_index_path: str = Field("data/tile_index.json", description="the tile stage's index")
    tiles_dir: str = Field("data/tiles", description="directory /infer paths are relative to")
    train_stage: str = "train"
    tile_stage: str = "tile"
    api_key: SecretStr | None = Field(None, description="require this key in X-API-Key")
    cors_origins: tuple[str, ...] = Field((), description="origins allowed by CORS (none: off)")
    max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="/infer/upload body")
    max_json_bytes: int = Field(1024 * 1024, ge=1024, description="JSON request bodies")
    segments_dir: str = Field("data/segments", description="the segment stage's class COGs")
    segment_stage: str = "segment"
    max_segment_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="/segment upload body, bytes"
    )
    max_segment_samples: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="/segment upload: width x height x bands, read from the TIFF header before "
        "any pixel is decoded",
    )
    max_window_pixels: int = Field(
        4096 * 4096, ge=1, description="/segment/{scene}: pixels of the window a bbox covers"
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    classify_threads: int | None = Field(
        None, ge=1, le=256, description="tiles classified at once, in threads (none: one per core)"
    )
    reload_interval: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="seconds between checks of dvc.lock for a new pin (0: never; restart)",
    )
    reload_settle: float = Field(
        2.0,
        ge=0,
        le=600,
        description="seconds an unreadable dvc.lock is read again before it is reported",
    )
    switch_interval_ms: float = Field(
        0.05,
        gt=0,
        le=100,
        description="how long a thread may hold the GIL while another waits (Python: 5 ms)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Settings:
        if (self.artifact is None) != (self.stage is None):
            raise ValueError("set both SATPIPE_ARTIFACT and SATPIPE_STAGE, or neither")
        if self.artifact is not None and self.rev is not None:
            raise ValueError("SATPIPE_REV and SATPIPE_ARTIFACT/SATPIPE_STAGE exclude each other")
        return self

    @property
    def repo_root(self) -> Path:
        """The project root as an absolute path."""
        return self.repo.expanduser().resolve()

    def path(self, relative: str) -> Path:
        """A path of the project (``relative`` to :attr:`repo_root`)."""
        return self.repo_root / relative

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``SATPIPE_*`` variables (``os.environ`` by default).

        Raises:
            SettingsError: a variable is unknown or its value is invalid, naming the variable.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key.removeprefix(ENV_PREFIX).lower()
            if name not in cls.model_fields:
                known = ", ".join(ENV_PREFIX + f.upper() for f in sorted(cls.model_fields))
                raise SettingsError(f"unknown setting {key} (expected one of: {known})")
            if name == "cors_origins":
                values[name] = tuple(o.strip() for o in raw.split(",") if o.strip())
            else:
                empty_is_none = ("rev", "api_key", "artifact", "stage")
                values[name] = raw if raw != "" or name not in empty_is_none else None
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            if not err["loc"]:  # a rule across settings (_one_source)
                raise SettingsError(str(err["msg"]).removeprefix("Value error, ")) from exc
            name = str(err["loc"][0])
            shown = "***" if name == "api_key" else values.get(name)
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={shown!r}: {err['msg']}") from exc
