"""On-disk cache of tokenizers, tokenised splits and trained models.

Layout under `$AR_CACHE_DIR` (default ~/.cache/agentic-researcher):
  tokenizers/bpe-<vocab>-<corpus>.json
  tokens/bpe-<vocab>-<corpus>/{train,val,test}.npy
  models/<arch>-<size>-<config hash>/  (save_pretrained files, tokenizer.json, train_result.json)
Entries are written to a temporary name and renamed, so a crash never leaves a half entry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from experiments.lm.corpus import load_corpus
from experiments.lm.models import shape_for
from experiments.lm.tokenizer import ByteBPE
from experiments.lm.train import TrainConfig, TrainResult, train

if TYPE_CHECKING:
    from transformers import PreTrainedModel

CACHE_ENV = "AR_CACHE_DIR"
SPLITS = ("train", "val", "test")


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "agentic-researcher"


@dataclass(frozen=True)
class LMData:
    tokenizer: ByteBPE
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fingerprint: str


def load_data(vocab_size: int) -> LMData:
    """The corpus tokenised with a BPE of `vocab_size` ids, training the tokenizer on first use."""
    corpus = load_corpus()
    key = f"bpe-{vocab_size}-{corpus.fingerprint}"
    root = cache_root()
    tokenizer_path = root / "tokenizers" / f"{key}.json"
    if tokenizer_path.exists():
        tokenizer = ByteBPE.load(tokenizer_path)
    else:
        tokenizer = ByteBPE.train(corpus.train, vocab_size)
        tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tokenizer_path.with_suffix(f".tmp{os.getpid()}")
        tokenizer.save(tmp)
        tmp.replace(tokenizer_path)
    token_dir = root / "tokens" / key
    if not all((token_dir / f"{split}.npy").exists() for split in SPLITS):
        token_dir.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            tmp = token_dir / f"{split}.tmp{os.getpid()}.npy"
            np.save(tmp, tokenizer.encode_array(corpus.split(split)))
            tmp.replace(token_dir / f"{split}.npy")
    arrays = {split: np.load(token_dir / f"{split}.npy") for split in SPLITS}
    return LMData(tokenizer, arrays["train"], arrays["val"], arrays["test"], corpus.fingerprint)


def model_dir(config: TrainConfig, fingerprint: str) -> Path:
    return (
        cache_root() / "models" / f"{config.arch}-{config.size}-{config.config_hash(fingerprint)}"
    )


def trained_model(
    config: TrainConfig,
    device: str = "cpu",
    retrain: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[PreTrainedModel, LMData, TrainResult, Path]:
    """The model trained with `config`, from the cache when present, else trained and cached."""
    data = load_data(shape_for(config.size).vocab)
    target = model_dir(config, data.fingerprint)
    if target.exists() and not retrain:
        model = load_model(target, device)
        result = TrainResult.model_validate_json((target / "train_result.json").read_text())
        return model, data, result, target
    model, result = train(
        config, data.train, data.val, data.tokenizer, data.fingerprint, device, log
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    model.save_pretrained(staging)
    data.tokenizer.save(staging / "tokenizer.json")
    (staging / "train_result.json").write_text(result.model_dump_json(indent=1))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return model, data, result, target


def load_model(path: Path, device: str = "cpu") -> PreTrainedModel:
    """A causal LM saved with save_pretrained in a local directory (no hub access)."""
    from transformers import AutoModelForCausalLM

    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path} is not a saved model directory (no config.json); train one with "
            "`python -m experiments.lm train --size tiny` or pass a save_pretrained directory"
        )
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.to(device)  # type: ignore[arg-type]  # transformers types .to as a wrapped method
    model.eval()
    return model
