"""Sparsity patterns for synthetic masks, each with an exact, stated nonzero count.

Weight patterns act on the weight tensor viewed as a matrix: one row per output filter/neuron,
``fan_in`` = Cin/groups·kh·kw columns in C order (PyTorch's im2col order, the GEMM's K order).

==============  =================================================================  ==============
pattern         what is kept                                                       realized
                                                                                   density
==============  =================================================================  ==============
``random``      k = ceil(d·n) positions chosen uniformly                            exactly k/n
``clustered``   top-k of a magnitude-like score (|N(0,1)| × per-filter and          exactly k/n
                per-input-channel log-normal scales), so some filters and
                channels are much denser than others, as in trained weights
``N:M``         in every group of M consecutive weights along a row, exactly N     N/M (a short
                (a short last group keeps min(N, its length))                      last group
                                                                                   aside)
``fanin``       every row keeps exactly ceil(d·fan_in) weights (SRigL)             ceil(d·f)/f
``channel``     ceil(d·Cin) whole input channels (all their weights)               ceil(d·C)/C
``filter``      ceil(d·Cout) whole output filters                                  ceil(d·F)/F
``kernel``      ceil(d·Cout·Cin/g) whole kh×kw kernel slices (SWAT's structured    exact
                variant)
``block:RxC``   whole R×C blocks of the row × fan_in matrix, in random order, until   within one
                they hold ceil(d·n) weights (``block`` alone means 4x4)            block / n
==============  =================================================================  ==============

Activation masks are unstructured (as in SWAT's code, also for its structured variant):
``random``, or ``clustered`` (a smooth spatial field × per-channel scales) when the weight pattern
is ``clustered``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError
from common.jit import njit
from traces.layers import Layer

PATTERN_NAMES = ("random", "clustered", "N:M", "fanin", "channel", "filter", "kernel", "block:RxC")


@dataclass(frozen=True)
class Pattern:
    kind: str  # random | clustered | nm | fanin | channel | filter | kernel | block
    n: int = 0
    m: int = 0
    block: tuple[int, int] = (4, 4)

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.block[0]}x{self.block[1]}"
        return self.kind

    @property
    def nm_density(self) -> float:
        return self.n / self.m


def parse_pattern(text: str, source: str = "--pattern") -> Pattern:
    """Parse a pattern name (see the module table)."""
    t = text.strip().lower()
    if t in ("random", "clustered", "fanin", "channel", "filter", "kernel"):
        return Pattern(t)
    if t == "block":
        return Pattern("block")
    mb = re.fullmatch(r"block:(\d+)x(\d+)", t)
    if mb:
        br, bc = int(mb.group(1)), int(mb.group(2))
        if br < 1 or bc < 1:
            raise ConfigError(source, None, f"block sizes must be positive, got {text!r}")
        return Pattern("block", block=(br, bc))
    mn = re.fullmatch(r"(\d+):(\d+)", t)
    if mn:
        n, m = int(mn.group(1)), int(mn.group(2))
        if not 1 <= n <= m:
            raise ConfigError(source, None, f"N:M needs 1 <= N <= M, got {text!r}")
        return Pattern("nm", n=n, m=m)
    raise ConfigError(source, None,
                      f"unknown pattern {text!r}; expected one of {', '.join(PATTERN_NAMES)}")


def keep_count(density: float, n: int, at_least: int = 0) -> int:
    """Nonzeros kept for ``density`` of ``n`` elements: ceil(d·n) (top-K's count), robust to
    float noise (0.1·1000 = 100.00000000000001 keeps 100), clipped to [``at_least``, n].
    Trainers keep at least one weight per layer (reference §0): ``at_least=1``."""
    if density <= 0.0:
        return min(n, at_least)
    return min(n, max(at_least, math.ceil(density * n - 1e-9)))


# ------------------------------------------------------------------------------------------------
# building blocks (flat, exact counts)
# ------------------------------------------------------------------------------------------------
_CHUNK = 1 << 20  # uniform draws per chunk of exact_random


def exact_random(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A flat boolean mask of length ``n`` with exactly ``k`` True, uniformly chosen."""
    if k <= 0:
        return np.zeros(n, dtype=bool)
    if k >= n:
        return np.ones(n, dtype=bool)
    # uniform draws compared in chunks: the same stream as one rng.random(n) (float32 draws
    # take 32-bit halves in order, across calls), without an n-float temporary
    mask = np.empty(n, dtype=bool)
    buf = np.empty(min(n, _CHUNK), dtype=np.float32)
    threshold = np.float32(k / n)
    for i in range(0, n, buf.size):
        m = min(buf.size, n - i)
        rng.random(m, dtype=np.float32, out=buf[:m])
        np.less(buf[:m], threshold, out=mask[i:i + m])
    count = int(np.count_nonzero(mask))
    # the draw ``rng.choice(np.flatnonzero(mask == v), m, replace=False)`` without the list of
    # positions (up to n of them): choice picks ranks by the population's size alone
    if count > k:
        mask[_nth(mask, True, rng.choice(count, count - k, replace=False))] = False
    elif count < k:
        mask[_nth(mask, False, rng.choice(n - count, k - count, replace=False))] = True
    return mask


def _nth(mask: np.ndarray, value: bool, ranks: np.ndarray) -> np.ndarray:
    """Positions in the flat boolean ``mask`` of its elements equal to ``value`` with the given
    ranks (0 = the first such element), in ascending order."""
    want = np.sort(ranks.astype(np.int64))
    out = np.empty(want.size, dtype=np.int64)
    flat = mask.view(np.uint8)
    _nth_kernel(flat, flat[: flat.size // 8 * 8].view(np.uint64), np.uint8(value), want, out)
    return out


@njit(cache=True)
def _nth_kernel(mask, words, value, want, out):  # pragma: no cover - numba
    """``out[j]`` = position of the ``want[j]``-th element equal to ``value`` (0 or 1) of the
    0/1 bytes ``mask`` (``words``: its first whole 8-byte words), ``want`` ascending. A word's
    count of ones is the sum of its bytes, so words holding no wanted element are skipped."""
    j = 0
    seen = 0
    ones = np.uint64(0x0101010101010101)
    for w in range(words.size):
        if j == want.size:
            return
        c = np.int64((words[w] * ones) >> np.uint64(56))
        if value == 0:
            c = 8 - c
        if seen + c <= want[j]:
            seen += c
            continue
        for i in range(8 * w, 8 * w + 8):
            if mask[i] == value:
                if j < want.size and seen == want[j]:
                    out[j] = i
                    j += 1
                seen += 1
    for i in range(8 * words.size, mask.size):
        if j == want.size:
            return
        if mask[i] == value:
            if seen == want[j]:
                out[j] = i
                j += 1
            seen += 1


def topk_mask(score: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest entries of ``score`` (flat); ties broken by position."""
    flat = score.reshape(-1)
    n = flat.size
    if k <= 0:
        return np.zeros(score.shape, dtype=bool)
    if k >= n:
        return np.ones(score.shape, dtype=bool)
    thr = np.partition(flat, n - k)[n - k]
    mask = flat > thr
    need = k - int(np.count_nonzero(mask))
    if need:
        mask[np.flatnonzero(flat == thr)[:need]] = True
    return mask.reshape(score.shape)


def _lognormal(rng: np.random.Generator, size: int, sigma: float = 0.6) -> np.ndarray:
    return rng.lognormal(0.0, sigma, size).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------
def weight_mask(layer: Layer, density: float, pattern: Pattern,
                rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of ``layer.weight_shape`` with the given density and pattern."""
    shape = layer.weight_shape
    rows, cols = layer.out_channels, layer.fan_in
    n = rows * cols
    if density >= 1.0:
        return np.ones(shape, dtype=bool)
    kind = pattern.kind
    if kind == "random":
        return exact_random(n, keep_count(density, n), rng).reshape(shape)
    if kind == "clustered":
        cin = layer.in_channels // layer.groups
        per = cols // cin
        score = np.abs(rng.standard_normal((rows, cin, per), dtype=np.float32))
        score *= _lognormal(rng, rows)[:, None, None]
        score *= _lognormal(rng, cin)[None, :, None]
        return topk_mask(score, keep_count(density, n)).reshape(shape)
    if kind == "nm":
        return _nm_rows(rows, cols, pattern.n, pattern.m, rng).reshape(shape)
    if kind == "fanin":
        return fanin_rows(rows, cols, keep_count(density, cols), rng).reshape(shape)
    if kind == "channel":
        cin, g = layer.in_channels, layer.groups
        keep = exact_random(cin, keep_count(density, cin), rng).reshape(g, cin // g)
        per_filter = np.repeat(keep, layer.out_channels // g, axis=0)  # (Cout, Cin/g)
        return _broadcast_slices(per_filter, shape)
    if kind == "filter":
        keep = exact_random(rows, keep_count(density, rows), rng)
        return np.broadcast_to(keep.reshape((rows,) + (1,) * (len(shape) - 1)), shape).copy()
    if kind == "kernel":
        slices = rows * (layer.in_channels // layer.groups)
        keep = exact_random(slices, keep_count(density, slices), rng)
        return _broadcast_slices(keep.reshape(rows, -1), shape)
    if kind == "block":
        br, bc = pattern.block
        nbr, nbc = -(-rows // br), -(-cols // bc)
        # blocks in random order until they hold ceil(d·n) weights: edge blocks may be partial
        hs = np.minimum(br, rows - br * np.arange(nbr))
        ws = np.minimum(bc, cols - bc * np.arange(nbc))
        order = rng.permutation(nbr * nbc)
        filled = np.cumsum((hs[:, None] * ws[None, :]).reshape(-1)[order])
        target = keep_count(density, n)
        take = int(np.searchsorted(filled, target)) + 1 if target else 0
        keep = np.zeros(nbr * nbc, dtype=bool)
        keep[order[:take]] = True
        keep = keep.reshape(nbr, nbc)
        full = np.repeat(np.repeat(keep, br, axis=0), bc, axis=1)[:rows, :cols]
        return np.ascontiguousarray(full).reshape(shape)
    raise ValueError(f"unknown pattern kind {kind!r}")


def _broadcast_slices(slices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Expand a (Cout, Cin/g) slice mask over the kernel taps of ``shape``."""
    extra = (1,) * (len(shape) - 2)
    return np.broadcast_to(slices.reshape(slices.shape + extra), shape).copy()


def _nm_rows(rows: int, cols: int, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    groups, tail = divmod(cols, m)
    out = np.zeros((rows, cols), dtype=bool)
    if groups:
        score = rng.random((rows, groups, m), dtype=np.float32)
        pick = np.argpartition(score, n - 1, axis=-1)[..., :n] if n < m else None
        full = np.zeros((rows, groups, m), dtype=bool)
        if pick is None:
            full[:] = True
        else:
            np.put_along_axis(full, pick, True, axis=-1)
        out[:, : groups * m] = full.reshape(rows, groups * m)
    if tail:
        out[:, groups * m:] = fanin_rows(rows, tail, min(n, tail), rng)
    return out


def fanin_rows(rows: int, cols: int, k: int, rng: np.random.Generator,
               chunk_elems: int = 1 << 22) -> np.ndarray:
    """A (rows, cols) mask with exactly ``k`` True per row, uniformly chosen per row."""
    out = np.zeros((rows, cols), dtype=bool)
    if k <= 0:
        return out
    if k >= cols:
        out[:] = True
        return out
    step = max(1, chunk_elems // cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        score = rng.random((r1 - r0, cols), dtype=np.float32)
        pick = np.argpartition(score, k - 1, axis=1)[:, :k]
        np.put_along_axis(out[r0:r1], pick, True, axis=1)
    return out


# ------------------------------------------------------------------------------------------------
# activations
# ------------------------------------------------------------------------------------------------
def activation_score(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A magnitude-like score for an activation tensor: |N(0,1)| × per-channel scale × a smooth
    spatial field (4×4 patches), so kept elements cluster by channel and region."""
    score = np.abs(rng.standard_normal(shape, dtype=np.float32))
    if len(shape) == 4:
        n, c, h, w = shape
        score *= _lognormal(rng, c).reshape(1, c, 1, 1)
        low = _lognormal(rng, n * c * (-(-h // 4)) * (-(-w // 4)), 0.8)
        low = low.reshape(n, c, -(-h // 4), -(-w // 4))
        field = np.repeat(np.repeat(low, 4, axis=2), 4, axis=3)[:, :, :h, :w]
        score *= field
    else:  # (N, tokens, features)
        score *= _lognormal(rng, shape[-1]).reshape((1,) * (len(shape) - 1) + (shape[-1],))
    return score


def activation_mask(shape: tuple[int, ...], density: float, clustered: bool,
                    rng: np.random.Generator, within: np.ndarray | None = None) -> np.ndarray:
    """An unstructured mask of ``shape`` keeping ceil(d·n) elements, all inside ``within`` when
    given (then at most ``within``'s count: top-K of a tensor that already has natural zeros)."""
    n = math.prod(shape)
    k = keep_count(density, n)
    if within is None:
        if k >= n:
            return np.ones(shape, dtype=bool)
        if clustered:
            return topk_mask(activation_score(shape, rng), k)
        return exact_random(n, k, rng).reshape(shape)
    avail = int(np.count_nonzero(within))
    k = min(k, avail)
    if k == avail:
        return within.copy()
    if clustered:
        score = activation_score(shape, rng)
        score[~within] = -1.0
        return topk_mask(score, k)
    idx = np.flatnonzero(within)
    out = np.zeros(n, dtype=bool)
    out[idx[exact_random(idx.size, k, rng)]] = True
    return out.reshape(shape)
