"""One criterion's estimates from several models pooled: a random-effects summary.

DerSimonian and Laird's estimator (1986): each model's estimate y_i with standard error s_i,
weights 1 / s_i^2, Cochran's Q, the between-model variance tau^2 = max(0, (Q - (k - 1)) /
(sum w - sum w^2 / sum w)), then weights 1 / (s_i^2 + tau^2) for the pooled mean and its normal
interval. I^2 = max(0, (Q - (k - 1)) / Q) is the share of the spread that is between models.
Standard errors come from each model's bootstrap interval as (hi - lo) / (2 z), which assumes a
roughly normal sampling distribution; the report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm


@dataclass(frozen=True)
class Pooled:
    estimate: float
    lo: float
    hi: float
    tau2: float  # between-model variance
    i2: float  # share of the spread between models (0..1); NaN with one model
    k: int  # models pooled

    def fmt(self) -> str:
        i2 = "n/a" if math.isnan(self.i2) else f"{self.i2:.0%}"
        return (
            f"{self.estimate:.3f} [{self.lo:.3f}, {self.hi:.3f}] over {self.k} models "
            f"(tau^2 {self.tau2:.3g}, I^2 {i2})"
        )


def se_from_interval(lo: float, hi: float, coverage: float) -> float:
    """The standard error a normal interval of this coverage and width implies."""
    return (hi - lo) / (2 * float(norm.ppf(0.5 + coverage / 2)))


def random_effects(estimates: list[float], ses: list[float], level: float = 0.95) -> Pooled:
    """DerSimonian-Laird pooled mean of `estimates` (standard errors `ses`, all > 0)."""
    k = len(estimates)
    if k == 0 or len(ses) != k or any(not s > 0 for s in ses):
        raise ValueError("random_effects needs one positive standard error per estimate")
    w = [1 / s**2 for s in ses]
    fixed = sum(wi * y for wi, y in zip(w, estimates, strict=True)) / sum(w)
    q = sum(wi * (y - fixed) ** 2 for wi, y in zip(w, estimates, strict=True))
    c = sum(w) - sum(wi**2 for wi in w) / sum(w)
    tau2 = max(0.0, (q - (k - 1)) / c) if k > 1 and c > 0 else 0.0
    wr = [1 / (s**2 + tau2) for s in ses]
    mean = sum(wi * y for wi, y in zip(wr, estimates, strict=True)) / sum(wr)
    half = float(norm.ppf(0.5 + level / 2)) / math.sqrt(sum(wr))
    i2 = max(0.0, (q - (k - 1)) / q) if k > 1 and q > 0 else (0.0 if k > 1 else math.nan)
    return Pooled(mean, mean - half, mean + half, tau2, i2, k)
