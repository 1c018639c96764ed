import math

import pytest
import torch

from interp.stats import bonferroni_z, mean_diff_interval, summary_z


def test_the_welch_interval_covers_the_true_difference_at_its_level():
    g = torch.Generator().manual_seed(0)
    covered = 0
    for _ in range(400):  # unequal spreads and sizes: Welch, not the pooled t
        a = (torch.randn(6, generator=g) * 0.3 + 1.0).tolist()
        b = (torch.randn(9, generator=g) * 0.1 + 0.8).tolist()
        diff, lo, hi = mean_diff_interval(a, b)
        assert lo < diff < hi and diff == pytest.approx(sum(a) / 6 - sum(b) / 9)
        covered += lo <= 0.2 <= hi
    assert 0.92 <= covered / 400 <= 0.98


def test_summary_z_and_the_bonferroni_bound():
    assert summary_z(0.1, 0.1, 10, 0.1, 10) == pytest.approx(0.1 / math.sqrt(0.002))
    assert bonferroni_z(1) == pytest.approx(1.96, abs=0.001)
    assert bonferroni_z(32) == pytest.approx(3.16, abs=0.01) and bonferroni_z(64) > bonferroni_z(16)


def test_the_wilson_interval_of_a_seed_rate():
    from interp.stats import rate_interval

    lo, hi = rate_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert rate_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))  # never held: still not proven impossible
    assert rate_interval(3, 3)[0] == pytest.approx(0.4385, abs=1e-4) and rate_interval(3, 3)[1] == 1.0


def test_the_paired_bootstrap_interval_uses_the_pairing():
    from interp.stats import paired_bootstrap_interval

    g = torch.Generator().manual_seed(1)
    item = torch.randn(60, generator=g) * 5  # items differ a lot, each pair by ~0.5 only
    a, b = item + 0.5 + torch.randn(60, generator=g) * 0.1, item
    diff, lo, hi = paired_bootstrap_interval(a, b, n_boot=2000)
    assert diff == pytest.approx((a - b).mean().item()) and lo < 0.5 < hi and hi - lo < 0.1
    assert paired_bootstrap_interval(a, b, n_boot=2000, seed=3) != (diff, lo, hi)  # the seed draws the resamples
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap_interval(a, b[:-1])
