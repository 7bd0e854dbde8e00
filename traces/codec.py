"""The mask codecs of trace step files (``docs/trace-format.md``, "Mask codecs").

* ``packbits`` (versions 1 and 2): the mask's bits, ``numpy.packbits`` order, deflated by the zip.
* ``gaps-zstd`` (version 2): the gaps between the elements of the mask's minority value, one
  byte each (255 escapes 255 more), entropy-coded by Zstandard. A random mask of density p costs
  about its entropy H(p) bits per element (Huffman on the gap bytes); coding and decoding are
  single passes. Near half density, where gap bytes code worse than the bits themselves (1.28
  against 1.0 bits per element at p = 0.5), a mask is stored as its packed bits in the frame.

A ``gaps-zstd`` array is a 1-D ``uint8`` array holding one Zstandard frame that states its
content size and carries a checksum. Its content starts with one byte, the form:

* 0 or 1, the coded value, the minority's (1: the gaps precede the set elements; 0: they
  precede the clear ones, for masks more than half set), then for each coded element in C
  order the count g of elements between it and the previous coded element (or the start), as
  ``g // 255`` bytes 255 followed by the byte ``g % 255``. Elements after the last coded one
  hold the other value;
* 2: the mask's packed bits (``numpy.packbits`` order), ``ceil(numel / 8)`` bytes, the padding
  bits of the last byte clear.

The encoder tries form 2 when the minority is more than ``RAW_FROM`` of the elements and keeps
the smaller frame (ties: the gaps).

``decode`` checks the frame's length, stated content size and window before it decodes, then
decodes a piece at a time into the mask's packed bits, every gap checked against the mask's end;
a bad stream raises ``CodecError`` with the reason, which the reader turns into a ``TraceError``
naming the file and the array.
"""

from __future__ import annotations

import numpy as np
import zstandard

from common.jit import njit

PACKBITS = "packbits"
GAPS_ZSTD = "gaps-zstd"
CODECS = (PACKBITS, GAPS_ZSTD)
#: Zstandard level of ``gaps-zstd``: level 1 already Huffman-codes the gap bytes; higher levels
#: spend time on matches that random gaps do not have (the r50 step: level 1 21.5 MB, 3 21.8 MB)
ZSTD_LEVEL = 1
_ESC = 255
_HEADER = 1  # the form byte before the gap bytes or the bits
_RAW = 2  # the form byte of a mask stored as its packed bits
#: the minority share above which ``encode`` also tries the packed bits (below it gap bytes
#: always code smaller: at 0.2 they take 0.76 bits per element, the bits 1.0)
RAW_FROM = 0.2
#: the largest window a frame may ask the decoder for (level 1 uses at most 512 KiB)
MAX_WINDOW = 8 << 20
_PIECE = 1 << 20  # content bytes decoded at a time
_MAGIC = (0xFD2FB528).to_bytes(4, "little")
#: Zstandard's worst-case frame overhead over its content (ZSTD_compressBound: 1/256 plus a block
#: header per 128 KiB, a frame header and the checksum), rounded up
_FRAME_SLACK = 1024


class CodecError(ValueError):
    """A coded mask that does not decode to a mask of its shape; the message says why."""


def max_content(numel: int, nnz: int | None = None) -> int:
    """The most content bytes the ``gaps-zstd`` frame of a mask of ``numel`` elements holds,
    ``nnz`` of them set (None: any count): the form byte, then a byte per coded element (at
    most half of them) and an escape per 255 elements skipped, or the packed bits."""
    coded = numel // 2 if nnz is None else min(nnz, numel - nnz)
    return _HEADER + max(coded + (numel - coded) // _ESC, (numel + 7) // 8)


def max_coded_bytes(numel: int, nnz: int | None = None) -> int:
    """The most bytes a ``gaps-zstd`` array of such a mask holds: Zstandard adds at most 1/256
    of its content and a few bytes."""
    content = max_content(numel, nnz)
    return content + (content >> 7) + _FRAME_SLACK


#: the set bits of each byte
_POP8 = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)
#: the index (0 = most significant) of the first set bit of each nonzero byte
_FIRST = np.array([0] + [8 - b.bit_length() for b in range(1, 256)], dtype=np.int64)


@njit(cache=True)
def _gaps(bits, numel, value, out):  # pragma: no cover - numba
    """Gap bytes of the elements equal to ``value`` (0 or 1) of a packed mask, into ``out``;
    returns how many were written."""
    flip = 0 if value == 1 else 0xFF
    nbytes = (numel + 7) // 8
    n = 0
    nxt = 0  # the position after the last coded element
    for i in range(nbytes):
        b = bits[i] ^ flip
        if i == nbytes - 1 and numel % 8:
            b &= (0xFF << (8 - numel % 8)) & 0xFF  # padding bits are never coded
        while b:
            j = _FIRST[b]
            b ^= 0x80 >> j
            pos = 8 * i + j
            g = pos - nxt
            while g >= _ESC:
                out[n] = _ESC
                n += 1
                g -= _ESC
            out[n] = g
            n += 1
            nxt = pos + 1
    return n


@njit(cache=True)
def _place(sym, numel, out, pos):  # pragma: no cover - numba
    """Set, in the packed array ``out``, the bits of the elements the gap bytes ``sym`` place,
    the first gap counted from element ``pos``. Returns (the element after the last one placed
    or skipped, the count placed), the count -1 when a gap runs past the mask's end."""
    count = 0
    for i in range(sym.size):
        s = sym[i]
        if s == _ESC:
            pos += _ESC
            if pos > numel:
                return pos, -1
            continue
        pos += s
        if pos >= numel:
            return pos, -1
        out[pos >> 3] |= 0x80 >> (pos & 7)
        pos += 1
        count += 1
    return pos, count


def encode(bits: np.ndarray, numel: int, nnz: int) -> np.ndarray:
    """The ``gaps-zstd`` array of a packed mask (``numpy.packbits`` order) of ``numel`` elements,
    ``nnz`` of them set."""
    value = 1 if 2 * nnz <= numel else 0
    coded = nnz if value else numel - nnz
    bits = np.ascontiguousarray(bits, dtype=np.uint8)
    out = np.empty(_HEADER + coded + (numel - coded) // _ESC + 1, dtype=np.uint8)
    out[0] = value
    n = _gaps(bits, numel, value, out[_HEADER:])
    zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                  write_content_size=True)
    frame = zc.compress(out[:_HEADER + n])
    if coded > RAW_FROM * numel:
        raw = bytearray(bits[:(numel + 7) // 8].tobytes())
        if numel % 8:
            raw[-1] &= (0xFF << (8 - numel % 8)) & 0xFF
        other = zc.compress(bytes([_RAW]) + bytes(raw))
        if len(other) < len(frame):
            frame = other
    return np.frombuffer(frame, dtype=np.uint8).copy()


def _frame_length(frame: bytes | memoryview) -> int:
    """The bytes of the Zstandard frame at the start of ``frame``, from its block headers (the
    frame format, RFC 8878 section 3.1.1); ``CodecError`` when it is not a frame or is cut."""
    if len(frame) < 6 or frame[:4] != _MAGIC:
        raise CodecError("not a Zstandard frame (no magic number)")
    try:
        pos = zstandard.frame_header_size(frame)
    except zstandard.ZstdError as err:
        raise CodecError(f"not a Zstandard frame ({' '.join(str(err).split())})") from None
    checksum = 4 if frame[4] & 0x04 else 0  # the frame header descriptor's checksum flag
    while True:
        if pos + 3 > len(frame):
            raise CodecError(f"the Zstandard frame is cut short at byte {len(frame):,}")
        header = int.from_bytes(frame[pos:pos + 3], "little")
        pos += 3 + (1 if (header >> 1) & 3 == 1 else header >> 3)  # an RLE block holds 1 byte
        if header & 1:  # the last block
            return pos + checksum


def decode(arr: np.ndarray, numel: int) -> tuple[np.ndarray, int]:
    """(packed bits, nnz) of the mask of ``numel`` elements that the ``gaps-zstd`` array ``arr``
    codes; ``CodecError`` when it codes none. The frame's stated content size is checked first
    (``max_content``) and its content is decoded in pieces of ``_PIECE`` bytes with a window of
    at most ``MAX_WINDOW`` bytes: beyond the array itself, decoding allocates the
    ``ceil(numel / 8)`` bytes of the bits and a few MiB."""
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise CodecError(f"expected a 1-D uint8 array, got {arr.dtype} {arr.shape}")
    frame = memoryview(np.ascontiguousarray(arr))  # the array's bytes, not a copy of them
    length = _frame_length(frame)
    if length < len(frame):
        raise CodecError(f"{len(frame) - length:,} bytes after the Zstandard frame")
    if length > len(frame):
        raise CodecError(f"the Zstandard frame is cut short: {len(frame):,} of {length:,} bytes")
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as err:
        raise CodecError(f"bad Zstandard frame header ({' '.join(str(err).split())})") from None
    if size < 0:
        raise CodecError("the Zstandard frame does not state its content size")
    most = max_content(numel)
    if not _HEADER <= size <= most:
        raise CodecError(f"the Zstandard frame holds {size:,} bytes; a mask of {numel:,} "
                         f"elements codes {_HEADER} to {most:,}")
    bits = np.zeros((numel + 7) // 8, dtype=np.uint8)
    pos = count = got = 0
    value = last = -1
    try:
        reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(frame)
        while piece := reader.read(_PIECE):
            got += len(piece)
            if got > size:
                raise CodecError(f"the Zstandard frame holds more than the {size:,} bytes its "
                                 "header states")
            sym = np.frombuffer(piece, dtype=np.uint8)
            if value < 0:
                value = int(sym[0])
                if value not in (0, 1, _RAW):
                    raise CodecError(f"the form byte is {value}; expected 0 or 1 (the coded "
                                     f"value of gap bytes) or {_RAW} (packed bits)")
                if value == _RAW and size != _HEADER + bits.size:
                    raise CodecError(f"packed bits of {size - _HEADER:,} bytes; a mask of "
                                     f"{numel:,} elements has {bits.size:,}")
                sym = sym[_HEADER:]
            if value == _RAW:
                bits[pos:pos + sym.size] = sym
                pos += sym.size
            elif sym.size:
                pos, placed = _place(sym, numel, bits, pos)
                if placed < 0:
                    raise CodecError(f"a gap runs past the mask's {numel:,} elements")
                count += placed
                last = int(sym[-1])
    except zstandard.ZstdError as err:
        raise CodecError(f"corrupt Zstandard frame ({' '.join(str(err).split())})") from None
    if got != size:
        raise CodecError(f"the Zstandard frame decoded to {got:,} bytes, its header says "
                         f"{size:,}")
    if value == _RAW:
        if numel % 8 and bits[-1] & (0xFF >> (numel % 8)):
            raise CodecError("packed bits with padding bits set past the mask's "
                             f"{numel:,} elements")
        return bits, sum(int(_POP8[bits[i:i + _PIECE]].sum(dtype=np.int64))
                         for i in range(0, bits.size, _PIECE))
    if last == _ESC:
        raise CodecError("the gap bytes end in an escape (255) with no element after it")
    if value == 0:
        bits ^= 0xFF
        if numel % 8:
            bits[-1] &= (0xFF << (8 - numel % 8)) & 0xFF
    nnz_out = count if value else numel - count
    if value != (1 if 2 * nnz_out <= numel else 0):  # the coded value is the minority's
        raise CodecError(f"coded value {value} for a mask with {nnz_out:,} of {numel:,} "
                         f"elements set; the coded value is 1 when at most half are set, else 0")
    return bits, nnz_out
