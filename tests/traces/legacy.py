"""A trace written again as `synth` wrote it before the gaps-zstd codec: version 1, `packbits`
masks, the first layer's input gradient left out by position (no `bwd_input_not_computed`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from traces.format import Trace, TraceWriter


def write_version_1(trace: Trace, out: Path) -> Path:
    """The steps of ``trace`` (a synthetic one) as a version-1 trace in ``out``."""
    writer = TraceWriter(out, dataclasses.replace(trace.manifest, format_version=1, steps=()))
    for sd in trace:
        meta = {k: v for k, v in sd.meta.items() if k != "bwd_input_not_computed"}
        writer.write_step(sd.step, sd.masks(), meta=meta, events=sd.events)
    return out
