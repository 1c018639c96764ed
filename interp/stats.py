"""Intervals for the claims: every verdict on a few seeds or items comes with how sure it is."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy import stats


def mean_diff_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its Welch t interval (unequal variances; independent samples, e.g. seeds)."""
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(level)
    return float(sum(a) / len(a) - sum(b) / len(b)), float(ci.low), float(ci.high)


def summary_z(diff: float, sd_a: float, n_a: int, sd_b: float, n_b: int) -> float:
    """A difference of two means in units of its standard error, from each sample's std and size (Welch):
    for comparing with a paper that published only mean ± std."""
    return diff / (sd_a**2 / n_a + sd_b**2 / n_b) ** 0.5


def bonferroni_z(tests: int, alpha: float = 0.05) -> float:
    """|z| that a two-sided test must exceed for any of `tests` comparisons to count at family-wise level alpha."""
    return float(stats.norm.ppf(1 - alpha / (2 * tests)))


def rate_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate k/n (a claim holding in k of n seeds): sound at small n and at 0 or n."""
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap_interval(a: torch.Tensor, b: torch.Tensor, n_boot: int = 10_000, seed: int = 0,
                              level: float = 0.95) -> tuple[float, float, float]:
    """mean(a − b) over paired items (the same items under two conditions) and its percentile-bootstrap
    interval: items resampled with replacement `n_boot` times."""
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"Paired samples need two equal, non-empty 1-d tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    d = (a - b).double()
    idx = torch.randint(0, len(d), (n_boot, len(d)), generator=torch.Generator().manual_seed(seed))
    lo, hi = torch.quantile(d[idx].mean(1), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=d.dtype)).tolist()
    return d.mean().item(), lo, hi
