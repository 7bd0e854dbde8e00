"""Sparsity methods: each one only *decides* masks (``layer.masks``, see ``sparse_fn``).

The training loop calls, per step ``t``::

    method.before_step(t)            # masks for this step (thresholds due, RigL update due)
    loss.backward()
    if method.before_optimizer(t):   # RigL/SRigL: a mask-update step skips the optimizer step
        optimizer.step()
    method.after_optimizer(t)        # re-mask weights and momentum; SWAT-M re-allocates

=========  ===================================================================================
Dense      no masks
SWAT       W~ = topK(W, s_l) in fwd and bwd_input, A~ = topK(A, s_l) stashed for bwd_weight;
           thresholds recomputed every ``period`` steps and reused between (reference §1.2);
           U: uniform, first layer dense; ERK: ERK, all layers; M: momentum re-allocation
           (sparse momentum) after every optimizer step. ``structured``: W by (out, in) kernel
           slices ranked by L1 norm, A stays unstructured.
Static     a fixed mask with uniform/ERK/SNIP/GraSP/SynFlow densities; ``init="eoi"``
           replaces mask and weights by exact orthogonal ones; only masked dW is computed.
RigL       ERK masks; every ΔT steps until 0.75·T drop the f(t)·nnz smallest |W|, grow as many
           largest |dense dW| (f: cosine-decayed α); dW is dense on update steps only.
SRigL      RigL with constant fan-in per neuron and dynamic neuron ablation (γ_sal), the last
           layer never ablated.
=========  ===================================================================================

Layers are taken in registration order (equal to forward order for ``trainers.models``); the
"first" and "last" layers of the budgets are the first and last of that list.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from common.errors import ConfigError
from traces import density as dens
from traces.layers import Layer
from traces.patterns import keep_count
from trainers.sparse_fn import (
    BWI_FILTER,
    BWW_IFMAP,
    FWD_FILTER,
    GRAD_W,
    SparseModule,
    sparse_layers,
)

METHODS = ("dense", "swat", "swat-erk", "swat-m", "static", "rigl", "srigl")
DENSITIES = ("uniform", "erk", "snip", "grasp", "synflow")
INITS = ("default", "eoi")


def weight_layer(name: str, m: SparseModule) -> Layer:
    """A ``Layer`` with ``m``'s weight shape (for density allocation; the input size is a
    placeholder: only weight shapes matter there)."""
    if isinstance(m, nn.Conv2d):
        span = tuple(d * (k - 1) + 1 for d, k in zip(m.dilation, m.kernel_size, strict=True))
        return Layer.conv(name, m.in_channels, m.out_channels, m.kernel_size, span,
                          groups=m.groups, dilation=m.dilation)
    return Layer.linear(name, m.in_features, m.out_features)


def _momentum(optimizer: torch.optim.Optimizer | None, p: torch.Tensor) -> torch.Tensor | None:
    if optimizer is None:
        return None
    return optimizer.state.get(p, {}).get("momentum_buffer")


class Method:
    """The default behaviour of the hooks: nothing is masked (dense training)."""

    name = "dense"

    def __init__(self, sparsity: float = 0.0) -> None:
        self.sparsity = sparsity
        self.layers: list[tuple[str, SparseModule]] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.events: list[dict[str, Any]] = []

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               steps: int = 1, batch: tuple[torch.Tensor, torch.Tensor] | None = None,
               generator: torch.Generator | None = None) -> None:
        """Decide the initial masks of ``model``'s sparse layers (``sparse_fn.sparsify`` first).
        ``batch`` feeds the saliency criteria; ``generator`` draws random masks."""
        self.layers = sparse_layers(model)
        if not self.layers:
            raise ConfigError("--model", None, "the model has no sparse conv/linear layers; "
                                               "call trainers.sparse_fn.sparsify(model) first")
        self.optimizer = optimizer
        self.steps = steps

    def before_step(self, step: int) -> None:
        pass

    def before_optimizer(self, step: int) -> bool:
        return True

    def after_optimizer(self, step: int) -> None:
        pass

    def config(self) -> dict[str, Any]:
        """The sparsity config for a trace manifest."""
        return {"sparsity": self.sparsity}

    def layer_density(self) -> dict[str, float]:
        """Nominal weight density per layer name."""
        return {name: 1.0 for name, _ in self.layers}

    def step_meta(self) -> dict[str, Any]:
        """Per-step annotations (thresholds) for the trace."""
        return {}

    def pop_events(self) -> list[dict[str, Any]]:
        """Mask-update events since the last call."""
        out, self.events = self.events, []
        return out


Dense = Method


# ---- SWAT -------------------------------------------------------------------------------------
class TopK:
    """Keep the largest-magnitude entries of a tensor: an exact top-K (K = ceil((1 − s)·n)) when
    ``recompute`` is set, which stores the K-th largest value as the threshold; otherwise a
    compare with the stored threshold. ``structured``: rank the (out, in) kernel slices of a conv
    weight by L1 norm and keep whole slices."""

    def __init__(self, sparsity: float, structured: bool = False) -> None:
        self.sparsity = sparsity
        self.structured = structured
        self.threshold: float | None = None
        self.recompute = True
        self.recomputed = False
        self.last: torch.Tensor | None = None  # the last mask (SWAT-M reads the kept weights)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        score = t.abs()
        if self.structured and t.dim() == 4:
            score = score.sum((2, 3))
        if self.recompute or self.threshold is None:
            flat = score.reshape(-1)
            k = keep_count(1.0 - self.sparsity, flat.numel(), at_least=1)
            vals, idx = torch.topk(flat, k, sorted=False)
            mask = torch.zeros(flat.numel(), dtype=torch.bool, device=t.device)
            mask[idx] = True
            mask = mask.view(score.shape)
            self.threshold = float(vals.min())
            self.recompute, self.recomputed = False, True
        else:
            mask = score >= self.threshold
        if mask.shape != t.shape:
            mask = mask[:, :, None, None].expand(t.shape)
        self.last = mask
        return mask


class SWAT(Method):
    """Sparse Weight Activation Training; ``variant`` "U", "ERK" or "M"."""

    PERIOD = {"U": 10, "ERK": 10, "M": 20}

    def __init__(self, sparsity: float, variant: str = "U", structured: bool = False,
                 period: int | None = None) -> None:
        super().__init__(sparsity)
        if variant not in self.PERIOD:
            raise ConfigError("--method", None, f"unknown SWAT variant {variant!r}")
        self.variant = variant
        self.name = {"U": "swat", "ERK": "swat-erk", "M": "swat-m"}[variant]
        self.structured = structured
        self.period = period or self.PERIOD[variant]
        self.rules: dict[str, tuple[TopK, TopK]] = {}
        self.density: dict[str, float] = {}

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               steps: int = 1, batch: Any = None, generator: Any = None) -> None:
        super().attach(model, optimizer, steps)
        geo = [weight_layer(n, m) for n, m in self.layers]
        if self.variant == "U":
            d = dens.uniform(geo, self.sparsity, first_dense=True)
        elif self.variant == "ERK":
            d = dens.erk(geo, self.sparsity)
        else:  # M: start uniform over all layers, re-allocated from the momentum every step
            d = dens.uniform(geo, self.sparsity, first_dense=False)
        for (name, m), density in zip(self.layers, d, strict=True):
            self.density[name] = density
            if density >= 1.0 and self.variant != "M":
                continue
            w_rule, a_rule = TopK(1.0 - density, self.structured), TopK(1.0 - density)
            self.rules[name] = (w_rule, a_rule)
            m.masks[FWD_FILTER] = m.masks[BWI_FILTER] = w_rule
            m.masks[BWW_IFMAP] = a_rule

    def before_step(self, step: int) -> None:
        due = step % self.period == 0
        for w_rule, a_rule in self.rules.values():
            for rule in (w_rule, a_rule):
                rule.recomputed = False
                rule.recompute = rule.recompute or due

    def after_optimizer(self, step: int) -> None:
        if self.variant == "M":
            self._reallocate()

    def _reallocate(self) -> None:
        """Sparse momentum: layer l's share of the nonzeros is its mean |momentum| over the kept
        weights; a layer above 0.99 of its size is made dense and the excess spread evenly."""
        sizes, means = [], []
        for name, m in self.layers:
            buf = _momentum(self.optimizer, m.weight)
            if buf is None:
                return
            kept = self.rules[name][0].last
            vals = buf.abs() if kept is None else buf.abs()[kept]
            sizes.append(m.weight.numel())
            means.append(float(vals.mean()) if vals.numel() else 0.0)
        total = sum(means)
        if not total > 0:
            return
        budget = (1.0 - self.sparsity) * sum(sizes)
        alloc = [mu / total * budget for mu in means]
        full: set[int] = set()
        for _ in range(1000):
            over = [i for i in range(len(sizes)) if i not in full and alloc[i] > 0.99 * sizes[i]]
            if not over:
                break
            excess = sum(alloc[i] - sizes[i] for i in over)
            full.update(over)
            for i in over:
                alloc[i] = sizes[i]
            rest = [i for i in range(len(sizes)) if i not in full]
            if not rest:
                break
            for i in rest:
                alloc[i] += excess / len(rest)
        for i, (name, _) in enumerate(self.layers):
            density = min(1.0, math.ceil(alloc[i]) / sizes[i])
            self.density[name] = density
            for rule in self.rules[name]:
                rule.sparsity = 1.0 - density  # used at the next threshold recomputation

    def config(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "method": self.name, "variant": self.variant,
                "density": {"U": "uniform", "ERK": "erk", "M": "momentum"}[self.variant],
                "structured": self.structured, "topk_period": self.period,
                "first_dense": self.variant == "U"}

    def layer_density(self) -> dict[str, float]:
        return dict(self.density)

    def step_meta(self) -> dict[str, Any]:
        out = {}
        for name, (w_rule, a_rule) in self.rules.items():
            out[name] = {"sparsity": round(w_rule.sparsity, 9),
                         "filter_threshold": w_rule.threshold,
                         "ifmap_threshold": a_rule.threshold,
                         "recomputed": w_rule.recomputed or a_rule.recomputed}
        return {"thresholds": out, "topk_period": self.period}


# ---- static masks -----------------------------------------------------------------------------
def random_mask(shape: torch.Size, density: float, generator: torch.Generator | None,
                device: torch.device) -> torch.Tensor:
    """A uniformly random mask with exactly round(density·n) kept entries (at least one)."""
    n = math.prod(shape)
    k = min(n, max(1, round(density * n)))
    if k == n:
        return torch.ones(shape, dtype=torch.bool, device=device)
    draw_on = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randperm(n, generator=generator, device=draw_on)[:k].to(device)
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[idx] = True
    return mask.view(shape)


class _Masked(Method):
    """Shared by Static, RigL and SRigL: one weight mask per layer applied in fwd and bwd_input,
    the weight gradient computed only where the mask is set, weights and momentum re-masked."""

    def __init__(self, sparsity: float, density: str) -> None:
        super().__init__(sparsity)
        if density not in DENSITIES:
            raise ConfigError("--density", None,
                              f"expected one of {', '.join(DENSITIES)}, got {density!r}")
        self.density_kind = density
        self.mask: dict[str, torch.Tensor] = {}

    def _densities(self, batch: Any) -> list[float] | list[torch.Tensor]:
        geo = [weight_layer(n, m) for n, m in self.layers]
        if self.density_kind == "uniform":
            return dens.uniform(geo, self.sparsity, first_dense=True)
        if self.density_kind == "erk":
            return dens.erk(geo, self.sparsity)
        if batch is None:
            raise ConfigError("--density", None, f"{self.density_kind} needs a batch of data")
        from trainers.saliency import prune_at_init

        model = self._model
        return prune_at_init(model, [m for _, m in self.layers], self.density_kind,
                             self.sparsity, batch)

    @staticmethod
    def _rescale(m: SparseModule, mask: torch.Tensor) -> None:
        """Keep each neuron's pre-activation variance of the dense init under the mask: scale
        row r by sqrt(fan_in / kept_r) (sparsity-aware init, Evci et al. 2022; without it a
        90 %-sparse net with no normalisation starts with a vanishing signal and does not
        train). Dense rows are unchanged."""
        rows = mask.reshape(mask.shape[0], -1)
        kept = rows.sum(1).clamp(min=1).to(m.weight.dtype)
        scale = (rows.shape[1] / kept).sqrt().view(-1, *([1] * (m.weight.dim() - 1)))
        with torch.no_grad():
            m.weight.mul_(scale)

    def _set(self, name: str, m: SparseModule, mask: torch.Tensor) -> None:
        mask = mask.to(device=m.weight.device, dtype=torch.bool)
        self.mask[name] = mask
        with torch.no_grad():
            m.weight.mul_(mask)
        m.masks[FWD_FILTER] = m.masks[BWI_FILTER] = m.masks[GRAD_W] = mask

    def after_optimizer(self, step: int) -> None:
        with torch.no_grad():
            for name, m in self.layers:
                m.weight.mul_(self.mask[name])
                buf = _momentum(self.optimizer, m.weight)
                if buf is not None:
                    buf.mul_(self.mask[name])

    def config(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "method": self.name, "density": self.density_kind}

    def layer_density(self) -> dict[str, float]:
        return {name: float(mask.float().mean()) for name, mask in self.mask.items()}


class Static(_Masked):
    """A fixed mask from a density allocation; ``init="eoi"`` re-initialises every layer with
    exact orthogonal weights of that layer's density (reference §2.3)."""

    name = "static"

    def __init__(self, sparsity: float, density: str = "uniform", init: str = "default",
                 more_nonzeros: bool = False) -> None:
        super().__init__(sparsity, density)
        if init not in INITS:
            raise ConfigError("--init", None, f"expected one of {', '.join(INITS)}, got {init!r}")
        self.init = init
        self.more_nonzeros = more_nonzeros
        self.eoi_skipped: list[str] = []

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               steps: int = 1, batch: Any = None,
               generator: torch.Generator | None = None) -> None:
        super().attach(model, optimizer, steps)
        self._model = model
        found = self._densities(batch)
        for (name, m), d in zip(self.layers, found, strict=True):
            if isinstance(d, torch.Tensor):
                mask, d = d, float(d.float().mean())
            else:
                mask = random_mask(m.weight.shape, d, generator, m.weight.device)
            if self.init == "eoi":
                mask = self._eoi(name, m, d, generator) if d > 0 else mask
            else:
                self._rescale(m, mask)
            self._set(name, m, mask)

    def _eoi(self, name: str, m: SparseModule, density: float,
             generator: torch.Generator | None) -> torch.Tensor:
        from trainers.eoi import eoi_init_

        if generator is None:
            generator = torch.Generator().manual_seed(0)
        odd = all(k % 2 for k in getattr(m, "kernel_size", (1,)))
        if getattr(m, "groups", 1) != 1 or not odd:
            # EOI needs a centre tap and a dense channel map: such a layer keeps its default
            # init under a random mask of the same density (listed in the manifest)
            self.eoi_skipped.append(name)
            return random_mask(m.weight.shape, density, generator, m.weight.device)
        with torch.no_grad():
            w = m.weight.detach().cpu()
            mask = eoi_init_(w, density, generator, more_nonzeros=self.more_nonzeros)
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.zero_()
        return mask

    def config(self) -> dict[str, Any]:
        out = {**super().config(), "init": self.init}
        if self.eoi_skipped:
            out["eoi_skipped"] = list(self.eoi_skipped)
        return out


# ---- RigL and SRigL ---------------------------------------------------------------------------
class RigL(_Masked):
    """Rigging the Lottery (Evci et al. 2020), reference §3.1."""

    name = "rigl"

    def __init__(self, sparsity: float, density: str = "erk", delta_t: int = 100,
                 alpha: float = 0.3, end_fraction: float = 0.75) -> None:
        super().__init__(sparsity, density)
        self.delta_t, self.alpha, self.end_fraction = delta_t, alpha, end_fraction
        self.update_now = False
        self.dynamic: set[str] = set()

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               steps: int = 1, batch: Any = None,
               generator: torch.Generator | None = None) -> None:
        super().attach(model, optimizer, steps)
        self._model = model
        self.t_end = int(self.end_fraction * steps)
        found = self._densities(batch)
        for (name, m), d in zip(self.layers, found, strict=True):
            if isinstance(d, torch.Tensor):
                d = float(d.float().mean())
            self._set(name, m, self._initial_mask(name, m, d, generator))
        self.dynamic = {name for name, mask in self.mask.items() if not bool(mask.all())}

    def _initial_mask(self, name: str, m: SparseModule, density: float,
                      generator: torch.Generator | None) -> torch.Tensor:
        mask = random_mask(m.weight.shape, density, generator, m.weight.device)
        self._rescale(m, mask)
        return mask

    def _dynamic(self, name: str) -> bool:
        """A layer the allocation left dense (ERK) is never updated."""
        return name in self.dynamic

    def _is_update(self, step: int) -> bool:
        return step > 0 and step % self.delta_t == 0 and step < self.t_end

    def before_step(self, step: int) -> None:
        self.update_now = self._is_update(step)
        for name, m in self.layers:
            # the dense weight gradient is needed (and computed) on update steps only
            m.masks[GRAD_W] = None if self.update_now and self._dynamic(name) else self.mask[name]

    def before_optimizer(self, step: int) -> bool:
        if not self.update_now:
            return True
        from trainers.dst import cosine_fraction

        fraction = cosine_fraction(step, self.alpha, self.t_end)
        for i, (name, m) in enumerate(self.layers):
            if not self._dynamic(name) or m.weight.grad is None:
                continue
            new, event = self._update(name, m, self.mask[name], m.weight.grad, fraction,
                                      last=i == len(self.layers) - 1)
            self._set(name, m, new)
            buf = _momentum(self.optimizer, m.weight)
            if buf is not None:
                with torch.no_grad():
                    buf.mul_(new)  # grown weights start at zero with no momentum
            self.events.append({"type": "mask_update", "layer": name, "step": step,
                                "fraction": round(fraction, 9), **event,
                                "nnz": int(new.sum())})
        return False  # the update replaces this step's optimizer step (rigl_torch)

    def _update(self, name: str, m: SparseModule, mask: torch.Tensor, grad: torch.Tensor,
                fraction: float, last: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        from trainers.dst import rigl_update

        new, moved = rigl_update(m.weight.detach(), mask, grad, fraction)
        return new, {"dropped": int(moved), "grown": int(moved)}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "delta_t": self.delta_t, "alpha": self.alpha,
                "t_end": self.t_end, "drop": "magnitude", "grow": "gradient"}


def _json(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist() if v.numel() != 1 else v.item()
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    return v


class SRigL(RigL):
    """Structured RigL (Lasby et al. 2024), reference §3.2: constant fan-in k per neuron, neurons
    with fewer than γ_sal·k salient weights ablated (not in the last layer)."""

    name = "srigl"

    def __init__(self, sparsity: float, density: str = "erk", delta_t: int = 100,
                 alpha: float = 0.3, end_fraction: float = 0.75, gamma_sal: float = 0.3) -> None:
        super().__init__(sparsity, density, delta_t, alpha, end_fraction)
        self.gamma_sal = gamma_sal
        self.budget: dict[str, int] = {}  # per layer: floor(numel · density), SRigL's budget

    def _initial_mask(self, name: str, m: SparseModule, density: float,
                      generator: torch.Generator | None) -> torch.Tensor:
        from trainers.dst import constant_fan_in_mask

        if density >= 1.0:
            return torch.ones_like(m.weight, dtype=torch.bool)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.budget[name] = int(m.weight.numel() * density)
        mask = constant_fan_in_mask(m.weight.shape, density, generator).to(m.weight.device)
        k = int(mask[0].sum())
        with torch.no_grad():  # grad-flow init: N(0, 2/k) per neuron (He for fan-in k)
            w = torch.randn(m.weight.shape, generator=generator, device=generator.device)
            w *= math.sqrt(2.0 / max(k, 1))
            m.weight.copy_(w.to(m.weight.device))
        return mask

    def _update(self, name: str, m: SparseModule, mask: torch.Tensor, grad: torch.Tensor,
                fraction: float, last: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        from trainers.dst import srigl_update

        new, info = srigl_update(m.weight.detach(), mask, grad, fraction,
                                 gamma_sal=self.gamma_sal, ablate=not last,
                                 nnz_budget=self.budget.get(name))
        event = {k: _json(v) for k, v in info.items()}
        ablated = event.get("ablated")
        if isinstance(ablated, list):
            event["ablated_neurons"] = ablated
            event["ablated"] = len(ablated)
        return new, event

    def config(self) -> dict[str, Any]:
        return {**super().config(), "gamma_sal": self.gamma_sal, "fan_in": "constant"}


def make_method(name: str, sparsity: float, density: str | None = None, init: str = "default",
                structured: bool = False, topk_period: int | None = None) -> Method:
    """A method by its CLI name (``METHODS``)."""
    if name == "dense":
        return Dense(0.0)
    if name in ("swat", "swat-erk", "swat-m"):
        variant = {"swat": "U", "swat-erk": "ERK", "swat-m": "M"}[name]
        return SWAT(sparsity, variant, structured, topk_period)
    if name == "static":
        return Static(sparsity, density or "uniform", init)
    if name == "rigl":
        return RigL(sparsity, density or "erk")
    if name == "srigl":
        return SRigL(sparsity, density or "erk")
    raise ConfigError("--method", None, f"expected one of {', '.join(METHODS)}, got {name!r}")
