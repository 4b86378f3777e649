"""satpipe.evaluation.kolmogorov gives scipy.stats.kstwo.sf float for float, on every branch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from satpipe.evaluation.kolmogorov import kstwo_sf

# Sample sizes on both sides of every cut in _kolmogn (n <= 140, n <= 100000).
SIZES = [1, 2, 3, 7, 20, 64, 140, 141, 500, 4096, 100000, 100001, 400000]


def _statistics(n: int) -> list[float]:
    """Statistics in every region of _kolmogn for ``n``: bounds, Ruben-Gambino, n x^2 cuts."""
    cuts = [0.0, 0.25 / n, 0.5 / n, 0.75 / n, 1.0 / n, 1.0 - 1.0 / n, 0.5, 0.7, 1.0]
    cuts += [np.sqrt(c / n) for c in (0.1, 0.754693, 1.0, 2.2, 4.0, 10.0, 18.0, 100.0, 370.0)]
    cuts += [*np.linspace(0.0, 1.0, 41), -0.1, 1.1]
    return [float(c) for c in cuts]


@pytest.mark.parametrize("n", SIZES)
def test_equals_scipy_exactly(n: int) -> None:
    for x in _statistics(n):
        ours, theirs = kstwo_sf(x, n), float(stats.kstwo.sf(x, n))
        assert ours == theirs, (n, x, ours, theirs)


def test_health_start_up_does_not_import_scipy_stats() -> None:
    code = (
        "import sys; from satpipe.evaluation import drift; drift.kstwo_sf(0.1, 50); "
        "print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
