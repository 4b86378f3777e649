"""Stage check_params: validate the whole params.yaml.

Usage: ``python -m stages.check_params``. Depends on every key in params.yaml, so a misspelt
section or key (``dvc exp run -S tiles.size=512``) fails the run even when no other stage
depends on the misspelt key.
"""

from __future__ import annotations

import argparse
import sys

from satpipe.core.params import load_params
from stages import _cli


def main(args: argparse.Namespace) -> None:
    """Load and validate the params file."""
    load_params(args.params)


if __name__ == "__main__":
    sys.exit(_cli.run("check_params", main, _cli.parser("check_params", __doc__).parse_args()))
