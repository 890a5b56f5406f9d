import numpy as np
import pytest

from tessera.dpixel import DPixelBatch
from tessera.sampling import (all_valid_indices, buckets, draw_v1, s1_candidates, s2_candidates,
                              select)


def batch(n=4, t2=6, ta=3, td=2, seed=0):
    rng = np.random.default_rng(seed)
    return DPixelBatch(
        s2=rng.integers(1, 5000, (n, t2, 10)), s2_doy=np.tile(np.arange(1, t2 + 1) * 10, (n, 1)),
        s2_valid=rng.random((n, t2)) > 0.3, s2_present=np.ones((n, t2), bool),
        s1_asc=rng.integers(1, 9000, (n, ta, 2)).astype(np.int16),
        s1_asc_doy=np.tile(np.arange(1, ta + 1) * 7, (n, 1)), s1_asc_present=np.ones((n, ta), bool),
        s1_desc=rng.integers(1, 9000, (n, td, 2)).astype(np.int16),
        s1_desc_doy=np.tile(np.arange(1, td + 1) * 5, (n, 1)), s1_desc_present=np.ones((n, td), bool))


def test_v1_draws_without_replacement_when_enough():
    rng = np.random.default_rng(0)
    cand = rng.random((50, 120)) > 0.4  # about 72 candidates each
    idx = draw_v1(cand, 40, seed=3, stream=2, pixel_ids=np.arange(50))
    assert idx.shape == (50, 40)
    for i in range(50):
        assert (np.diff(idx[i]) > 0).all()  # sorted and unique
        assert cand[i, idx[i]].all()


def test_v1_draws_with_replacement_when_few():
    cand = np.zeros((3, 30), bool)
    cand[0, [2, 9, 17]] = True
    cand[1, 5] = True
    cand[2, :] = True
    idx = draw_v1(cand, 40, seed=0, stream=2, pixel_ids=np.arange(3))
    assert set(idx[0]) <= {2, 9, 17} and len(set(idx[0])) == 3  # 40 draws cover the 3 dates
    assert (idx[1] == 5).all()
    assert (np.diff(idx[2]) >= 0).all() and cand[2, idx[2]].all()


def test_v1_is_seeded_and_batch_independent():
    rng = np.random.default_rng(1)
    cand = rng.random((20, 90)) > 0.5
    ids = np.arange(100, 120)
    a = draw_v1(cand, 40, seed=7, stream=2, pixel_ids=ids)
    assert np.array_equal(a, draw_v1(cand, 40, seed=7, stream=2, pixel_ids=ids))
    assert not np.array_equal(a, draw_v1(cand, 40, seed=8, stream=2, pixel_ids=ids))
    # a pixel draws the same steps alone as inside the batch
    assert np.array_equal(a[5:6], draw_v1(cand[5:6], 40, seed=7, stream=2, pixel_ids=ids[5:6]))


def test_no_valid_observation_uses_all_present_steps():
    b = batch()
    b.s2_valid[1] = False
    b.s2_present[1, 4:] = False  # padding
    c = s2_candidates(b)
    assert not c.any_valid[1] and c.any_valid[0]
    assert c.candidate[1].tolist() == [True] * 4 + [False] * 2


def test_s1_ascending_then_descending_and_empty_orbit():
    b = batch(ta=3, td=2)
    c = s1_candidates(b)
    assert c.doy[0].tolist() == [7, 14, 21, 5, 10]  # not interleaved by date
    # an orbit without dates becomes one invalid zero step at day 180
    b2 = batch(ta=3, td=0)
    c2 = s1_candidates(b2)
    assert c2.doy[0].tolist() == [7, 14, 21, 180]
    assert c2.values[0, 3].tolist() == [0, 0] and not c2.candidate[0, 3]
    # a pixel with no valid S1 at all draws from every step, zero steps included
    b3 = batch(ta=0, td=0)
    c3 = s1_candidates(b3)
    assert c3.doy[0].tolist() == [180, 180] and c3.candidate.all() and not c3.any_valid.any()
    idx, lengths = select(c3, "all", 0, 1, np.arange(4))
    assert lengths.tolist() == [2, 2, 2, 2]


def test_all_scheme_keeps_every_valid_observation_in_order():
    cand = np.array([[True, False, True, True], [False, False, True, False]])
    idx, lengths = all_valid_indices(cand)
    assert lengths.tolist() == [3, 1]
    assert idx[0, :3].tolist() == [0, 2, 3] and idx[1, :1].tolist() == [2]


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown sampling scheme 'random'"):
        select(s2_candidates(batch()), "random", 0, 0, np.arange(4))


@pytest.mark.parametrize("granularity, max_padding", [(1, 1.05), (8, 1.12)])
def test_buckets_cover_once_within_budget_with_little_padding(granularity, max_padding):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, 5000)
    seen = []
    padded = 0
    shapes = set()
    for rows, length in buckets(lengths, tokens_per_batch=4096, granularity=granularity):
        assert length >= lengths[rows].max() and length % granularity == 0
        assert length - lengths[rows].max() < granularity
        assert len(rows) * length <= 4096 or len(rows) == 1
        seen.extend(rows.tolist())
        padded += len(rows) * length
        shapes.add((len(rows), length))
    assert sorted(seen) == list(range(5000))
    assert padded / lengths.sum() < max_padding  # little of the compute goes to padding
    if granularity == 8:
        assert len(shapes) <= 40  # few distinct batch shapes


def test_buckets_cap_at_max_length():
    out = list(buckets(np.array([3, 5, 6]), tokens_per_batch=100, max_length=6))
    assert out[0][1] == 6


# --- the bucketed schemes of v1.1 and v2 (SPEC 3b) --------------------------------------------

from tessera.sampling import bucket_length, bucketed, resample_pattern  # noqa: E402


def test_bucket_lengths_at_every_edge():
    n = np.array([0, 1, 7, 8, 9, 16, 17, 255, 256, 257, 280])
    assert bucket_length(n, "v1.1").tolist() == [8, 8, 8, 8, 16, 16, 24, 256, 256, 256, 256]
    assert bucket_length(n, "v2").tolist() == [1, 8, 8, 8, 16, 16, 24, 256, 256, 256, 256]


def test_resample_patterns_of_the_published_examples():
    assert resample_pattern(3, 8, "v1.1").tolist() == [0, 1, 2, 0, 1, 1, 1, 2]
    assert resample_pattern(5, 8, "v2").tolist() == [0, 1, 2, 3, 4, 1, 3, 4]
    assert resample_pattern(3, 8, "v2").tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    for scheme in ("v1.1", "v2"):
        assert resample_pattern(8, 8, scheme).tolist() == list(range(8))
    # thinning: v2 truncates linspace (257 -> 256 drops index 255), v1.1 takes chunk middles
    v2 = resample_pattern(257, 256, "v2")
    assert 255 not in v2 and v2[-1] == 256 and len(set(v2.tolist())) == 256
    v11 = resample_pattern(280, 256, "v1.1")
    chunks = np.array_split(np.arange(280), 256)
    assert v11.tolist() == [int(c[len(c) // 2]) for c in chunks]


def test_resampling_keeps_every_observation_once_in_order_then_repeats():
    for scheme in ("v1.1", "v2"):
        for n in range(1, 257):
            b = int(bucket_length(np.array([n]), scheme)[0])
            p = resample_pattern(n, b, scheme)
            assert len(p) == b and p.min() >= 0 and p.max() < n
            assert p[:n].tolist() == list(range(n))  # extras appended at the end


def test_bucketed_maps_patterns_onto_valid_steps_in_time_order():
    cand = np.zeros((3, 12), bool)
    cand[0, [2, 5, 9]] = True  # 3 valid -> 8 steps
    cand[1, :] = True  # 12 valid -> 16 steps
    b = bucketed(cand, "v1.1")
    assert b.length.tolist() == [8, 16, 8] and b.blank.tolist() == [False, False, True]
    assert b.idx[0, :8].tolist() == [2, 5, 9, 2, 5, 5, 5, 9]
    assert b.idx[1, :12].tolist() == list(range(12))
    assert bucketed(cand, "v2").length.tolist() == [8, 16, 1]
