"""Baseline generators that the evaluation compares with TarDiff.

Each returns a synthetic set in the normalisation of its input with given
per-class counts: random oversampling and SMOTE (:mod:`.oversampling`), TimeVAE
(:mod:`.timevae`) and TimeGAN (:mod:`.timegan`), the last two trained one model
per class. Classifier guidance lives with the other guided sampler in
:mod:`tardiff.sampling`.
"""

from tardiff.baselines.common import MinMaxScaler, PerClassResult, check_counts, check_training_set
from tardiff.baselines.oversampling import random_oversample, smote
from tardiff.baselines.timegan import TimeGAN, generate_timegan, sample_timegan, train_timegan
from tardiff.baselines.timevae import TimeVAE, generate_timevae, sample_timevae, train_timevae

__all__ = [
    "MinMaxScaler", "PerClassResult", "TimeGAN", "TimeVAE", "check_counts", "check_training_set",
    "generate_timegan", "generate_timevae", "random_oversample", "sample_timegan", "sample_timevae", "smote",
    "train_timegan", "train_timevae",
]
