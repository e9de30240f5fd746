"""`python -m hallu.analysis.calibrate [--runs R] [--out FILE]`: how often the 2A vs 2B rule errs.

Monte Carlo on synthetic pairs whose truth is known: each pair has a baseline gap (mean 1, sd
0.3, at least 0.2), a 2A and a 2B restoration (sd 0.3 each, correlated 0.5 within the pair, as
both directions patch the same claim) and measurement noise on the patched metric (sd 0.05).
Under the null both restorations are 0.8; under a known effect 2A is 0.8 and 2B 0.5 (2A - 2B =
0.3). For n = 2, 3, 4, 6, 12, 48 pairs it counts, at the TOST's 90% level:

- null, interval: the 90% interval of 2A - 2B excludes 0 (nominal 10%);
- null, verdict: the full rule (hallu/analysis/verdicts.py: analysis.min_pairs, margin 0.05)
  says `supports` or `contradicts` (nominal at most 10%);
- effect, miss: the 90% interval misses the true 0.3 (nominal 10%, i.e. coverage 90%);

for the jackknife t interval the verdicts use (hallu/analysis/intervals.py) and, for comparison, the
percentile bootstrap over pairs that decided before. It prints (or writes) the markdown table of
docs/analysis.md; tests/test_calibration.py runs a smaller one and fails if a t rate exceeds its
nominal level by more than its Monte Carlo error (3 standard errors of a rate at the nominal
level over that many runs: a check that a correct interval fails 0.1% of the time).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from hallu.analysis import intervals
from hallu.analysis.verdicts import CONTRADICTS, SUPPORTS, tost

NS = (2, 3, 4, 6, 12, 48)
LEVEL = 0.90  # the TOST's 1 - 2 alpha interval
NOMINAL = 1 - LEVEL
MARGIN = 0.05
MIN_PAIRS = 10
EFFECT = (0.8, 0.5)  # 2A and 2B restoration under the known effect
NULL = (0.8, 0.8)


@dataclass(frozen=True)
class Rates:
    n: int
    runs: int
    null_interval: float  # t interval excludes 0 under the null
    null_verdict: float  # supports or contradicts under the null (full rule)
    effect_miss: float  # t interval misses the true difference
    boot_null_interval: float | None = None  # the same for the percentile bootstrap
    boot_effect_miss: float | None = None


def mc_error(runs: int, p: float = NOMINAL) -> float:
    """Three standard errors of a rate p estimated from `runs` runs."""
    return 3 * float(np.sqrt(p * (1 - p) / runs))


def pairs(n: int, truth: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(num_a, gap_a, num_b, gap_b) of one synthetic run of n pairs."""
    gap = np.maximum(1.0 + 0.3 * rng.standard_normal(n), 0.2)
    z = rng.standard_normal((2, n))
    ra = truth[0] + 0.3 * z[0]
    rb = truth[1] + 0.3 * (0.5 * z[0] + np.sqrt(0.75) * z[1])
    num_a = ra * gap + 0.05 * rng.standard_normal(n)
    num_b = rb * gap + 0.05 * rng.standard_normal(n)
    return num_a, gap, num_b, gap


def _boot(num_a, gap_a, num_b, gap_b, rng: np.random.Generator, n_boot: int) -> tuple[float, float]:
    """The former rule's interval: percentile bootstrap over pairs of the ratio-of-means
    difference."""
    n = len(num_a)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    d = (w @ num_a) / (w @ gap_a) - (w @ num_b) / (w @ gap_b)
    return tuple(np.quantile(d, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))  # type: ignore[return-value]


def rates(n: int, runs: int, seed: int = 0, n_boot: int = 0) -> Rates:
    """The rates at n pairs over `runs` runs per scenario; n_boot > 0 adds the bootstrap's."""
    rng = np.random.default_rng([seed, n])
    null_iv = null_v = miss = boot_null = boot_miss = 0
    true_d = EFFECT[0] - EFFECT[1]
    for _ in range(runs):
        data = pairs(n, NULL, rng)
        iv = intervals.ratio_difference(*data, LEVEL)
        null_iv += not iv.lo <= 0 <= iv.hi
        verdict = "inconclusive" if n < MIN_PAIRS else tost(iv.lo, iv.hi, MARGIN)
        null_v += verdict in (SUPPORTS, CONTRADICTS)
        if n_boot:
            lo, hi = _boot(*data, rng, n_boot)
            boot_null += not lo <= 0 <= hi
        data = pairs(n, EFFECT, rng)
        iv = intervals.ratio_difference(*data, LEVEL)
        miss += not iv.lo <= true_d <= iv.hi
        if n_boot:
            lo, hi = _boot(*data, rng, n_boot)
            boot_miss += not lo <= true_d <= hi
    boot = (boot_null / runs, boot_miss / runs) if n_boot else (None, None)
    return Rates(n, runs, null_iv / runs, null_v / runs, miss / runs, *boot)


def table(rows: list[Rates]) -> str:
    """The markdown table of docs/analysis.md."""
    err = mc_error(rows[0].runs)
    out = [
        "| pairs | null: t interval excludes 0 | null: verdict supports/contradicts | "
        "effect: t interval misses | null: bootstrap excludes 0 | effect: bootstrap misses |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        boot = [
            f"{x:.1%}" if x is not None else "" for x in (r.boot_null_interval, r.boot_effect_miss)
        ]
        out.append(
            f"| {r.n} | {r.null_interval:.1%} | {r.null_verdict:.1%} | {r.effect_miss:.1%} | "
            f"{boot[0]} | {boot[1]} |"
        )
    out.append("")
    out.append(
        f"Nominal: 10% in every column ({rows[0].runs} runs per cell; Monte Carlo error, three "
        f"standard errors at 10%: {err:.1%})."
    )
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m hallu.analysis.calibrate", description=__doc__)
    ap.add_argument("--runs", type=int, default=2000, help="runs per scenario and n")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (comparison)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the table here (default: print it)")
    args = ap.parse_args(argv)
    text = table([rates(n, args.runs, args.seed, args.n_boot) for n in NS])
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
