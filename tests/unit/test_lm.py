"""The small-LM package: corpus splits, tokenizer, schedules, models, training and its cache."""

from __future__ import annotations

import math
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.lm import (
    ByteBPE,
    TrainConfig,
    build_model,
    calibration_batch,
    load_corpus,
    lr_factor,
    perplexity,
    shape_for,
    trained_model,
)
from experiments.lm.corpus import DEFAULT_CORPUS_DIR, CorpusMissingError, corpus_files
from tests.support import unavailable

torch.set_num_threads(1)


@pytest.fixture
def small_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three topic files of the real corpus, so training tests stay fast."""
    try:
        files = corpus_files(DEFAULT_CORPUS_DIR)
    except CorpusMissingError as exc:
        unavailable("fortunes text corpus", str(exc))
    directory = tmp_path / "corpus"
    directory.mkdir()
    for name in ("science", "computers", "literature"):
        source = next(path for path in files if path.name == name)
        shutil.copy(source, directory / name)
    monkeypatch.setenv("AR_LM_CORPUS_DIR", str(directory))
    monkeypatch.setenv("AR_CACHE_DIR", str(tmp_path / "cache"))
    return directory


def test_tokenizer_round_trips_text_it_never_saw() -> None:
    tokenizer = ByteBPE.train("the cat sat on the mat; the cat ate the rat. " * 20, vocab_size=300)
    assert tokenizer.vocab_size > 256
    text = "The Rat  ate 42 cats!\n\tnaïve — ünïcode ✓"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(" the cat")) < len(b" the cat")


def test_tokenizer_training_is_deterministic_and_survives_save_load(tmp_path: Path) -> None:
    text = "alpha beta gamma alpha beta delta " * 30
    first, second = ByteBPE.train(text, 280), ByteBPE.train(text, 280)
    assert first.merges == second.merges
    first.save(tmp_path / "tok.json")
    assert ByteBPE.load(tmp_path / "tok.json").encode(text) == first.encode(text)


def test_tokenizer_rejects_a_vocab_smaller_than_the_bytes() -> None:
    with pytest.raises(ValueError, match="at least 256"):
        ByteBPE.train("abc", 100)


def test_corpus_splits_are_disjoint_and_reproducible(small_corpus: Path) -> None:
    corpus, again = load_corpus(), load_corpus()
    assert corpus == again
    train_records = set(corpus.train.split("\n\n"))
    test_records = set(corpus.test.split("\n\n")) - {""}
    assert len(corpus.train) > 10 * len(corpus.test) > 0
    # Short records (one-liners) may repeat across topic files; long ones must not leak.
    leaked = {r for r in test_records & train_records if len(r) > 200}
    assert not leaked


def test_missing_corpus_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AR_LM_CORPUS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(CorpusMissingError, match="apt-get install fortunes"):
        load_corpus()


@pytest.mark.parametrize("schedule", ["constant", "cosine", "wsd"])
def test_schedules_warm_up_linearly_then_follow_their_shape(schedule: str) -> None:
    config = TrainConfig(
        schedule=schedule, steps=100, warmup_steps=10, min_lr_ratio=0.1, decay_fraction=0.2
    )
    factors = [lr_factor(step, config) for step in range(100)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert max(factors) == pytest.approx(1.0)
    if schedule == "constant":
        assert factors[10:] == pytest.approx([1.0] * 90)
    elif schedule == "cosine":
        assert all(a >= b for a, b in pairwise(factors[10:]))
        assert factors[-1] == pytest.approx(0.1, abs=1e-3)
    else:
        assert factors[10:80] == pytest.approx([1.0] * 70)
        assert all(a > b for a, b in pairwise(factors[80:]))
        assert factors[-1] == pytest.approx(0.1, abs=0.05)


def test_training_settings_are_validated_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="exceeds the tiny model's context"):
        TrainConfig(size="tiny", seq_len=4096)
    with pytest.raises(ValueError, match="unknown model size"):
        TrainConfig(size="huge")


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_every_architecture_builds_from_a_config_and_predicts_the_vocab(arch: str) -> None:
    shape = shape_for("tiny")
    model = build_model(arch, shape)  # type: ignore[arg-type]
    ids = torch.randint(0, shape.vocab, (2, 16))
    logits = model(input_ids=ids).logits
    assert logits.shape == (2, 16, shape.vocab)


def test_calibration_samples_are_seeded_windows_of_the_training_split() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    first, again, other = (calibration_batch(tokens, 8, 32, seed) for seed in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (8, 32)
    assert torch.all(first[:, 1:] - first[:, :-1] == 1)  # contiguous windows


def test_perplexity_averages_over_non_overlapping_windows() -> None:
    model = build_model("llama", shape_for("tiny"))
    tokens = np.random.default_rng(0).integers(0, 512, size=200).astype(np.uint16)
    windows = torch.from_numpy(tokens[:192].astype(np.int64)).view(6, 32)
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    assert perplexity(model, tokens, 32, batch_size=4) == pytest.approx(
        math.exp(np.mean(losses)), rel=1e-5
    )


def test_training_lowers_validation_loss_and_is_cached(small_corpus: Path) -> None:
    config = TrainConfig(
        size="tiny", steps=30, eval_every=10, batch_size=8, seq_len=64, warmup_steps=5
    )
    model, data, result, path = trained_model(config)
    assert result.val_loss[-1][1] < result.val_loss[0][1] < math.log(shape_for("tiny").vocab) + 0.5
    assert len(result.train_loss) == 30 and not result.diverged
    assert (path / "config.json").exists() and (path / "train_result.json").exists()
    cached_model, _, cached_result, cached_path = trained_model(config)
    assert cached_path == path and cached_result == result
    assert perplexity(cached_model, data.test, 64) == pytest.approx(
        perplexity(model, data.test, 64), rel=1e-4
    )
