"""Descriptive summaries of one metric: the numbers a summary table shows.

Owns ``summarize``. Pure numpy. Percentiles use numpy's default linear interpolation; ``std`` is
the sample standard deviation (ddof=1), undefined (None) for fewer than two values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    median: float | None
    mean: float | None
    p90: float | None
    p99: float | None
    std: float | None
    min: float | None
    max: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def summarize(values: Iterable[float | None]) -> Summary:
    """Summary of the finite values; ``None`` and NaN are left out."""
    arr = np.array([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return Summary(0, None, None, None, None, None, None, None)
    p50, p90, p99 = (float(x) for x in np.percentile(arr, [50, 90, 99]))
    return Summary(
        n=int(arr.size),
        median=p50,
        mean=float(arr.mean()),
        p90=p90,
        p99=p99,
        std=float(arr.std(ddof=1)) if arr.size > 1 else None,
        min=float(arr.min()),
        max=float(arr.max()),
    )
