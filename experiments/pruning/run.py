"""One pruning run end to end: model, calibration, pruning, perplexity, metrics.json."""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiments.pruning.masks import Pattern
from experiments.pruning.methods import METHOD_NAMES, paper_pattern
from experiments.pruning.reconstruct import ReconstructionSettings
from experiments.pruning.sequential import Granularity, MatrixRecord, prune_model

BUILTIN_SIZES = ("tiny", "mini", "small")


class RunConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        "tiny", description="tiny | mini | small (trained here) or a save_pretrained directory"
    )
    method: str = "wanda"
    pattern: str = Field(
        "unstructured",
        description="unstructured (the method's paper pattern) | row | layer | N:M such as 2:4",
    )
    sparsity: float | None = Field(0.5, ge=0, lt=1)
    calib: int = Field(32, ge=1)
    seqlen: int = Field(128, ge=8)
    seed: int = 0
    reconstruct: Granularity = "none"
    reconstruction: ReconstructionSettings = ReconstructionSettings()
    chunk: int = Field(8, ge=1, description="calibration sequences per forward pass")
    eval_windows: int | None = Field(
        None, ge=1, description="cap on perplexity windows (None: all)"
    )
    device: str = "cpu"
    gram_dtype: str = "float32"
    method_options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _resolve_unstructured(cls, data: Any) -> Any:
        """Record the concrete pattern a run used, never the alias "unstructured"."""
        if isinstance(data, dict) and data.get("pattern", "unstructured") == "unstructured":
            method = data.get("method", "wanda")
            if isinstance(method, str):
                data = {**data, "pattern": paper_pattern(method, "unstructured")}
        return data

    def parsed_pattern(self) -> Pattern:
        return Pattern.parse(self.pattern, self.sparsity)


class RunMetrics(BaseModel):
    config: RunConfig
    model_path: str
    n_params: int
    dense_perplexity: float
    perplexity: float
    mean_relative_error: float
    mean_relative_error_reconstructed: float | None
    sparsity: float
    seconds_pruning: float
    seconds_total: float
    peak_memory_bytes: int
    peak_memory_kind: str
    device: str
    layers: list[MatrixRecord]


def load_model_and_tokens(
    spec: str, device: str
) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, str]:
    """The model with the corpus' train and test tokens in its tokenizer."""
    from experiments.lm import load_corpus, load_data, load_model, trained_model
    from experiments.lm.tokenizer import ByteBPE
    from experiments.lm.train import preset

    if spec in BUILTIN_SIZES:
        model, data, _, path = trained_model(preset(spec), device)
        return model, data.train, data.test, str(path)
    path = Path(spec)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"--model {spec!r} is neither one of {', '.join(BUILTIN_SIZES)} nor a save_pretrained "
            "directory with config.json"
        )
    model = load_model(path, device)
    tokenizer_file = path / "tokenizer.json"
    try:
        tokenizer = ByteBPE.load(tokenizer_file)
        data = load_data(tokenizer.vocab_size)
        if data.tokenizer.merges == tokenizer.merges:
            return model, data.train, data.test, str(path)
        corpus = load_corpus()
        return (
            model,
            tokenizer.encode_array(corpus.train),
            tokenizer.encode_array(corpus.test),
            str(path),
        )
    except (ValueError, FileNotFoundError):
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        corpus = load_corpus()
        encode = lambda text: np.asarray(hf_tokenizer(text)["input_ids"], dtype=np.int64)  # noqa: E731
        return model, encode(corpus.train), encode(corpus.test), str(path)


def _peak_memory(device: str) -> tuple[int, str]:
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "cuda max_memory_allocated"
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(
        resource.RUSAGE_SELF
    ).ru_maxrss * 1024, f"process peak RSS ({platform.system()})"


def run(config: RunConfig, out_dir: Path | None = None, log: Any = None) -> RunMetrics:
    """Load the model named in `config`, prune it, evaluate it, and write OUT/metrics.json."""
    started = time.perf_counter()
    if config.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model, train_tokens, test_tokens, model_path = load_model_and_tokens(
        config.model, config.device
    )
    metrics = prune_and_evaluate(model, train_tokens, test_tokens, config, model_path, log=log)
    metrics.seconds_total = time.perf_counter() - started
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(metrics.model_dump(mode="json"), indent=1))
    return metrics


def prune_and_evaluate(
    model: torch.nn.Module,
    train_tokens: np.ndarray,
    test_tokens: np.ndarray,
    config: RunConfig,
    model_path: str,
    dense_perplexity: float | None = None,
    log: Any = None,
) -> RunMetrics:
    """Prune an already loaded model in place and measure it (perplexity before and after)."""
    from experiments.lm import calibration_batch, perplexity

    if config.method not in METHOD_NAMES:
        raise ValueError(
            f"unknown method {config.method!r}; choose one of {', '.join(METHOD_NAMES)}"
        )
    if config.method_options and config.method != "sparseswaps":
        raise ValueError(f"--init and --max-swaps apply to sparseswaps only, not {config.method!r}")
    pattern = config.parsed_pattern()
    started = time.perf_counter()
    context = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    if context is not None and config.seqlen > context:
        raise ValueError(f"--seqlen {config.seqlen} exceeds the model's context length {context}")
    if dense_perplexity is None:
        dense_perplexity = perplexity(
            model, test_tokens, config.seqlen, max_windows=config.eval_windows
        )
    calibration = calibration_batch(train_tokens, config.calib, config.seqlen, config.seed)
    prune_started = time.perf_counter()
    records = prune_model(
        model,
        calibration,
        config.method,
        pattern,
        reconstruction=config.reconstruct,
        settings=config.reconstruction,
        chunk=config.chunk,
        gram_dtype=getattr(torch, config.gram_dtype),
        method_options=config.method_options,
        log=log,
    )
    seconds_pruning = time.perf_counter() - prune_started
    pruned_ppl = perplexity(model, test_tokens, config.seqlen, max_windows=config.eval_windows)
    peak, kind = _peak_memory(config.device)
    total_weights = sum(r.shape[0] * r.shape[1] for r in records)
    reconstructed = [
        r.relative_error_reconstructed
        for r in records
        if r.relative_error_reconstructed is not None
    ]
    return RunMetrics(
        config=config,
        model_path=model_path,
        n_params=sum(p.numel() for p in model.parameters()),
        dense_perplexity=dense_perplexity,
        perplexity=pruned_ppl,
        mean_relative_error=float(np.mean([r.relative_error for r in records])),
        mean_relative_error_reconstructed=float(np.mean(reconstructed)) if reconstructed else None,
        sparsity=sum(r.sparsity * r.shape[0] * r.shape[1] for r in records) / total_weights,
        seconds_pruning=seconds_pruning,
        seconds_total=time.perf_counter() - started,
        peak_memory_bytes=peak,
        peak_memory_kind=kind,
        device=config.device,
        layers=records,
    )
