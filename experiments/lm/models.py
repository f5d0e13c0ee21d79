"""Causal language models built from a transformers config (LLaMA-, GPT-2- and OPT-style)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Arch = Literal["llama", "gpt2", "opt"]
SizeName = Literal["tiny", "mini", "small"]


class ModelShape(BaseModel):
    model_config = ConfigDict(frozen=True)

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    context: int


# tiny: unit tests on CPU (seconds). mini: results on a CPU (minutes). small: GPU benchmarks
# (about 30M parameters with the llama architecture).
SIZES: dict[str, ModelShape] = {
    "tiny": ModelShape(hidden=64, layers=2, heads=4, ffn=176, vocab=512, context=128),
    "mini": ModelShape(hidden=128, layers=4, heads=4, ffn=352, vocab=1024, context=128),
    "small": ModelShape(hidden=512, layers=8, heads=8, ffn=1408, vocab=4096, context=512),
}


def shape_for(size: str) -> ModelShape:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    return SIZES[size]


def build_model(arch: Arch, shape: ModelShape, seed: int = 0) -> PreTrainedModel:
    """A freshly initialised causal LM of the given architecture and shape."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        LlamaConfig,
        OPTConfig,
        PretrainedConfig,
    )

    config: PretrainedConfig
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            intermediate_size=shape.ffn,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.heads,
            max_position_embeddings=shape.context,
            tie_word_embeddings=False,
        )
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=shape.vocab,
            n_embd=shape.hidden,
            n_layer=shape.layers,
            n_head=shape.heads,
            n_inner=shape.ffn,
            n_positions=shape.context,
            bos_token_id=None,
            eos_token_id=None,
        )
    elif arch == "opt":
        config = OPTConfig(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            ffn_dim=shape.ffn,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            max_position_embeddings=shape.context,
            word_embed_proj_dim=shape.hidden,
        )
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose llama, gpt2 or opt")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model


def count_parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())
