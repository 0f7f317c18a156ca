"""Data layer: read a dataset with its reader, build the hourly cohort, normalise it and save it."""

from tardiff.data.cohort import (
    FILL_RULE,
    WINDOW_RULE,
    PreparedCohort,
    Split,
    build_hourly_grid,
    load_prepared,
    preprocess_cohort,
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
from tardiff.data.physionet2019 import read_physionet2019
from tardiff.data.sources import RawCohort, read_cohort, reader_names
from tardiff.data.yaib import read_yaib

__all__ = [
    "FILL_RULE",
    "WINDOW_RULE",
    "Normaliser",
    "PitNormaliser",
    "PreparedCohort",
    "RawCohort",
    "RawPhysionet2012",
    "Split",
    "ZScoreNormaliser",
    "build_hourly_grid",
    "load_prepared",
    "make_normaliser",
    "normaliser_from_dict",
    "preprocess_cohort",
    "preprocess_physionet2012",
    "read_cohort",
    "read_physionet2012",
    "read_physionet2019",
    "read_yaib",
    "reader_names",
    "save_prepared",
]
