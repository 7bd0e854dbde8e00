"""SRigL's condensed linear layer: constant fan-in rows stored as (values, column indices).

A weight with k non-zeros in every active row becomes ``Wc`` (n_active x k) and ``Idx``
(n_active x k); all-zero (ablated) rows are dropped, which is SRigL's structured neuron sparsity.
Forward work is B * n_active * k multiply-adds and needs no row pointers, unlike CSR
(reference §3.3).
"""

from __future__ import annotations

import torch
from torch import nn

# Eager forward: gather everything at once up to this many gathered inputs (floats), beyond it
# use row blocks of at most BLOCK_ELEMS gathered inputs, so memory stays O(block), not O(B n k).
GATHER_LIMIT = 1 << 21
BLOCK_ELEMS = 1 << 20


class CondensedLinear(nn.Module):
    """y[b, r] = sum_j Wc[r, j] * x[b, Idx[r, j]] + bias[r] over the active rows r.

    By default the output has only the active rows (``active_rows`` maps them to the original
    output indices). With ``full_output`` it has ``out_features`` columns and equals the masked
    dense layer: ablated rows give their bias (0 when there is no bias).
    """

    def __init__(
        self,
        wc: torch.Tensor,
        idx: torch.Tensor,
        bias: torch.Tensor | None,
        active_rows: torch.Tensor,
        out_features: int,
        in_features: int,
        full_output: bool = False,
    ) -> None:
        super().__init__()
        self.Wc = nn.Parameter(wc)
        self.register_buffer("Idx", idx)
        self.register_buffer("active_rows", active_rows)
        # the full bias is kept so that full_output can reproduce ablated rows' constant outputs
        self.bias = None if bias is None else nn.Parameter(bias)
        self.out_features = out_features
        self.in_features = in_features
        self.full_output = full_output

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, mask: torch.Tensor, *, full_output: bool = False
    ) -> CondensedLinear:
        """Condense ``linear.weight * mask``; the mask's non-empty rows must all hold k entries.

        Indices are int64 (what torch.gather needs) in increasing column order per row.
        """
        mask = mask.bool()
        if mask.shape != linear.weight.shape:
            raise ValueError(f"mask {tuple(mask.shape)} != weight {tuple(linear.weight.shape)}")
        counts = mask.sum(dim=1)
        active = torch.nonzero(counts).flatten()
        ks = counts[active].unique()
        if ks.numel() > 1:
            raise ValueError(f"rows are not constant fan-in: counts {ks.tolist()}")
        k = int(ks[0]) if ks.numel() else 0
        # nonzero() walks row-major, so each active row's columns come out sorted and contiguous
        cols = torch.nonzero(mask[active])[:, 1].reshape(active.numel(), k)
        wc = linear.weight.detach()[active].gather(1, cols).clone()
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(wc, cols, bias, active, linear.out_features, linear.in_features, full_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., n_active), or (..., out_features) with full_output."""
        x2 = x.reshape(-1, self.in_features)
        n, k = self.Idx.shape
        if x2.shape[0] * n * k <= GATHER_LIMIT or torch.compiler.is_compiling():
            # (B, n, k) gather then a row-wise dot; inductor fuses the two into one loop
            g = torch.gather(
                x2[:, None, :].expand(-1, n, -1), 2, self.Idx.expand(x2.shape[0], n, k)
            )
            y = torch.linalg.vecdot(g, self.Wc)
        else:
            y = self._blocked(x2)
        if self.bias is not None:
            y = y + self.bias[self.active_rows]
        if self.full_output:
            base = x2.new_zeros(x2.shape[0], self.out_features)
            if self.bias is not None:
                base = base + self.bias
            y = base.index_copy(1, self.active_rows, y)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _blocked(self, x2: torch.Tensor) -> torch.Tensor:
        """Large batches in eager mode: blocks of rows whose gathered inputs fit in cache.

        Gathering whole rows of x^T (one per weight) gives contiguous k x B tiles for a batched
        matrix-vector product, and the block size bounds the temporary at BLOCK_ELEMS floats.
        """
        n, k = self.Idx.shape
        xt = x2.t().contiguous()
        y = x2.new_empty(n, x2.shape[0])
        rows = max(1, BLOCK_ELEMS // (k * x2.shape[0]))
        for s in range(0, n, rows):
            e = min(s + rows, n)
            g = xt.index_select(0, self.Idx[s:e].flatten()).view(e - s, k, -1)
            y[s:e] = torch.bmm(self.Wc[s:e, None, :], g).squeeze(1)
        return y.t()

    def extra_repr(self) -> str:
        n, k = self.Idx.shape
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"active={n}, fan_in={k}, full_output={self.full_output}"
        )
