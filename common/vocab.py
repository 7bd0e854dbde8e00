"""The words every package uses: dataflows, training phases, operand roles."""

from __future__ import annotations

#: the array dataflows (SCALE-Sim's names): output, weight, input stationary
DATAFLOWS = ("os", "ws", "is")
#: the three training GEMMs of a layer, in training order
PHASES = ("fwd", "bwd_input", "bwd_weight")
#: roles of (A, B, C) of each phase's GEMM C = A·B; A streams through the array's rows, B
#: through its columns
ROLES = {
    "fwd": ("ifmap", "filter", "ofmap"),
    "bwd_input": ("grad_out", "filter", "grad_in"),
    "bwd_weight": ("grad_out", "ifmap", "grad_w"),
}
