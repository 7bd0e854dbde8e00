"""SCALE-Sim topology CSVs: read them into ``Layer``s, write ``Layer``s back out.

SCALE-Sim (``scalesim`` 3.0.0, ``topology_utils.topologies``) reads two forms of topology file:

* **conv**: header ``Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels,
  Num Filter, Strides,`` then one row per layer, e.g. ``conv1,229,229,7,7,3,64,2,``;
* **GEMM**: header ``Layer, M, N, K,`` then rows ``name,M,N,K,`` for C[M×N] = A[M×K]·B[K×N].

Either form may carry a trailing ``Sparsity`` column holding ``N:M`` (e.g. ``2:4``).

How a row becomes a ``Layer`` (the mapping decisions):

* **Padding.** SCALE-Sim has none: its IFMAP size is already padded. A conv row therefore becomes a
  conv2d with ``padding=0`` whose ``input_hw`` is the (padded) IFMAP.
* **Output size.** SCALE-Sim computes ``ofmap = ceil((H - R + s) / s)`` (``topo_calc_hyperparams``)
  while ``Layer`` uses PyTorch's ``floor((H - R) / s) + 1``. They differ when ``(H - R) % s != 0``:
  SCALE-Sim then computes one more, partial, output row whose window hangs over the IFMAP edge (its
  ``operand_matrix`` marks those ifmap addresses -1, i.e. not fetched: implicit zero padding at the
  bottom/right). We keep SCALE-Sim's output size and MAC count by *extending* ``input_hw`` with
  ``(-(H - R)) % s`` rows (columns) of that implicit padding, so ``layer.out_hw`` equals SCALE-Sim's
  ofmap and ``layer.macs(1)`` its MAC count. The file's IFMAP size is then kept in
  ``layer.extra['scalesim_ifmap_hw']`` (absent when no extension was needed).
  ``write_topology`` goes the other way: it writes the *used* extent ``(Ho - 1)·s + k`` of the
  padded input (``H + 2p``), on which both formulas agree, so SCALE-Sim sees the same output size
  and MACs.
* **Depthwise.** SCALE-Sim treats every conv row whose name contains ``DP`` (case-sensitive) as
  depthwise: it splits the row into ``Channels`` layers, each with 1 channel and ``Num Filter``
  filters. We map such a row to one grouped conv with ``groups = in_channels = Channels`` and
  ``out_channels = Channels · Num Filter`` (channel multiplier ``Num Filter``, usually 1); its MACs
  equal the sum over SCALE-Sim's split layers. With ``Channels == 1`` it is a plain conv.
  ``per_channel(topology)`` gives SCALE-Sim's own split instead (layers ``<name>Channel_<i>``),
  which ``sparsesim simulate --memory ideal`` runs to reproduce its per-layer figures.
* **Duplicates.** SCALE-Sim allows repeated layer names; ``Layer`` names must be unique here, so the
  2nd, 3rd, ... occurrence of a name becomes ``name#2``, ``name#3`` (skipping any suffix that is
  already a name in the file); the name in the file is kept in ``layer.extra['scalesim_name']``.
* **GEMM.** A row ``name, M, N, K`` becomes ``Layer.linear(name, fin=K, fout=N, tokens=M,
  bias=False)``: its forward GEMM is M×K×N and ``macs(1) == M·N·K``. No layer has a bias (SCALE-Sim
  has none).
* **Sparsity.** ``nm_sparsity[i]`` is the ``N:M`` string of row i, normalised to ``"N:M"`` (``1:1``
  is kept as written), or None when the row has no (or an empty) Sparsity field. N and M are
  integers with 1 <= N <= M (SCALE-Sim's own reader would crash on anything else). The column
  says which weights are zero (SCALE-Sim's fixed pattern: the first N of every M along the
  window); whether the array exploits them is the architecture's business (a ``.cfg`` with
  ``[sparsity] SparsitySupport: true``, ``simulator.scalesim_compat.topology_nm_inputs``).

Leniency beyond SCALE-Sim (which drops the last field of every row, so it needs a trailing comma):
rows with or without the trailing comma, surrounding whitespace, blank lines, a UTF-8 BOM, CRLF
line ends, a last field starting with ``#`` (a comment, as in SCALE-Sim's own
``mobilnet_paper.csv``), and a missing header when the form is given (``kind``) or clear from the
field count (4-5 fields: GEMM, 8-9: conv). Anything else that is malformed raises
``TopologyError`` naming the file, the 1-based line and the column.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError, TopologyError
from common.fsutil import check_regular_file
from traces.format import LIMITS_NOTE, MAX_OPERAND_ELEMENTS
from traces.layers import Layer

FORMS = ("conv", "gemm")

CONV_COLUMNS = (
    "Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
    "Num Filter", "Strides",
)
GEMM_COLUMNS = ("Layer", "M", "N", "K")
SPARSITY_COLUMN = "Sparsity"

_INT = re.compile(r"[0-9]{1,18}")  # beyond 18 digits no size passes the limits; int() stays cheap
#: a topology has at most this many layer rows, in a file of at most MAX_TOPOLOGY_BYTES
#: (docs/limits.md: the largest real networks have a few hundred layers; every
#: layer row is simulated, so 10^5 rows would run for hours)
MAX_TOPOLOGY_ROWS = 10_000
MAX_TOPOLOGY_BYTES = 4 << 20
#: N and M of a Sparsity field: ASCII digits only ('²' is a digit to str.isdigit), at most 6
_NM = re.compile(r"\s*([0-9]{1,6})\s*:\s*([0-9]{1,6})\s*")


@dataclass(frozen=True)
class Topology:
    """A parsed topology file."""

    name: str  # file stem
    form: str  # 'conv' | 'gemm'
    layers: tuple[Layer, ...]
    nm_sparsity: tuple[str | None, ...]  # per layer 'N:M' from the Sparsity column, or None


# ---- reading ----------------------------------------------------------------------------------


def _fields(row: str) -> list[str]:
    """Split a stripped row into stripped fields, dropping one trailing empty or comment field."""
    fields = [f.strip() for f in row.split(",")]
    if len(fields) > 1 and (fields[-1] == "" or fields[-1].startswith("#")):
        fields.pop()
    return fields


def _header_form(fields: list[str]) -> str | None:
    """'conv' / 'gemm' if ``fields`` is a header of that form, else None."""
    if any("ifmap" in f.lower() for f in fields):
        return "conv"
    if len(fields) >= 4 and [f.upper() for f in fields[1:4]] == ["M", "N", "K"]:
        return "gemm"
    return None


def _columns(form: str) -> tuple[str, ...]:
    return (CONV_COLUMNS if form == "conv" else GEMM_COLUMNS) + (SPARSITY_COLUMN,)


def _where(lineno: int, col: int | None = None, form: str | None = None) -> str:
    if col is None:
        return f"line {lineno}"
    name = _columns(form)[col - 1] if form else None
    return f"line {lineno}, column {col}" + (f" ({name})" if name else "")


def parse_nm(text: str) -> tuple[int, int] | None:
    """``(N, M)`` from ``'N:M'`` with 1 <= N <= M, or None if ``text`` is not such a ratio."""
    m = _NM.fullmatch(text)
    if not m:
        return None
    n, mm = int(m.group(1)), int(m.group(2))
    if not 1 <= n <= mm:
        return None
    return n, mm


class _Reader:
    def __init__(self, path: str | os.PathLike, kind: str | None) -> None:
        self.path = Path(path)
        self.src = str(path)
        self.kind = kind

    def err(self, where: str | None, reason: str) -> TopologyError:
        return TopologyError(self.src, where, reason)

    def text(self) -> str:
        check_regular_file(self.path, "a SCALE-Sim topology CSV", TopologyError)
        try:
            nbytes = self.path.stat().st_size
        except OSError:
            nbytes = 0
        if nbytes > MAX_TOPOLOGY_BYTES:
            raise self.err(None, f"is {nbytes:,} bytes; a topology CSV holds at most "
                                 f"{MAX_TOPOLOGY_BYTES:,} (the limit)")
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise self.err(None, "file not found") from None
        except OSError as e:
            raise self.err(None, f"cannot read the file ({e.strerror or e})") from None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise self.err(
                _where(line), f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
            ) from None

    def read(self) -> Topology:
        if self.kind not in (None, *FORMS):
            raise self.err("kind", f"expected one of conv, gemm or None, got {self.kind!r}")
        text = self.text()
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        rows = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
        if not rows:
            raise self.err(None, "empty file: expected a header line and one row per layer")

        first_no, first = rows[0]
        fields = _fields(first)
        header = len(fields) < 2 or not _INT.fullmatch(fields[1])
        if header:
            form = _header_form(fields)
            if form is None:
                raise self.err(
                    _where(first_no),
                    "unrecognised header: expected a conv header with 'IFMAP' ("
                    + ", ".join(CONV_COLUMNS) + ", [Sparsity]) or a GEMM header "
                    "(Layer, M, N, K, [Sparsity])",
                )
            if self.kind is not None and form != self.kind:
                raise self.err(
                    _where(first_no), f"header is a {form} header but kind={self.kind!r} was asked"
                )
            ncols = len(_columns(form))
            if not ncols - 1 <= len(fields) <= ncols:
                raise self.err(
                    _where(first_no),
                    f"{form} header: expected {ncols - 1} or {ncols} fields ("
                    + ", ".join(_columns(form)) + f"), got {len(fields)}",
                )
            body = rows[1:]
        else:
            form = self.kind
            if form is None:
                n = len(fields)
                form = "gemm" if n in (4, 5) else "conv" if n in (8, 9) else None
                if form is None:
                    raise self.err(
                        _where(first_no),
                        f"no header and {n} fields: expected a header line, or rows of 4-5 "
                        "(GEMM) or 8-9 (conv) fields",
                    )
            body = rows
        if not body:
            last = rows[-1][0]
            raise self.err(_where(last + 1), "expected at least one layer row after the header")

        if len(body) > MAX_TOPOLOGY_ROWS:
            raise self.err(None, f"{len(body):,} layer rows; at most {MAX_TOPOLOGY_ROWS:,} are "
                                 "simulated (the limit: each row is a layer to simulate)")
        raw: list[tuple[int, str, Layer, str | None, dict]] = []
        for lineno, row in body:
            raw.append(self.row(lineno, _fields(row), form))
        layers, sparsity = self.unique(raw)
        return Topology(
            name=self.path.stem, form=form, layers=tuple(layers), nm_sparsity=tuple(sparsity)
        )

    def integer(self, lineno: int, fields: list[str], col: int, form: str) -> int:
        text = fields[col - 1]
        if not _INT.fullmatch(text) or int(text) < 1:
            raise self.err(
                _where(lineno, col, form), f"expected a positive integer, got {text!r}"
            )
        return int(text)

    def row(
        self, lineno: int, fields: list[str], form: str
    ) -> tuple[int, str, Layer, str | None, dict]:
        ncols = len(_columns(form))
        if not ncols - 1 <= len(fields) <= ncols:
            raise self.err(
                _where(lineno),
                f"expected {ncols - 1} fields (" + ", ".join(_columns(form)[:-1])
                + f") and an optional {SPARSITY_COLUMN}, got {len(fields)}",
            )
        name = fields[0]
        if not name:
            raise self.err(_where(lineno, 1, form), "expected a layer name, got an empty field")
        nm: str | None = None
        if len(fields) == ncols and fields[-1] != "":
            ratio = parse_nm(fields[-1])
            if ratio is None:
                raise self.err(
                    _where(lineno, ncols, form),
                    "expected N:M with integers 1 <= N <= M of at most 6 digits (e.g. 2:4, 1:4, "
                    f"3:8; N = M is dense), got {fields[-1][:40]!r}",
                )
            nm = f"{ratio[0]}:{ratio[1]}"
        ints = [self.integer(lineno, fields, c, form) for c in range(2, ncols)]
        extra: dict = {}
        try:
            if form == "gemm":
                m, n, k = ints
                layer = Layer.linear(name, fin=k, fout=n, tokens=m, bias=False)
            else:
                h, w, r, s, c, nf, stride = ints
                for col, (fk, fi) in ((4, (r, h)), (5, (s, w))):
                    if fk > fi:
                        dim = "height" if col == 4 else "width"
                        raise self.err(
                            _where(lineno, col, form),
                            f"filter {dim} {fk} is larger than the IFMAP {dim} {fi}",
                        )
                # SCALE-Sim: ofmap = ceil((H - R + s) / s); extend the input so floor agrees.
                he = h + (-(h - r)) % stride
                we = w + (-(w - s)) % stride
                if (he, we) != (h, w):
                    extra["scalesim_ifmap_hw"] = [h, w]
                depthwise = "DP" in name
                cout = c * nf if depthwise else nf
                groups = c if depthwise else 1
                layer = Layer.conv(name, c, cout, (r, s), (he, we), stride=stride, groups=groups)
        except TopologyError:
            raise
        except InputError as e:  # not expected after the checks above; keep file and line
            raise self.err(_where(lineno), e.reason) from None
        for role in ("filter", "ifmap", "grad_out"):  # before anything is allocated
            shape = layer.operand_shape(role, 1)
            if math.prod(shape) > MAX_OPERAND_ELEMENTS:
                raise self.err(_where(lineno), f"layer {name}: operand {role} {list(shape)} has "
                                               f"{math.prod(shape):,} elements; expected at most "
                                               f"2**{MAX_OPERAND_ELEMENTS.bit_length() - 1} "
                                               f"({LIMITS_NOTE})")
        return lineno, name, layer, nm, extra

    def unique(self, raw: list) -> tuple[list[Layer], list[str | None]]:
        return _unique(raw)


def _unique(raw: list) -> tuple[list[Layer], list[str | None]]:
    """Layers with unique names from ``(line, name, layer, nm, extra)`` rows: the 2nd, 3rd, ...
    occurrence of a name becomes ``name#2``, ``name#3`` (the name as written kept in
    ``extra['scalesim_name']``)."""
    taken = {name for _, name, _, _, _ in raw}
    seen: set[str] = set()
    layers: list[Layer] = []
    sparsity: list[str | None] = []
    for _, name, layer, nm, extra in raw:
        new = name
        if name in seen:
            k = 2
            while f"{name}#{k}" in taken:
                k += 1
            new = f"{name}#{k}"
            taken.add(new)
            extra["scalesim_name"] = name
        seen.add(name)
        if new != name or extra:
            layer = Layer(**{**_fields_of(layer), "name": new, "extra": extra}).checked()
        layers.append(layer)
        sparsity.append(nm)
    return layers, sparsity


def per_channel(topo: Topology) -> Topology:
    """The topology as SCALE-Sim runs it: every conv row with ``DP`` in its name (a depthwise
    row) split into ``Channels`` layers of one channel and ``Num Filter`` filters, named
    ``<name>Channel_<i>`` (its ``topology_utils.load_arrays_conv``), each with the row's Sparsity;
    other rows unchanged. Names stay unique (the ``#k`` rule of duplicates)."""
    if topo.form != "conv":
        return topo  # SCALE-Sim splits depthwise rows of the conv form only
    raw: list = []
    for layer, nm in zip(topo.layers, topo.nm_sparsity, strict=True):
        written = layer.extra.get("scalesim_name", layer.name)
        extra = {k: v for k, v in layer.extra.items() if k != "scalesim_name"}
        if layer.kind != "conv2d" or "DP" not in written:
            raw.append((0, written, layer, nm, extra))
            continue
        per = layer.out_channels // layer.groups
        for ch in range(layer.in_channels):
            name = f"{written}Channel_{ch}"
            one = Layer.conv(name, 1, per, layer.kernel, layer.input_hw, stride=layer.stride)
            raw.append((0, name, one, nm, dict(extra)))
    layers, sparsity = _unique(raw)
    return Topology(name=topo.name, form=topo.form, layers=tuple(layers),
                    nm_sparsity=tuple(sparsity))


def _fields_of(layer: Layer) -> dict:
    return {f: getattr(layer, f) for f in Layer.__dataclass_fields__}


def read_topology(path: str | os.PathLike, kind: str | None = None) -> Topology:
    """Read a SCALE-Sim topology CSV. ``kind`` is 'conv', 'gemm' or None (detect from the header,
    or from the field count if there is no header). Raises ``TopologyError`` on malformed input."""
    return _Reader(path, kind).read()


# ---- writing ----------------------------------------------------------------------------------


def _conv_row(layer: Layer) -> list[int]:
    """``[H, W, R, S, C, NumFilter, stride]`` for a layer SCALE-Sim's conv form can express."""
    where = f"layer {layer.name!r}"
    if layer.dilation != (1, 1):
        raise ValueError(f"{where}: SCALE-Sim has no dilation, got {list(layer.dilation)}")
    if layer.stride[0] != layer.stride[1]:
        raise ValueError(
            f"{where}: SCALE-Sim's conv form has one stride, got {list(layer.stride)}"
        )
    depthwise = "DP" in layer.name
    if layer.groups == 1 and depthwise and layer.in_channels > 1:
        raise ValueError(
            f"{where}: SCALE-Sim treats a name containing 'DP' as depthwise, but groups=1"
        )
    if layer.groups > 1:
        if layer.groups != layer.in_channels:
            raise ValueError(
                f"{where}: SCALE-Sim can express groups=1 or depthwise (groups=in_channels), got "
                f"groups={layer.groups} with in_channels={layer.in_channels}"
            )
        if not depthwise:
            raise ValueError(
                f"{where}: a depthwise conv must have 'DP' in its name for SCALE-Sim to treat it "
                "as one"
            )
    ho, wo = layer.out_hw
    s = layer.stride[0]
    kh, kw = layer.kernel
    # Pre-pad, then keep only the extent the windows use: SCALE-Sim's ceil formula and PyTorch's
    # floor formula agree on it.
    h = (ho - 1) * s + kh
    w = (wo - 1) * s + kw
    nf = layer.out_channels // layer.groups
    return [h, w, kh, kw, layer.in_channels, nf, s]


def _gemm_row(layer: Layer) -> list[int]:
    """``[M, N, K]`` of the layer's forward GEMM (batch 1)."""
    if layer.kind == "linear":
        return [layer.tokens, layer.out_channels, layer.in_channels]
    if layer.groups != 1:
        raise ValueError(
            f"layer {layer.name!r}: a grouped conv (groups={layer.groups}) is not one GEMM"
        )
    ho, wo = layer.out_hw
    return [ho * wo, layer.out_channels, layer.fan_in]


def write_topology(
    path: str | os.PathLike,
    layers: Sequence[Layer],
    form: str = "conv",
    nm_sparsity: Sequence[str | None] | None = None,
) -> None:
    """Write ``layers`` as a SCALE-Sim topology CSV (every line ends with a comma).

    ``form='conv'``: conv2d layers (and linear layers, as 1×1 convs over a tokens×1 IFMAP). Padding
    is folded into the IFMAP (pre-padded) and the IFMAP is trimmed to the extent the windows use, so
    SCALE-Sim's output size and MACs equal ``layer.out_hw`` and ``layer.macs(1)``; a depthwise
    layer (groups = in_channels > 1) is written as ``Channels = in_channels``, ``Num Filter =
    out_channels / in_channels`` and must have ``DP`` in its name (and no other layer may). Raises
    ValueError for what SCALE-Sim cannot express: dilation, unequal h/w strides, other groupings.
    ``form='gemm'``: each layer's forward GEMM ``M, N, K`` (batch 1); a grouped conv raises
    ValueError.
    Biases are dropped. ``nm_sparsity`` adds a Sparsity column (``None`` entries leave it empty).
    Everything is checked before the file is opened.
    """
    if form not in FORMS:
        raise ValueError(f"form: expected one of conv, gemm, got {form!r}")
    layers = list(layers)
    if nm_sparsity is not None:
        nm_sparsity = list(nm_sparsity)
        if len(nm_sparsity) != len(layers):
            raise ValueError(
                f"nm_sparsity has {len(nm_sparsity)} entries for {len(layers)} layers"
            )
        for nm in nm_sparsity:
            if nm is not None and parse_nm(nm) is None:
                raise ValueError(f"nm_sparsity: expected N:M with 1 <= N <= M, got {nm!r}")
    with_sparsity = nm_sparsity is not None and any(nm is not None for nm in nm_sparsity)
    columns = list(CONV_COLUMNS if form == "conv" else GEMM_COLUMNS)
    if with_sparsity:
        columns.append(SPARSITY_COLUMN)
    lines = [", ".join(columns) + ","]
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ValueError(f"layers[{i}]: expected a Layer, got {type(layer).__name__}")
        name = layer.name
        if not name or name != name.strip() or any(ch in name for ch in ",\r\n"):
            raise ValueError(
                f"layers[{i}]: name {name!r} cannot be written (empty, surrounding whitespace, a "
                "comma or a line break)"
            )
        values = _conv_row(layer) if form == "conv" else _gemm_row(layer)
        fields = [name, *map(str, values)]
        if with_sparsity and nm_sparsity[i] is not None:
            n, m = parse_nm(nm_sparsity[i])
            fields.append(f"{n}:{m}")
        lines.append(",".join(fields) + ",")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
