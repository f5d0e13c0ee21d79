"""A small language model trained here on offline text: corpus, tokenizer, models, training, cache.

Shared by the pruning experiments (calibration data, perplexity) and the optimizer studies
(`train` with a chosen optimizer and schedule returns loss curves).
"""

from experiments.lm.cache import LMData, cache_root, load_data, load_model, model_dir, trained_model
from experiments.lm.corpus import Corpus, CorpusMissingError, load_corpus
from experiments.lm.data import calibration_batch, perplexity, random_windows
from experiments.lm.models import SIZES, ModelShape, build_model, count_parameters, shape_for
from experiments.lm.tokenizer import ByteBPE
from experiments.lm.train import OPTIMIZERS, TrainConfig, TrainResult, lr_factor, train

__all__ = [
    "OPTIMIZERS",
    "SIZES",
    "ByteBPE",
    "Corpus",
    "CorpusMissingError",
    "LMData",
    "ModelShape",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "cache_root",
    "calibration_batch",
    "count_parameters",
    "load_corpus",
    "load_data",
    "load_model",
    "lr_factor",
    "model_dir",
    "perplexity",
    "random_windows",
    "shape_for",
    "train",
    "trained_model",
]
