"""Training views: ragged valid observations, the pixel filter, seeded draws with replacement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures import shared_dates_batch
from tessera.train.views import Ragged, draw_view, draw_views, ragged_from_batch


def test_ragged_holds_exactly_the_valid_observations():
    b = shared_dates_batch()
    # make some S1 observations invalid (VV = VH = 0) and one pixel nearly empty
    b.s1_asc[3, :5] = 0
    b.s2_valid[7, :] = False
    b.s2_valid[7, :3] = True
    r, keep = ragged_from_batch(b, min_s2=10, min_s1=10)
    assert 7 not in keep and len(r) == len(keep)
    for k, i in enumerate(keep):
        ok2 = b.s2_valid[i] & b.s2_present[i]
        np.testing.assert_array_equal(r.s2[r.s2_off[k]:r.s2_off[k + 1]], b.s2[i][ok2])
        np.testing.assert_array_equal(r.s2_doy[r.s2_off[k]:r.s2_off[k + 1]], b.s2_doy[i][ok2])
        vals = np.concatenate([b.s1_asc[i][b.s1_asc_valid[i]], b.s1_desc[i][b.s1_desc_valid[i]]])
        doys = np.concatenate([b.s1_asc_doy[i][b.s1_asc_valid[i]],
                               b.s1_desc_doy[i][b.s1_desc_valid[i]]])
        order = np.argsort(doys, kind="stable")  # orbits pooled, by day of year
        np.testing.assert_array_equal(r.s1[r.s1_off[k]:r.s1_off[k + 1]], vals[order])
        np.testing.assert_array_equal(r.s1_doy[r.s1_off[k]:r.s1_off[k + 1]], doys[order])
    assert (r.s2_counts >= 10).all() and (r.s1_counts >= 10).all()


def test_filter_is_configurable():
    b = shared_dates_batch(cloud=0.6)
    strict, _ = ragged_from_batch(b, min_s2=10, min_s1=10)
    loose, keep = ragged_from_batch(b, min_s2=1, min_s1=1)
    assert len(loose) == len(b) > len(strict)
    np.testing.assert_array_equal(keep, np.arange(len(b)))


def test_take_and_concat_round_trip():
    r, _ = ragged_from_batch(shared_dates_batch(), 1, 1)
    idx = np.array([4, 0, 4, 2])
    t = r.take(idx)
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(t.s1[t.s1_off[k]:t.s1_off[k + 1]],
                                      r.s1[r.s1_off[i]:r.s1_off[i + 1]])
    both = Ragged.concat([r.take(np.arange(3)), r.take(np.arange(3, len(r)))])
    for name in ("s2", "s2_doy", "s2_off", "s1", "s1_doy", "s1_off"):
        np.testing.assert_array_equal(getattr(both, name), getattr(r, name))


def test_views_draw_with_replacement_from_valid_dates_only():
    b = shared_dates_batch()
    r, keep = ragged_from_batch(b, 10, 10)
    v = draw_view(r, np.random.default_rng(0), steps=40)
    assert v.s2.shape == (len(r), 40, 10) and v.s1.shape == (len(r), 40, 2)
    for k in range(len(r)):
        valid_doys = set(r.s2_doy[r.s2_off[k]:r.s2_off[k + 1]].tolist())
        assert set(v.s2_doy[k].int().tolist()) <= valid_doys
        # 40 draws from ~14 dates: with replacement, so repeats must occur
        assert len(set(v.s2_doy[k].tolist())) < 40
        assert (torch.diff(v.s2_doy[k]) >= 0).all()  # sorted by position = by date
        s1_doys = set(r.s1_doy[r.s1_off[k]:r.s1_off[k + 1]].tolist())
        assert set(v.s1_doy[k].int().tolist()) <= s1_doys
    assert (v.s1 != 0).any(dim=-1).all()  # never an invalid S1 step


def test_views_are_seeded_and_independent():
    r, _ = ragged_from_batch(shared_dates_batch(), 10, 10)
    a1, a2 = draw_views(r, np.random.default_rng(5))
    b1, b2 = draw_views(r, np.random.default_rng(5))
    assert torch.equal(a1.s2, b1.s2) and torch.equal(a2.s1_doy, b2.s1_doy)
    assert not torch.equal(a1.s2_doy, a2.s2_doy)  # the two views differ


def test_draw_refuses_pixel_without_observations():
    r, _ = ragged_from_batch(shared_dates_batch(), 0, 0)
    r.s1_off = np.concatenate([[0, 0], r.s1_off[1:]])[: len(r.s1_off)]  # pixel 0: no S1
    with pytest.raises(ValueError, match="no valid S1"):
        draw_view(r, np.random.default_rng(0))


def test_mix_combines_inputs():
    r, _ = ragged_from_batch(shared_dates_batch(), 10, 10)
    v1, v2 = draw_views(r, np.random.default_rng(1))
    idx = torch.randperm(len(r))
    m = v1.mix(v2, 0.25, idx)
    assert torch.allclose(m.s2, 0.25 * v1.s2 + 0.75 * v2.s2[idx])
    assert torch.allclose(m.s1_doy, 0.25 * v1.s1_doy + 0.75 * v2.s1_doy[idx])
