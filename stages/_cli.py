"""What every stage shares: argument parsing, logging, and the error edge.

A known failure (:class:`satpipe.core.errors.SatpipeError`) becomes one line on stderr,
``error: <message>``, and exit code 1; no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from satpipe.core import logs
from satpipe.core.errors import SatpipeError

log = logging.getLogger(__name__)

# GDAL's block cache defaults to 5% of RAM; every stage reads or writes each block about once, so
# a large cache only inflates RSS (it held 650 MiB while writing an 8192x8192 scene), once per
# worker process.
GDAL_CACHEMAX_MB = "16"


def parser(stage: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the shared ``--params`` option."""
    p = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def run(stage: str, main: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run a stage's ``main`` with logging configured and known errors mapped to exit code 1."""
    logs.configure(stage)
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHEMAX_MB)
    try:
        main(args)
    except SatpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the CLI edge
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    return 0
