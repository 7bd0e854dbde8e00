"""Density summaries of a trace (what ``sparsesim synth`` and ``sparsesim info`` print)."""

from __future__ import annotations

from typing import Any

from common.vocab import PHASES
from traces.format import PHASE_OPERANDS, Trace


def trace_summary(trace: Trace, first_step_only: bool = False) -> dict[str, Any]:
    """Densities of a trace.

    Returns ``{"bytes": size on disk, "density": {phase: {role: element-weighted density over all
    layers and read steps}}, "layers": {name: {phase: {role: density}}}}`` where the per-layer
    densities are averaged over the steps read.
    """
    size = sum(f.stat().st_size for f in trace.path.iterdir() if f.is_file())
    nnz = {ph: {r: 0 for r in PHASE_OPERANDS[ph]} for ph in PHASES}
    numel = {ph: {r: 0 for r in PHASE_OPERANDS[ph]} for ph in PHASES}
    per_layer: dict[str, dict[str, dict[str, float]]] = {}
    read = 0
    for step in trace:
        read += 1
        for name, phases in step.layers.items():
            lay = per_layer.setdefault(name, {ph: dict.fromkeys(PHASE_OPERANDS[ph], 0.0)
                                              for ph in PHASES})
            for ph in PHASES:
                for role in PHASE_OPERANDS[ph]:
                    op = phases[ph][role]
                    nnz[ph][role] += op.nnz
                    numel[ph][role] += op.numel
                    lay[ph][role] += op.density
        if first_step_only:
            break
    for lay in per_layer.values():
        for ph in PHASES:
            for role in lay[ph]:
                lay[ph][role] /= max(read, 1)
    density = {ph: {r: (nnz[ph][r] / numel[ph][r] if numel[ph][r] else 1.0)
                    for r in PHASE_OPERANDS[ph]} for ph in PHASES}
    return {"bytes": size, "density": density, "layers": per_layer, "steps_read": read}
