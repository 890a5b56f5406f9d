"""Input normalisation statistics of each published model (SPEC sections 2 and 3b).

Every model family z-scores its inputs with its own statistics, `(x - mean) / (std + 1e-9)` in
float32; v1.1 and v2 keep separate statistics for the ascending and descending Sentinel-1 orbits
(each orbit is normalised with its own before the two are merged into one S1 sequence). v1.0 has
one pooled S1 set, stored here as equal ascending and descending rows so that one code path
serves every model. Feeding a model another model's statistics silently degrades every embedding,
so a checkpoint records the id of its set and loading checks it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tessera.bands import NORM_EPS, NORMALISATION_V1, S1_MEAN, S1_STD, S2_MEAN, S2_STD
from tessera.errors import InputError


def _f32(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Stats:
    """One model's statistics: S2 (10 bands, model order) and S1 [VV, VH] per orbit."""

    id: str
    s2_mean: np.ndarray
    s2_std: np.ndarray
    s1_asc_mean: np.ndarray
    s1_asc_std: np.ndarray
    s1_desc_mean: np.ndarray
    s1_desc_std: np.ndarray
    source: str

    @property
    def pooled_s1(self) -> bool:
        """One S1 set for both orbits (v1.0)."""
        return bool(np.array_equal(self.s1_asc_mean, self.s1_desc_mean)
                    and np.array_equal(self.s1_asc_std, self.s1_desc_std))

    def s1_by_orbit(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each (2 orbits [ascending, descending], 2 polarisations)."""
        return (np.stack([self.s1_asc_mean, self.s1_desc_mean]),
                np.stack([self.s1_asc_std, self.s1_desc_std]))

    def to_dict(self) -> dict[str, Any]:
        """The form recorded in checkpoints (v1.0 keeps its historical pooled keys)."""
        if self.id == "v1.0":
            return dict(NORMALISATION_V1)
        return {"id": self.id, "s2_mean": self.s2_mean.tolist(), "s2_std": self.s2_std.tolist(),
                "s1_asc_mean": self.s1_asc_mean.tolist(), "s1_asc_std": self.s1_asc_std.tolist(),
                "s1_desc_mean": self.s1_desc_mean.tolist(),
                "s1_desc_std": self.s1_desc_std.tolist(), "eps": NORM_EPS}

    def matches(self, recorded: object, atol: float = 1e-4) -> bool:
        """Whether a recorded dict (`to_dict` form) holds these statistics."""
        mine = self.to_dict()
        if not isinstance(recorded, dict) or set(recorded) != set(mine):
            return False
        for k, v in mine.items():
            if isinstance(v, str):
                if recorded[k] != v:
                    return False
            elif not np.allclose(np.asarray(recorded[k], dtype=np.float64), v, rtol=0, atol=atol):
                return False
        return True


STATS: dict[str, Stats] = {
    "v1.0": Stats("v1.0", S2_MEAN, S2_STD, S1_MEAN, S1_STD, S1_MEAN, S1_STD,
                  "tessera_infer_QAT/src/datasets/ssl_dataset.py (one pooled S1 set)"),
    "v1.1-mpc": Stats(
        "v1.1-mpc",
        _f32([2683.4553, 2223.3630, 2432.0950, 3633.1970, 3602.1755, 3006.4324, 3400.2710,
              3515.6392, 2456.9163, 1983.8783]),
        _f32([2739.5217, 2846.2993, 2690.8250, 2290.0439, 2088.8970, 2673.1106, 2381.4521,
              2229.5225, 1601.0942, 1495.3545]),
        _f32([5588.3291, 3025.6270]), _f32([1713.4646, 1693.0471]),
        _f32([5552.9683, 2955.0520]), _f32([1685.5857, 1677.6414]),
        "tessera_infer_QAT/src/datasets/v1_1_norm_stats.py, 'mpc' (Planetary Computer inputs)"),
    "v1.1-aws": Stats(
        "v1.1-aws",
        _f32([2793.6589, 2356.7776, 2551.0496, 3741.9229, 3713.7844, 3120.1997, 3516.3342,
              3637.0342, 2501.0283, 2038.1504]),
        _f32([2810.0093, 2933.8835, 2755.6360, 2344.5027, 2145.7986, 2743.9019, 2438.8601,
              2286.5977, 1680.7367, 1585.5529]),
        _f32([5697.0859, 2838.6687]), _f32([1671.3737, 1789.4116]),
        _f32([5759.1367, 2873.2854]), _f32([1583.2858, 1747.8390]),
        "tessera_infer_QAT/src/datasets/v1_1_norm_stats.py, 'aws' (Earth Search S2 + OPERA S1)"),
    "v2": Stats(
        "v2",
        _f32([1633.0042, 1341.1090, 1539.5536, 3054.8269, 3117.4658, 2004.1648, 2694.7275,
              2945.1504, 2266.6079, 1657.3094]),
        _f32([1999.4603, 2014.7549, 1929.2201, 1754.2493, 1649.9807, 1936.8988, 1748.6041,
              1708.6991, 1207.5250, 1108.6046]),
        _f32([5909.3921, 3405.0322]), _f32([1507.1750, 1531.2615]),
        _f32([5816.1382, 3277.7576]), _f32([1554.6475, 1546.4733]),
        "tessera_infer_v2/student/model.py"),
}


def get_stats(stats_id: str) -> Stats:
    try:
        return STATS[stats_id]
    except KeyError:
        raise InputError(f"unknown normalisation statistics {stats_id!r}; expected one of "
                         f"{', '.join(STATS)}") from None
