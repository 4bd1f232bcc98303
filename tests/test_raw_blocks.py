"""The pixel-pair raw metrics run over blocks of candidates: the same numbers as one block, and no
block larger than PAIR_BLOCK values, however many candidates."""

import numpy as np
import pytest

from influence_lab.attribution import raw


@pytest.mark.parametrize("name", ["mae", "ssim", "ssim_of_difference", "cosine", "l2", "hist_corr"])
def test_blocked_metrics_equal_one_block_and_stay_bounded(monkeypatch, name):
    rng = np.random.default_rng(0)
    outputs, items = rng.random((3, 1, 8, 8)), rng.random((50, 1, 8, 8))
    whole = getattr(raw, name)(outputs, items)  # 3 x 50 x 64 values: one block at the default
    sizes = []
    inner = getattr(raw, name).__wrapped__

    def spy(a, b, *args, **kwargs):
        sizes.append(len(a) * b[0].size * len(b))
        return inner(a, b, *args, **kwargs)

    monkeypatch.setattr(raw, "PAIR_BLOCK", 3 * 64 * 7)  # 7 candidates per block
    blocked = raw.blocked(spy)(outputs, items)
    assert whole.shape == blocked.shape == (3, 50)
    if name in ("cosine", "l2"):  # matrix products: a block's summation order may differ
        np.testing.assert_allclose(blocked, whole, rtol=1e-13, atol=1e-14)
    else:  # every pair computed alone: the same bits
        np.testing.assert_array_equal(blocked, whole)
    assert len(sizes) == 8 and max(sizes) <= raw.PAIR_BLOCK
