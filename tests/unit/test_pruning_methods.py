"""Layer-wise pruning methods on seeded random layers: exact patterns, error ordering, the
SparseSwaps guarantees, Frank-Wolfe progress, and agreement with references from the papers."""

from __future__ import annotations

import itertools

import pytest
import torch

from experiments.pruning.error import reconstruction_error, relative_error, row_errors
from experiments.pruning.masks import Pattern, mask_from_scores, satisfies
from experiments.pruning.methods import METHOD_NAMES, prune_layer
from experiments.pruning.methods.frank_wolfe import relax
from experiments.pruning.methods.sparseswaps import refine, swap_deltas

torch.set_num_threads(1)
PATTERNS = [Pattern.parse("row", 0.5), Pattern.parse("row", 0.6), Pattern.parse("layer", 0.6)]
PATTERNS += [Pattern.parse("2:4"), Pattern.parse("4:8")]


def outlier_layer(out: int = 32, inp: int = 64, tokens: int = 256, seed: int = 0):
    """A layer whose inputs have a few outlier features (as LLM activations do)."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, inp, generator=generator, dtype=torch.float64)
    outliers = torch.randperm(inp, generator=generator)[:4]
    X[:, outliers] *= 25
    W = torch.randn(out, inp, generator=generator, dtype=torch.float64)
    return W, X, X.T @ X


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("pattern", PATTERNS, ids=Pattern.label)
def test_every_method_prunes_exactly_the_requested_pattern(method: str, pattern: Pattern) -> None:
    W, _, G = outlier_layer()
    result = prune_layer(method, W, G, pattern)
    assert satisfies(result.mask, pattern)
    assert torch.all(result.weight[~result.mask] == 0)
    if method != "sparsegpt":  # only SparseGPT updates the kept weights
        assert torch.equal(result.weight[result.mask], W[result.mask])


@pytest.mark.parametrize("pattern", PATTERNS, ids=Pattern.label)
def test_error_orders_sparsegpt_below_wanda_below_magnitude_with_outlier_features(
    pattern: Pattern,
) -> None:
    for seed in range(3):
        W, _, G = outlier_layer(seed=seed)
        error = {
            m: reconstruction_error(W, prune_layer(m, W, G, pattern).weight, G)
            for m in METHOD_NAMES
        }
        assert error["sparsegpt"] <= error["wanda"] <= error["magnitude"]


def test_relative_error_is_the_output_error_measured_on_the_inputs() -> None:
    W, X, G = outlier_layer()
    W_pruned = prune_layer("wanda", W, G, Pattern.parse("row", 0.5)).weight
    direct = torch.linalg.norm(X @ (W - W_pruned).T) ** 2 / torch.linalg.norm(X @ W.T) ** 2
    assert relative_error(W, W_pruned, G) == pytest.approx(float(direct), rel=1e-10)


def test_closed_form_swap_change_equals_the_recomputed_error_change() -> None:
    W, _, G = outlier_layer(out=4, inp=24)
    mask = prune_layer("magnitude", W, G, Pattern.parse("row", 0.5)).mask
    for row in range(4):
        deltas = swap_deltas(W[row], mask[row], G)
        before = float(row_errors(W[row : row + 1], (W * mask)[row : row + 1], G))
        kept, pruned = mask[row].nonzero().squeeze(1), (~mask[row]).nonzero().squeeze(1)
        for p, u in itertools.product(kept.tolist(), pruned.tolist()):
            swapped = mask[row].clone()
            swapped[p], swapped[u] = False, True
            after = float(row_errors(W[row : row + 1], (W[row] * swapped)[None], G))
            assert float(deltas[p, u]) == pytest.approx(after - before, rel=1e-9, abs=1e-9 * before)
        assert torch.all(torch.isinf(deltas[~mask[row]])) and torch.all(
            torch.isinf(deltas[:, mask[row]])
        )


@pytest.mark.parametrize("pattern", PATTERNS, ids=Pattern.label)
def test_sparseswaps_never_increases_error_at_any_budget(pattern: Pattern) -> None:
    W, _, G = outlier_layer()
    start = prune_layer("magnitude", W, G, pattern).mask
    previous = reconstruction_error(W, W * start, G)
    for budget in (1, 2, 5, 20):
        mask, info = refine(W, G, start, pattern, max_swaps=budget)
        error = reconstruction_error(W, W * mask, G)
        assert satisfies(mask, pattern)
        assert error <= previous * (1 + 1e-12)
        assert info["final_error"] == pytest.approx(error)
        previous = error


@pytest.mark.parametrize("pattern", PATTERNS, ids=Pattern.label)
def test_unbudgeted_sparseswaps_reaches_a_one_swap_local_optimum(pattern: Pattern) -> None:
    W, _, G = outlier_layer(out=8, inp=32)
    mask, info = refine(W, G, prune_layer("magnitude", W, G, pattern).mask, pattern)
    assert info["local_optimum"] and info["swaps"] > 0
    assert info["final_error"] < info["initial_error"]
    for row in range(W.shape[0]):
        before = float(row_errors(W[row : row + 1], (W * mask)[row : row + 1], G))
        for p, u in itertools.product(
            mask[row].nonzero().flatten(), (~mask[row]).nonzero().flatten()
        ):
            if pattern.kind == "nm" and p // pattern.m != u // pattern.m:
                continue  # a cross-group swap would break N:M
            swapped = mask[row].clone()
            swapped[p], swapped[u] = False, True
            after = float(row_errors(W[row : row + 1], (W[row] * swapped)[None], G))
            assert after >= before * (1 - 1e-8), f"row {row}: swapping {p} for {u} still improves"


def test_sparseswaps_lowers_wanda_error_substantially_with_outlier_features() -> None:
    W, _, G = outlier_layer(out=32, inp=128, tokens=512)
    result = prune_layer("sparseswaps", W, G, Pattern.parse("row", 0.6), init="wanda")
    wanda = prune_layer("wanda", W, G, Pattern.parse("row", 0.6))
    assert reconstruction_error(W, result.weight, G) < 0.95 * reconstruction_error(
        W, wanda.weight, G
    )


@pytest.mark.parametrize("pattern", PATTERNS, ids=Pattern.label)
def test_frank_wolfe_gap_decreases_and_objective_never_rises(pattern: Pattern) -> None:
    W, _, G = outlier_layer()
    start = prune_layer("magnitude", W, G, pattern).mask
    M, objectives, gaps = relax(W, G, pattern, start, iters=100)
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(objectives))
    assert min(gaps[-10:]) < 0.05 * gaps[0]
    assert M.min() >= -1e-12 and M.max() <= 1 + 1e-12
    kept = M.reshape(-1, pattern.m).sum(1) if pattern.kind == "nm" else M.sum(1)
    if pattern.kind == "layer":
        kept = M.sum().reshape(1)
    assert torch.allclose(kept, start.to(M.dtype).reshape(kept.shape[0], -1).sum(1))


def test_frank_wolfe_rounded_mask_beats_magnitude() -> None:
    W, _, G = outlier_layer()
    pattern = Pattern.parse("row", 0.6)
    fw = prune_layer("frankwolfe", W, G, pattern)
    magnitude = prune_layer("magnitude", W, G, pattern)
    assert reconstruction_error(W, fw.weight, G) < reconstruction_error(W, magnitude.weight, G)
    assert fw.info["last_gap"] < fw.info["first_gap"]


# --- references written from the papers' definitions -------------------------------------------


def reference_wanda_mask(W: torch.Tensor, X: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda, Sun et al. 2023, eq. 1: S_ij = |W_ij| * ||X_j||_2; per output, prune the lowest."""
    mask = torch.ones_like(W, dtype=torch.bool)
    for i in range(W.shape[0]):
        score = [
            abs(float(W[i, j])) * float(torch.sqrt((X[:, j] ** 2).sum())) for j in range(W.shape[1])
        ]
        order = sorted(range(W.shape[1]), key=lambda j: (score[j], j))
        for j in order[: int(W.shape[1] * sparsity)]:
            mask[i, j] = False
    return mask


def reference_sparsegpt(
    W: torch.Tensor, X: torch.Tensor, sparsity: float, blocksize: int, damp: float
):
    """SparseGPT, Frantar & Alistarh 2023, without the Cholesky trick: for each column q the
    inverse Hessian of the remaining columns F = {q, ...} is formed explicitly, the block mask
    takes the lowest OBS saliencies w_q² / [H_F⁻¹]_qq per row, and a pruned w_q is compensated by
    δ_F = -(w_q / [H_F⁻¹]_qq) [H_F⁻¹]_{q,F} (Optimal Brain Surgeon)."""
    H = X.T @ X
    H = H + damp * torch.mean(torch.diagonal(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    W = W.clone()
    cols = W.shape[1]
    mask = torch.ones_like(W, dtype=torch.bool)
    inverses = [torch.linalg.inv(H[q:, q:]) for q in range(cols)]
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        saliency = torch.stack([W[:, q] ** 2 / inverses[q][0, 0] for q in range(start, end)], 1)
        k = int(end * sparsity) - int(start * sparsity)
        for i in range(W.shape[0]):
            order = sorted(range(end - start), key=lambda j: (float(saliency[i, j]), j))
            for j in order[:k]:
                mask[i, start + j] = False
        for q in range(start, end):
            H_F_inv = inverses[q]
            pruned_w = torch.where(mask[:, q], 0.0, W[:, q])
            W[:, q:] -= (pruned_w / H_F_inv[0, 0])[:, None] * H_F_inv[0][None, :]
    return W * mask, mask


def test_wanda_mask_matches_the_papers_definition() -> None:
    W, X, G = outlier_layer(out=16, inp=40)
    ours = prune_layer("wanda", W, G, Pattern.parse("row", 0.5)).mask
    assert torch.equal(ours, reference_wanda_mask(W, X, 0.5))


@pytest.mark.parametrize("blocksize", [8, 16, 128])
def test_sparsegpt_mask_and_weights_match_the_papers_definition(blocksize: int) -> None:
    W, X, G = outlier_layer(out=12, inp=48)
    ours = prune_layer("sparsegpt", W, G, Pattern.parse("row", 0.5), blocksize=blocksize, damp=0.01)
    weight, mask = reference_sparsegpt(W, X, 0.5, blocksize, damp=0.01)
    assert torch.equal(ours.mask, mask)
    assert torch.allclose(ours.weight, weight, rtol=1e-8, atol=1e-10)


def test_bad_inputs_are_rejected_with_a_clear_message() -> None:
    W, _, G = outlier_layer(inp=30)
    with pytest.raises(ValueError, match="divisible by 4"):
        prune_layer("wanda", W, G, Pattern.parse("2:4"))
    with pytest.raises(ValueError, match="unknown pruning method 'obs'"):
        prune_layer("obs", W, G, Pattern.parse("row", 0.5))
    with pytest.raises(ValueError, match="G must be 30x30"):
        prune_layer("wanda", W, G[:10, :10], Pattern.parse("row", 0.5))
    with pytest.raises(ValueError, match="N:M with integers"):
        Pattern.parse("two:four")


def test_mask_from_scores_keeps_the_highest_scores() -> None:
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    assert mask_from_scores(scores, Pattern.parse("2:4")).tolist() == [
        [True, False, True, False],
        [False, False, True, True],
    ]


def test_ties_prune_the_lower_index_first_under_every_pattern() -> None:
    """Equal scores: the stable ascending order of the references decides (lower index pruned)."""
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 2.0]])
    assert mask_from_scores(scores, Pattern.parse("row", 0.5)).tolist() == [
        [False, False, True, True],
        [True, False, False, True],
    ]
    assert mask_from_scores(scores, Pattern.parse("2:4")).tolist() == [
        [False, False, True, True],
        [True, False, False, True],
    ]
    assert mask_from_scores(scores, Pattern.parse("layer", 0.25)).tolist() == [
        [False, False, True, True],
        [True, True, True, True],
    ]
    # SparseGPT chooses its block masks the same way: all-equal saliencies (W = 1, G = I)
    W, G = torch.ones(2, 8, dtype=torch.float64), torch.eye(8, dtype=torch.float64)
    mask = prune_layer("sparsegpt", W, G, Pattern.parse("row", 0.5), blocksize=8).mask
    assert mask.tolist() == [[False] * 4 + [True] * 4] * 2


def test_each_method_defaults_to_the_pattern_of_its_paper() -> None:
    from experiments.pruning.methods import PAPER_PATTERN
    from experiments.pruning.run import RunConfig

    assert PAPER_PATTERN == {
        "magnitude": "layer",
        "wanda": "row",
        "ria": "row",
        "sparsegpt": "layer",
        "sparseswaps": "row",
        "frankwolfe": "row",
    }
    assert RunConfig(method="sparsegpt").pattern == "layer"
    assert RunConfig(method="wanda").pattern == "row"
    assert RunConfig(method="sparsegpt", pattern="row").pattern == "row"  # still there by name
    with pytest.raises(ValueError, match="unknown pruning method 'obs'"):
        RunConfig(method="obs")


def test_sparsegpt_default_chooses_each_block_mask_over_all_rows() -> None:
    """Rows of the paper's (layer) mask differ inside a block; the layer total is exact."""
    torch.manual_seed(0)
    W = torch.randn(16, 64, dtype=torch.float64) * torch.linspace(0.1, 3, 16)[:, None]
    X = torch.randn(256, 64, dtype=torch.float64)
    pattern = Pattern.parse("layer", 0.5)
    mask = prune_layer("sparsegpt", W, X.T @ X, pattern, blocksize=32).mask
    per_row = (~mask).sum(1)
    assert int(per_row.sum()) == 16 * 64 // 2 and len(set(per_row.tolist())) > 1
