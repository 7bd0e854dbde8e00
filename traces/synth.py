"""Synthetic traces: masks drawn from a sparsity config instead of a training run.

A method preset decides which operand of which training GEMM is sparse:

==========  ===========================  ===========================  ==========================
method      fwd (filter, ifmap)          bwd_input (filter, grad_out) bwd_weight (ifmap, grad_out)
==========  ===========================  ===========================  ==========================
dense       dense, natural               dense, dense                 natural, dense
swat        W~ (top-K), natural          W~ (same mask), dense        A~ (top-K, layer's s_l),
                                                                      dense
static      W mask, natural              W mask, dense                natural, dense; result
                                                                      grad_w masked by W's mask
rigl        as static; masks drop/grow between recorded steps (cosine-decayed fraction)
srigl       as rigl with constant fan-in weights (``fanin`` pattern), kept per row
==========  ===========================  ===========================  ==========================

"natural" is dense unless ``relu_sparsity`` > 0: then every layer but the first reads a
post-ReLU input with that fraction of natural zeros (SWAT's top-K then picks among the nonzeros).
Output gradients are dense in every method (SWAT never sparsifies them; BatchNorm spreads ReLU's
zeros). Every random draw comes from a generator seeded by (seed, step, layer, purpose), so a
config and seed give byte-identical traces.

The trace is format version 2 with ``gaps-zstd`` masks (about their entropy on disk,
``traces.codec``); every step lists the first layer as ``bwd_input_not_computed`` (the network's
input needs no gradient), which is what version 1 said by position, so the GEMMs simulated are
the same.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError, TraceError
from common.fsutil import atomic_output_dir
from common.yamlio import describe
from traces import density as dens
from traces.codec import GAPS_ZSTD
from traces.format import (
    DTYPES,
    MAX_BATCH,
    Manifest,
    PackedMask,
    TraceWriter,
    _check_limits,
)
from traces.layers import Layer
from traces.patterns import Pattern, activation_mask, parse_pattern, weight_mask

METHODS = ("dense", "swat", "static", "rigl", "srigl")
DENSITY_DEFAULT = {"dense": "uniform", "swat": "uniform", "static": "uniform",
                   "rigl": "erk", "srigl": "erk"}
DENSITY_KINDS = ("uniform", "erk", "explicit")
RIGL_ALPHA = 0.3

# seeds of the independent random streams
_W, _NATURAL, _ACT, _UPDATE = 1, 2, 3, 4


def version() -> str:
    try:
        return metadata.version("sparsesim")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass(frozen=True)
class SynthConfig:
    """What ``sparsesim synth`` builds. ``model`` is a built-in model name or a SCALE-Sim
    topology CSV path. ``sparsity`` is the global weight sparsity S in [0, 1] (implied by an N:M
    pattern when omitted)."""

    model: str
    method: str = "swat"
    sparsity: float | None = None
    batch: int = 32
    seed: int = 0
    density: str | None = None
    layer_sparsity: tuple[float, ...] | None = None
    pattern: str = "random"
    first_dense: bool | None = None
    relu_sparsity: float = 0.0
    steps: int = 1
    dtype: str = "float32"


@dataclass(frozen=True)
class Plan:
    """A checked config resolved to layers and per-layer weight densities."""

    config: SynthConfig
    model_name: str
    layers: tuple[Layer, ...]
    densities: tuple[float, ...]
    pattern: Pattern
    density_kind: str
    first_dense: bool
    sparsity: float
    #: per layer, the N:M pattern a topology's Sparsity column gives (None: a dense row); empty
    #: when every layer follows ``pattern``
    layer_patterns: tuple[Pattern | None, ...] = ()

    def pattern_of(self, li: int) -> Pattern:
        """The pattern layer ``li``'s weights are drawn with."""
        return (self.layer_patterns[li] or self.pattern) if self.layer_patterns else self.pattern


def _load_layers(model: str) -> tuple[str, tuple[Layer, ...], tuple[str | None, ...]]:
    """The model's name, layers and, for a SCALE-Sim topology, its rows' Sparsity fields."""
    if model.lower().endswith(".csv") or os.sep in model:
        from traces.topology import read_topology

        topo = read_topology(model)
        return topo.name, topo.layers, topo.nm_sparsity
    from traces.models import get_model

    table = get_model(model)
    return table.name, table.layers, ()


def _column_plan(cfg: SynthConfig, name: str, layers: tuple[Layer, ...],
                 column: tuple[str | None, ...]) -> Plan:
    """The plan of a topology whose Sparsity column gives some rows N:M: each such layer's
    weights drawn N:M (density N/M), the other rows dense, as SCALE-Sim runs the column. A
    flag that would set the densities another way is refused, not silently overridden."""
    clash = [flag for flag, given in (
        (f"--method {cfg.method}", cfg.method in ("dense", "srigl")),
        ("--sparsity", cfg.sparsity is not None),
        ("--layer-sparsity", cfg.layer_sparsity is not None),
        ("--density", cfg.density is not None),
        (f"--pattern {cfg.pattern}", cfg.method != "srigl" and cfg.pattern != "random"),
        ("--first-dense" if cfg.first_dense else "--no-first-dense", cfg.first_dense is not None))
        if given]
    if clash:
        raise ConfigError(cfg.model, "Sparsity",
                          f"the topology's Sparsity column sets each row's weights N:M (rows "
                          f"without one dense); {', '.join(clash)} would set them too: drop "
                          f"{'it' if len(clash) == 1 else 'them'}, or the column")
    patterns = tuple(None if nm is None else parse_pattern(nm, f"{cfg.model}: Sparsity")
                     for nm in column)
    densities = tuple(1.0 if p is None else p.nm_density for p in patterns)
    return Plan(cfg, name, layers, densities, Pattern("random"), "explicit", densities[0] >= 1.0,
                1.0 - dens.weight_density(layers, densities), patterns)


MAX_STEPS = 10_000  # recorded steps of a synthetic trace (docs/limits.md)
MAX_SEED = 2**64 - 1  # numpy's seed sequence takes any non-negative integer; one word is plenty


def plan(cfg: SynthConfig) -> Plan:
    """Check every field of ``cfg`` and resolve densities; raise ``ConfigError`` on bad input."""
    if cfg.method not in METHODS:
        raise ConfigError("--method", None,
                          f"unknown method {cfg.method!r}; expected one of {', '.join(METHODS)}")
    for flag, v, low, high in (("--batch", cfg.batch, 1, MAX_BATCH),
                               ("--steps", cfg.steps, 1, MAX_STEPS),
                               ("--seed", cfg.seed, 0, MAX_SEED)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ConfigError(flag, None, f"expected an integer >= {low}, got {describe(v)}")
        if v > high:
            raise ConfigError(flag, None, f"expected an integer >= {low} and at most {high:,} "
                                          f"(the limit), got {describe(v)}")
    if cfg.dtype not in DTYPES:
        raise ConfigError("--dtype", None,
                          f"expected one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if not 0.0 <= cfg.relu_sparsity < 1.0:
        raise ConfigError("--relu-sparsity", None, f"expected a value in [0, 1), got "
                                                    f"{cfg.relu_sparsity}")
    pattern = parse_pattern(cfg.pattern)
    if cfg.method == "srigl":
        if pattern.kind not in ("random", "fanin"):
            raise ConfigError("--pattern", None, "srigl keeps a constant fan-in; use --pattern "
                                                 "fanin (the default for srigl)")
        pattern = Pattern("fanin")
    model_name, layers, column = _load_layers(cfg.model)
    for layer in layers:  # what the trace's reader would refuse, refused now
        try:
            _check_limits(layer, cfg.batch, "", f"layer {layer.name!r}")
        except TraceError as err:
            raise ConfigError("--model" if "batch_size" not in err.reason else "--batch",
                              f"{cfg.model}: {err.field}", err.reason) from None
    if any(nm is not None for nm in column):
        return _column_plan(cfg, model_name, layers, column)

    sparsity = cfg.sparsity
    if sparsity is not None and (math.isnan(sparsity) or not 0.0 <= sparsity <= 1.0):
        raise ConfigError("--sparsity", None, f"expected a value in [0, 1], got {sparsity}")
    if pattern.kind == "nm":
        implied = 1.0 - pattern.nm_density
        if sparsity is None:
            sparsity = implied
        elif abs(sparsity - implied) > 1e-9:
            raise ConfigError("--sparsity", None,
                              f"{sparsity} contradicts --pattern {pattern} (sparsity {implied})")
    kind = cfg.density or ("explicit" if cfg.layer_sparsity is not None
                           else DENSITY_DEFAULT[cfg.method])
    if kind not in DENSITY_KINDS:
        raise ConfigError("--density", None,
                          f"unknown density {kind!r}; expected one of {', '.join(DENSITY_KINDS)}")
    if cfg.method == "dense":
        sparsity = 0.0 if sparsity is None else sparsity
        if sparsity != 0.0 or cfg.layer_sparsity is not None:
            raise ConfigError("--sparsity", None, "method dense takes no weight sparsity")
    first_dense = cfg.first_dense if cfg.first_dense is not None else (kind == "uniform")
    if kind == "explicit":
        if cfg.layer_sparsity is None:
            raise ConfigError("--layer-sparsity", None,
                              "--density explicit needs a per-layer sparsity list")
        if pattern.kind == "nm":
            raise ConfigError("--pattern", None, "an N:M pattern fixes every layer's density; "
                                                 "use --density uniform")
        densities = dens.explicit(layers, cfg.layer_sparsity, "--layer-sparsity")
        sparsity = 1.0 - dens.weight_density(layers, densities)
    else:
        if cfg.layer_sparsity is not None:
            raise ConfigError("--layer-sparsity", None, f"given with --density {kind}; use "
                                                        "--density explicit")
        if sparsity is None:
            raise ConfigError("--sparsity", None, f"required for method {cfg.method}")
        if kind == "erk":
            if pattern.kind == "nm":
                raise ConfigError("--pattern", None, "an N:M pattern fixes every layer's "
                                                     "density; use --density uniform")
            densities = dens.erk(layers, sparsity, dense=[0] if first_dense else [])
        else:
            densities = dens.uniform(layers, sparsity, first_dense)
    if cfg.method == "dense":
        densities = [1.0] * len(layers)
    return Plan(cfg, model_name, tuple(layers), tuple(densities), pattern, kind, first_dense,
                float(sparsity))


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _packed(mask: np.ndarray | None) -> PackedMask | None:
    return None if mask is None else PackedMask.from_bool(mask)


def _update_masks(masks: list[np.ndarray | None], p: Plan, step_no: int,
                  events: list[dict[str, Any]]) -> None:
    """RigL/SRigL drop-and-grow between recorded steps: drop f(t)·nnz active weights and grow
    as many inactive ones (per row for constant fan-in); layer densities stay fixed."""
    steps = p.config.steps
    frac = RIGL_ALPHA / 2.0 * (1.0 + math.cos(math.pi * step_no / steps))
    for li, mask in enumerate(masks):
        if mask is None:
            continue
        rng = _rng(p.config.seed, _UPDATE, step_no, li)
        rows = mask.reshape(mask.shape[0], -1)
        moved = 0
        if p.pattern.kind == "fanin":
            k = int(np.count_nonzero(rows[0])) if rows.shape[0] else 0
            n_move = math.floor(frac * k)
            if n_move and k < rows.shape[1]:
                n_move = min(n_move, rows.shape[1] - k)
                for r in range(rows.shape[0]):
                    on, off = np.flatnonzero(rows[r]), np.flatnonzero(~rows[r])
                    rows[r, rng.choice(on, n_move, replace=False)] = False
                    rows[r, rng.choice(off, n_move, replace=False)] = True
                moved = n_move * rows.shape[0]
        else:
            flat = mask.reshape(-1)
            on, off = np.flatnonzero(flat), np.flatnonzero(~flat)
            n_move = min(math.floor(frac * on.size), off.size)
            if n_move:
                flat[rng.choice(on, n_move, replace=False)] = False
                flat[rng.choice(off, n_move, replace=False)] = True
            moved = n_move
        if moved:
            events.append({"type": "mask_update", "layer": p.layers[li].name,
                           "dropped": int(moved), "grown": int(moved), "fraction": frac})


def synthesize(
    cfg: SynthConfig,
    out: str | os.PathLike,
    force: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    command: Sequence[str] | None = None,
) -> Path:
    """Build the synthetic trace of ``cfg`` in directory ``out`` (written under a temporary name
    and renamed when complete). Returns ``out``."""
    p = plan(cfg)
    out = Path(out)
    layers = p.layers
    batch = cfg.batch
    clustered = p.pattern.kind == "clustered"
    sparse_w = cfg.method != "dense"
    masks: list[np.ndarray | None] = []
    for li, (layer, d) in enumerate(zip(layers, p.densities, strict=True)):
        if sparse_w and d < 1.0:
            masks.append(weight_mask(layer, d, p.pattern_of(li), _rng(cfg.seed, _W, li)))
        else:
            masks.append(None)
    sparsity_cfg = {
        "method": cfg.method,
        "sparsity": p.sparsity,
        "density": p.density_kind,
        "pattern": "Sparsity column" if p.layer_patterns else str(p.pattern),
        **({"layer_pattern": [None if x is None else str(x) for x in p.layer_patterns]}
           if p.layer_patterns else {}),
        "first_dense": p.first_dense,
        "relu_sparsity": cfg.relu_sparsity,
        "layer_density": [round(d, 12) for d in p.densities],
    }
    manifest = Manifest(
        model=p.model_name, method=cfg.method, sparsity=sparsity_cfg, seed=cfg.seed,
        batch_size=batch, dtype=cfg.dtype, layers=layers,
        producer={"name": "sparsesim", "version": version(), "tool": "synth",
                  **({"command": list(command)} if command else {})},
        generator={"name": "sparsesim.traces.synth", "config": asdict(cfg),
                   "seed": cfg.seed, "streams": "default_rng([seed, stream, step, layer])"},
        format_version=2,
    )
    total = cfg.steps * len(layers)
    with atomic_output_dir(out, force=force) as tmp:
        writer = TraceWriter(tmp, manifest, codec=GAPS_ZSTD)
        for step in range(cfg.steps):
            events: list[dict[str, Any]] = []
            if step and cfg.method in ("rigl", "srigl"):
                _update_masks(masks, p, step, events)
            ops: dict[str, Any] = {}
            for li, layer in enumerate(layers):
                if progress:
                    progress(step * len(layers) + li, total, layer.name)
                w = _packed(masks[li])
                ishape = layer.ifmap_shape(batch)
                natural = None
                if cfg.relu_sparsity > 0.0 and li > 0:
                    natural = activation_mask(ishape, 1.0 - cfg.relu_sparsity, clustered,
                                              _rng(cfg.seed, _NATURAL, step, li))
                nat = _packed(natural)
                if cfg.method == "dense":
                    ops[layer.name] = {
                        "fwd": {"filter": None, "ifmap": nat},
                        "bwd_input": {"filter": None, "grad_out": None},
                        "bwd_weight": {"ifmap": nat, "grad_out": None},
                    }
                elif cfg.method == "swat":
                    d = p.densities[li]
                    a_sparse = nat
                    if d < 1.0:
                        a_sparse = _packed(activation_mask(
                            ishape, d, clustered, _rng(cfg.seed, _ACT, step, li), within=natural))
                    ops[layer.name] = {
                        "fwd": {"filter": w, "ifmap": nat},
                        "bwd_input": {"filter": w, "grad_out": None},
                        "bwd_weight": {"ifmap": a_sparse, "grad_out": None},
                    }
                else:  # static, rigl, srigl: the weight mask also masks the weight gradient
                    bw: dict[str, Any] = {"ifmap": nat, "grad_out": None}
                    if w is not None:
                        bw["grad_w"] = w
                    ops[layer.name] = {
                        "fwd": {"filter": w, "ifmap": nat},
                        "bwd_input": {"filter": w, "grad_out": None},
                        "bwd_weight": bw,
                    }
            meta = {"synthetic": True, "bwd_input_not_computed": [layers[0].name]}
            writer.write_step(step, ops, meta=meta, events=events)
        if progress:
            progress(total, total, "done")
    return out

