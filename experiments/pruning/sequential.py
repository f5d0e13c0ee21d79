"""Sequential layer-wise pruning of a causal LM from calibration sequences.

Calibration data flows block by block: the inputs of block b are the outputs of blocks
0..b-1 after they were pruned (and reconstructed). For each block, one forward pass collects
G = Xᵀ X for every matrix (X: that matrix's inputs over all calibration tokens), every matrix is
pruned with the chosen method, the block is optionally reconstructed, and its outputs become the
next block's inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, Literal

import torch
from pydantic import BaseModel
from torch import nn

from experiments.pruning.error import relative_error
from experiments.pruning.masks import Pattern, satisfies
from experiments.pruning.methods import prune_layer
from experiments.pruning.model import Prunable, decoder_layers, layer_output, parts, prunables
from experiments.pruning.reconstruct import ReconstructionSettings, Sample, reconstruct

Granularity = Literal["none", "matrix", "part", "block"]


class MatrixRecord(BaseModel):
    layer: int
    name: str
    shape: tuple[int, int]
    sparsity: float
    relative_error: float  # after pruning, before reconstruction
    relative_error_reconstructed: float | None = None
    seconds: float
    info: dict[str, Any] = {}


class _StopForward(Exception):
    pass


@contextmanager
def _hooks(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture_first_layer_inputs(
    model: nn.Module, calibration: torch.Tensor, chunk: int
) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(hidden states, keyword arguments) entering block 0, per calibration chunk."""
    layer0 = decoder_layers(model)[0]
    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def grab(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        extra = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        # GPT-2 passes its optional masks positionally; keep them by name-less position.
        if len(args) > 1:
            extra["__positional__"] = args[1:]
        captured.append((hidden.detach(), extra))
        raise _StopForward

    device = next(model.parameters()).device
    with _hooks([layer0.register_forward_pre_hook(grab, with_kwargs=True)]), torch.no_grad():
        for start in range(0, calibration.shape[0], chunk):
            with suppress(_StopForward):
                model(input_ids=calibration[start : start + chunk].to(device), use_cache=False)
    return captured


def _call(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    positional = kwargs.get("__positional__", ())
    named = {k: v for k, v in kwargs.items() if k != "__positional__"}
    return layer_output(layer(hidden, *positional, **named))


def _gram_pass(
    layer: nn.Module,
    matrices: list[Prunable],
    inputs: list[tuple[torch.Tensor, dict[str, Any]]],
    gram_dtype: torch.dtype,
    keep_inputs: bool,
    part_names: list[str],
) -> tuple[
    dict[str, torch.Tensor],
    dict[str, list[torch.Tensor]],
    dict[str, list[tuple[Any, Any, torch.Tensor]]],
    list[torch.Tensor],
]:
    """One pass of the dense block: G per matrix, optionally the matrix / part inputs, block outputs."""
    grams = {
        m.name: torch.zeros(
            m.in_features, m.in_features, dtype=gram_dtype, device=m.parameter.device
        )
        for m in matrices
    }
    matrix_inputs: dict[str, list[torch.Tensor]] = {m.name: [] for m in matrices}
    part_calls: dict[str, list[tuple[Any, Any, torch.Tensor]]] = {name: [] for name in part_names}
    handles = []
    for item in matrices:

        def accumulate(
            module: nn.Module, args: tuple[Any, ...], output: Any, name: str = item.name
        ) -> None:
            X = args[0].detach().reshape(-1, args[0].shape[-1]).to(gram_dtype)
            grams[name].addmm_(X.T, X)
            if keep_inputs:
                matrix_inputs[name].append(args[0].detach())

        handles.append(item.module.register_forward_hook(accumulate))
    for name in part_names:
        module = layer.get_submodule(name)

        def record(
            module: nn.Module,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            output: Any,
            name: str = name,
        ) -> None:
            part_calls[name].append((args, kwargs, layer_output(output).detach()))

        handles.append(module.register_forward_hook(record, with_kwargs=True))
    outputs = []
    with _hooks(handles), torch.no_grad():
        for hidden, kwargs in inputs:
            outputs.append(_call(layer, hidden, kwargs).detach())
    return grams, matrix_inputs, part_calls, outputs


def _call_part(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return layer_output(module(*args, **kwargs))


def prune_model(
    model: nn.Module,
    calibration: torch.Tensor,
    method: str,
    pattern: Pattern,
    reconstruction: Granularity = "none",
    settings: ReconstructionSettings | None = None,
    chunk: int = 8,
    gram_dtype: torch.dtype = torch.float32,
    method_options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[MatrixRecord]:
    """Prune every decoder-block matrix of `model` in place; returns one record per matrix."""
    settings = settings or ReconstructionSettings()
    options = method_options or {}
    model.eval()
    inputs = capture_first_layer_inputs(model, calibration, chunk)
    records: list[MatrixRecord] = []
    for index, layer in enumerate(decoder_layers(model)):
        matrices = prunables(layer)
        units = parts(layer)
        part_modules = [u for u in units if "." in units[u][0]] if reconstruction == "part" else []
        grams, matrix_inputs, part_calls, dense_outputs = _gram_pass(
            layer, matrices, inputs, gram_dtype, reconstruction in ("matrix", "part"), part_modules
        )
        dense_weights = {m.name: m.weight().clone() for m in matrices}
        masks: dict[str, torch.Tensor] = {}
        for item in matrices:
            started = time.perf_counter()
            W, G = dense_weights[item.name], grams[item.name]
            result = prune_layer(method, W.to(G.dtype), G, pattern, **options)
            if not satisfies(result.mask, pattern):
                raise RuntimeError(
                    f"{method} broke the {pattern.label()} pattern on layer {index} {item.name}"
                )
            item.set_weight(result.weight)
            masks[item.name] = result.mask
            if W.device.type == "cuda":
                torch.cuda.synchronize()
            info = {k: v for k, v in result.info.items() if isinstance(v, int | float | str | bool)}
            records.append(
                MatrixRecord(
                    layer=index,
                    name=item.name,
                    shape=(W.shape[0], W.shape[1]),
                    sparsity=float((~result.mask).float().mean()),
                    relative_error=relative_error(W.to(G.dtype), result.weight, G),
                    seconds=time.perf_counter() - started,
                    info=info,
                )
            )
        if reconstruction != "none":
            _reconstruct_layer(
                layer,
                matrices,
                masks,
                reconstruction,
                settings,
                inputs,
                dense_outputs,
                matrix_inputs,
                part_calls,
                dense_weights,
                units,
            )
            for record in records[-len(matrices) :]:
                item = next(m for m in matrices if m.name == record.name)
                G = grams[item.name]
                record.relative_error_reconstructed = relative_error(
                    dense_weights[item.name].to(G.dtype), item.weight().to(G.dtype), G
                )
        with torch.no_grad():
            inputs = [(_call(layer, hidden, kwargs).detach(), kwargs) for hidden, kwargs in inputs]
        if log:
            errors = [r.relative_error for r in records[-len(matrices) :]]
            log(f"layer {index}: mean relative error {sum(errors) / len(errors):.4f}")
    return records


def _reconstruct_layer(
    layer: nn.Module,
    matrices: list[Prunable],
    masks: dict[str, torch.Tensor],
    granularity: Granularity,
    settings: ReconstructionSettings,
    inputs: list[tuple[torch.Tensor, dict[str, Any]]],
    dense_outputs: list[torch.Tensor],
    matrix_inputs: dict[str, list[torch.Tensor]],
    part_calls: dict[str, list[tuple[Any, Any, torch.Tensor]]],
    dense_weights: dict[str, torch.Tensor],
    units: dict[str, list[str]],
) -> None:
    by_name = {m.name: m for m in matrices}
    if granularity == "block":
        samples = [
            Sample(partial(_call, layer, hidden, kwargs), target)
            for (hidden, kwargs), target in zip(inputs, dense_outputs, strict=True)
        ]
        reconstruct(matrices, [masks[m.name] for m in matrices], samples, settings)
        return
    handled: set[str] = set()
    if granularity == "part":
        for unit, names in units.items():
            if unit not in part_calls:
                continue
            module = layer.get_submodule(unit)
            samples = [
                Sample(partial(_call_part, module, args, kwargs), target)
                for args, kwargs, target in part_calls[unit]
            ]
            reconstruct([by_name[n] for n in names], [masks[n] for n in names], samples, settings)
            handled.update(names)
    for item in matrices:
        if item.name in handled:
            continue
        W_dense = dense_weights[item.name]
        samples = []
        for X in matrix_inputs[item.name]:
            with torch.no_grad():
                target = torch.nn.functional.linear(X, W_dense.to(X.dtype), item.bias)
            samples.append(Sample(partial(item.module, X), target))
        reconstruct([item], [masks[item.name]], samples, settings)
