"""Where the prunable matrices are in a transformers causal LM, and how to read / write them.

Supported: LLaMA-family (model.layers), GPT-2 (transformer.h, Conv1D weights stored in x out),
OPT (model.decoder.layers). Every weight is handled as W (out x in) whatever its storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LAYER_PATHS = ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers")


@dataclass
class Prunable:
    name: str  # relative to its decoder layer, e.g. "mlp.down_proj"
    module: nn.Module
    transposed: bool  # GPT-2 Conv1D keeps its weight as (in x out)

    @property
    def parameter(self) -> nn.Parameter:
        weight = self.module.weight
        assert isinstance(weight, nn.Parameter)
        return weight

    def weight(self) -> torch.Tensor:
        W = self.parameter.detach()
        return W.T if self.transposed else W

    def set_weight(self, W: torch.Tensor) -> None:
        with torch.no_grad():
            self.parameter.copy_((W.T if self.transposed else W).to(self.parameter.dtype))

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self.module.bias
        return bias if isinstance(bias, torch.Tensor) else None

    def storage_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A (out x in) mask laid out like the stored parameter."""
        return mask.T if self.transposed else mask

    @property
    def in_features(self) -> int:
        return self.weight().shape[1]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    for path in LAYER_PATHS:
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}; supported layouts: "
        f"{', '.join(LAYER_PATHS)}"
    )


def _is_prunable(module: nn.Module) -> bool:
    # transformers' Conv1D is a Linear with its weight transposed; matched by name to avoid importing it.
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def prunables(layer: nn.Module) -> list[Prunable]:
    return [
        Prunable(name, module, transposed=not isinstance(module, nn.Linear))
        for name, module in layer.named_modules()
        if name and _is_prunable(module)
    ]


def parts(layer: nn.Module) -> dict[str, list[str]]:
    """Reconstruction units at 'part' granularity: the attention and MLP submodules.

    A child module holding prunable matrices is one part (LLaMA self_attn / mlp, GPT-2 attn /
    mlp). Matrices that are direct children of the layer (OPT fc1, fc2) are each their own part,
    because the layer applies its activation between them inline.
    """
    units: dict[str, list[str]] = {}
    for item in prunables(layer):
        head = item.name.split(".")[0]
        unit = head if "." in item.name else item.name
        units.setdefault(unit, []).append(item.name)
    return units


def layer_output(output: object) -> torch.Tensor:
    """The hidden states returned by a decoder layer or attention module (tensor or tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unexpected module output of type {type(output).__name__}")
