import datetime as dt

import numpy as np
import pytest

from tessera import bands


def test_band_order_and_constants():
    assert bands.S2_BANDS == ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
    assert bands.S1_POLS == ("VV", "VH")
    assert bands.S2_MEAN.shape == bands.S2_STD.shape == (10,)
    assert bands.S2_MEAN[0] == pytest.approx(1711.0938) and bands.S2_STD[-1] == pytest.approx(1398.4779)
    assert bands.S1_MEAN.tolist() == pytest.approx([5484.0407, 3003.7812])
    assert bands.S1_STD.tolist() == pytest.approx([1871.2334, 1726.0670])


def test_scl_classes():
    scl = np.arange(12)
    assert bands.scl_valid(scl).tolist() == [s in (4, 5, 6, 7, 10, 11) for s in range(12)]
    assert bands.SCL_VALID | bands.SCL_INVALID == set(range(12))


def test_s1_encoding_roundtrip_and_edges():
    # the published rule on linear power, verbatim: clip((20*log10(x) + 50) * 200, 0, 32767)
    x = np.array([1e-3, 0.05, 1.0, 0.0, -1.0])
    expect = [round((20 * np.log10(v) + 50) * 200) if v > 0 else 0 for v in x]
    assert bands.s1_linear_to_int16(x).tolist() == [max(0, e) for e in expect]
    # standard dB (10*log10 power) gives the same code as its linear power
    db = np.array([-30.0, -25.0, -17.5, -11.3, 0.0, 5.0, 90.0, np.nan])
    code = bands.s1_db_to_int16(db)
    assert code.dtype == np.int16
    np.testing.assert_array_equal(code, bands.s1_linear_to_int16(np.where(np.isnan(db), 0, 10 ** (db / 10))))
    assert code.tolist() == [0, 0, 3000, 5480, 10000, 12000, 32767, 0]
    # the v1 means are typical land backscatter in standard dB
    vv, vh = bands.s1_int16_to_db(np.array([5484, 3004]))
    assert -12 < vv < -10.5 and -18 < vh < -17
    back = bands.s1_int16_to_db(code)
    assert np.isnan(back[0]) and np.isnan(back[-1])
    np.testing.assert_allclose(back[2:6], [-17.5, -11.3, 0.0, 5.0], atol=0.0013)
    np.testing.assert_allclose(bands.s1_amplitude_dn_to_db(np.array([3625.0])), 20 * np.log10(3625) - 83)
    assert np.isnan(bands.s1_amplitude_dn_to_db(np.array([0.0]))[0])


def test_s1_valid_rule():
    sar = np.array([[0, 0], [0, 5], [7, 0], [3, 4]], dtype=np.int16)
    assert bands.s1_valid(sar).tolist() == [False, True, True, True]


def test_boa_offset_rule():
    assert not bands.needs_boa_offset(dt.date(2022, 1, 24))
    assert bands.needs_boa_offset(dt.date(2022, 1, 25))
    assert bands.needs_boa_offset(baseline="04.00")
    assert bands.needs_boa_offset(baseline="N0509")
    assert not bands.needs_boa_offset(dt.date(2023, 1, 1), baseline="03.01")  # baseline decides
    with pytest.raises(ValueError, match="baseline"):
        bands.parse_baseline("four")
    with pytest.raises(ValueError):
        bands.needs_boa_offset()
    v = np.array([0, 500, 1000, 1234, 65535], dtype=np.uint16)
    out = bands.remove_boa_offset(v)
    assert out.dtype == np.uint16 and out.tolist() == [0, 0, 0, 234, 64535]


def test_normalisation():
    x = bands.S2_MEAN + bands.S2_STD
    np.testing.assert_allclose(bands.normalise_s2(x), np.ones(10), rtol=1e-6)
