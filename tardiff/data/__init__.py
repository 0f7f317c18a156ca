"""Data layer: read PhysioNet 2012, build the hourly cohort, normalise it and save it."""

from tardiff.data.cohort import (
    FILL_RULE,
    WINDOW_RULE,
    PreparedCohort,
    Split,
    build_hourly_grid,
    load_prepared,
    preprocess_physionet2012,
    save_prepared,
)
from tardiff.data.normalise import (
    Normaliser,
    PitNormaliser,
    ZScoreNormaliser,
    make_normaliser,
    normaliser_from_dict,
)
from tardiff.data.physionet2012 import RawPhysionet2012, read_physionet2012

__all__ = [
    "FILL_RULE",
    "WINDOW_RULE",
    "Normaliser",
    "PitNormaliser",
    "PreparedCohort",
    "RawPhysionet2012",
    "Split",
    "ZScoreNormaliser",
    "build_hourly_grid",
    "load_prepared",
    "make_normaliser",
    "normaliser_from_dict",
    "preprocess_physionet2012",
    "read_physionet2012",
    "save_prepared",
]
