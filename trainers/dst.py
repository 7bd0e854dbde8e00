"""Dynamic sparse training mask updates: RigL (Evci et al. 2020) and SRigL (Lasby et al. 2024).

Functions here only *decide* masks; the caller applies them (zeroes newly grown weights and their
optimizer state, masks gradients). A mask is a bool tensor shaped like the weight; a "row" is an
output neuron, i.e. a row of ``weight.view(out, -1)``.
"""

from __future__ import annotations

import math

import torch


def cosine_fraction(step: int, alpha: float, t_end: int) -> float:
    """Drop fraction at ``step``: alpha/2 * (1 + cos(pi * step / t_end)); 0 from t_end on."""
    if step >= t_end:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * step / t_end))


def _rank_mask(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Bool mask of the n highest finite scores (flat)."""
    out = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if n > 0:
        out[torch.topk(scores.flatten(), n, sorted=False).indices] = True
    return out.view(scores.shape) & torch.isfinite(scores)


def rigl_update(
    weight: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor, fraction: float
) -> tuple[torch.Tensor, int]:
    """One RigL drop/grow step; returns (new mask, number of newly active positions).

    Drops the floor(fraction * nnz) active weights of smallest |W|, then grows as many positions
    of largest |grad| (the dense gradient) among all positions outside the kept set. As in RigL's
    reference code the just-dropped positions are candidates too; one that is re-grown simply
    stays active, so n_moved (positions inactive before, active after) can be below the drop
    count. nnz is unchanged.
    """
    mask = mask.bool()
    nnz = int(mask.sum())
    n_drop = int(fraction * nnz)
    if n_drop == 0:
        return mask.clone(), 0
    inf = torch.tensor(torch.inf, dtype=weight.dtype, device=weight.device)
    kept = _rank_mask(torch.where(mask, weight.detach().abs(), -inf), nnz - n_drop)
    grow = _rank_mask(torch.where(kept, -inf, grad.detach().abs().to(weight.dtype)), n_drop)
    new = kept | grow
    return new, int((new & ~mask).sum())


def constant_fan_in_mask(
    shape: tuple[int, ...], density: float, generator: torch.Generator
) -> torch.Tensor:
    """Random mask where every row holds exactly k = floor(floor(numel * density) / out) entries.

    k is clipped to [1, fan-in]; positions within a row are uniform without replacement.
    """
    out = shape[0]
    fan = math.prod(shape[1:])
    k = min(max(int(math.prod(shape) * density) // out, 1), fan)
    order = torch.rand(out, fan, generator=generator, device=generator.device).argsort(dim=1)
    mask = torch.zeros(out, fan, dtype=torch.bool, device=generator.device)
    mask.scatter_(1, order[:, :k], True)
    return mask.view(shape)


def _neurons_to_ablate(
    w_score: torch.Tensor,
    g_score: torch.Tensor,
    n_keep: int,
    n_prune: int,
    budget: int,
    gamma: float,
) -> torch.Tensor:
    """Bool per row: rows whose saliency count is below tau (SRigL's dynamic neuron ablation).

    Saliency = the n_keep largest |W| (active) united with the n_prune largest |G| over the whole
    layer. tau = max(1, floor(gamma * k0)), k0 = budget // n_out (the fan-in, nothing ablated).
    At least min_neurons = ceil(budget / fan_in) rows must survive (else k > fan_in): if the
    min_neurons-th most salient row counts fewer than tau, tau drops to that count.
    """
    n_out, fan = w_score.shape
    sal = _rank_mask(w_score, n_keep) | _rank_mask(g_score, n_prune)
    counts = sal.sum(dim=1)
    tau = max(1, int(gamma * (budget // n_out)))
    min_neurons = min(-(-budget // fan), n_out)
    if min_neurons > 0:
        tau = min(tau, int(torch.sort(counts, descending=True).values[min_neurons - 1]))
    return counts < tau


def srigl_update(
    weight: torch.Tensor,
    mask: torch.Tensor,
    grad: torch.Tensor,
    fraction: float,
    gamma_sal: float = 0.3,
    ablate: bool = True,
    *,
    nnz_budget: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """One SRigL step (reference §3.2): constant fan-in drop/grow with dynamic neuron ablation.

    nnz = the current mask count; n_prune = floor(fraction * nnz), n_keep = nnz - n_prune (n_keep
    capped at the number of non-zero active weights, as SRigL's code does, so zero weights are
    never "kept" by an arbitrary tie-break). Rows with too few salient weights are ablated (never
    if ``ablate`` is False, e.g. the last layer); k = floor(B / active rows) with the layer budget
    B. Drop: keep the n_keep largest active |W| outside ablated rows, then at most k per row
    (largest |W| first). Grow: per active row, the (k - kept) largest |G| among that row's
    positions not kept (just-dropped ones included). Every active row ends with exactly k
    entries, ablated rows with none.

    Density: B = ``nnz_budget`` (SRigL's code: floor(numel * layer density)) keeps the layer at
    floor(B / active) * active entries for ever, like the paper. Without it B = the current nnz,
    and the new nnz = k * active <= nnz: unchanged while the number of ablated rows is, and
    otherwise lower by less than one entry per active row (floor), so it can only drift down.
    info = {"k", "ablated" (row indices), "dropped", "grown"}: dropped/grown count positions that
    left/entered the mask (new nnz = old nnz - dropped + grown).
    """
    mask = mask.bool()
    shape = weight.shape
    n_out = shape[0]
    w = weight.detach().reshape(n_out, -1)
    m = mask.reshape(n_out, -1)
    g = grad.detach().reshape(n_out, -1).abs().to(w.dtype)
    fan = m.shape[1]
    inf = torch.tensor(torch.inf, dtype=w.dtype, device=w.device)
    w_score = torch.where(m, w.abs(), -inf)
    nnz = int(m.sum())
    budget = nnz if nnz_budget is None else int(nnz_budget)
    n_prune = int(fraction * nnz)
    n_keep = min(nnz - n_prune, int((w_score > 0).sum()))
    n_prune = nnz - n_keep

    if ablate:
        dead = _neurons_to_ablate(w_score, g, n_keep, n_prune, budget, gamma_sal)
    else:
        dead = torch.zeros(n_out, dtype=torch.bool, device=w.device)
    n_active = n_out - int(dead.sum())
    k = min(budget // n_active, fan) if n_active else 0
    if k == 0:  # as in SRigL's code: a layer cannot go below one weight per active neuron
        raise ValueError(f"budget {budget} gives fan-in 0 over {n_active} active rows")

    # drop: global top-n_keep |W| outside ablated rows, then the row cap at k
    kept = _rank_mask(torch.where(dead[:, None], -inf, w_score), n_keep)
    cap = torch.zeros_like(kept)
    cap.scatter_(1, torch.topk(torch.where(kept, w.abs(), -inf), k, dim=1).indices, True)
    kept &= cap
    # grow: per active row, the (k - kept) largest |G| outside the kept set
    need = torch.where(dead, 0, k - kept.sum(dim=1))
    order = torch.argsort(torch.where(kept, -inf, g), dim=1, descending=True)
    take = torch.arange(fan, device=w.device)[None, :] < need[:, None]
    grow = torch.zeros_like(kept).scatter_(1, order, take)
    new = (kept | grow).view(shape)
    info = {
        "k": k,
        "ablated": torch.nonzero(dead).flatten().tolist(),
        "dropped": int((mask & ~new).sum()),
        "grown": int((new & ~mask).sum()),
    }
    return new, info
