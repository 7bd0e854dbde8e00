"""The gaps-zstd mask codec: exact round trips against a slow reference coder, and one clear
``CodecError`` for every kind of bad stream, checked before anything big is allocated."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import codec
from traces.codec import MAX_WINDOW, CodecError, decode, encode, max_coded_bytes


def reference_gaps(mask: np.ndarray) -> tuple[int, bytes]:
    """(coded value, gap bytes) as docs/trace-format.md words it, one element at a time."""
    flat = [bool(v) for v in mask.reshape(-1)]
    value = 1 if 2 * sum(flat) <= len(flat) else 0
    out = bytearray()
    gap = 0
    for v in flat:
        if v == bool(value):
            while gap >= 255:
                out.append(255)
                gap -= 255
            out.append(gap)
            gap = 0
        else:
            gap += 1
    return value, bytes(out)


def _frame(value: int, gaps: bytes, **kw) -> np.ndarray:
    frame = zstandard.ZstdCompressor(**kw).compress(bytes([value]) + gaps)
    return np.frombuffer(frame, dtype=np.uint8)


def _content(arr: np.ndarray) -> bytes:
    return zstandard.ZstdDecompressor().decompress(arr.tobytes())


@st.composite
def masks(draw):
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=1, max_size=3)))
    n = int(np.prod(shape))
    kind = draw(st.sampled_from(["zeros", "ones", "tiny", "random", "clustered", "dense"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "zeros":
        flat = np.zeros(n, bool)
    elif kind == "ones":
        flat = np.ones(n, bool)
    elif kind == "tiny":  # a few set elements far apart: long gaps, escapes
        flat = np.zeros(n, bool)
        flat[rng.choice(n, min(n, draw(st.integers(0, 3))), replace=False)] = True
    elif kind == "clustered":  # runs of set and clear elements
        flat = np.repeat(rng.random(n // 7 + 1) < rng.random(), 7)[:n]
    else:
        p = draw(st.floats(0.0, 1.0)) if kind == "random" else 0.95
        flat = rng.random(n) < p
    return flat.reshape(shape)


def _coded(content: bytes) -> np.ndarray:
    """A frame as ``encode`` makes it (level, checksum, content size)."""
    return np.frombuffer(zstandard.ZstdCompressor(
        level=codec.ZSTD_LEVEL, write_checksum=True, write_content_size=True).compress(content),
        dtype=np.uint8)


@settings(max_examples=200, deadline=None)
@given(mask=masks())
def test_round_trip_matches_reference(mask):
    bits = np.packbits(mask.reshape(-1))
    arr = encode(bits, mask.size, int(mask.sum()))
    value, gaps = reference_gaps(mask)
    as_gaps = bytes([value]) + gaps
    as_bits = b"\x02" + bits.tobytes()  # packbits clears the padding bits
    minority = min(int(mask.sum()), mask.size - int(mask.sum()))
    if minority > codec.RAW_FROM * mask.size and \
            _coded(as_bits).size < _coded(as_gaps).size:  # the bits code smaller
        assert _content(arr) == as_bits
    else:
        assert _content(arr) == as_gaps
    assert arr.size <= max_coded_bytes(mask.size, int(mask.sum()))
    got, nnz = decode(arr, mask.size)
    assert nnz == int(mask.sum())
    np.testing.assert_array_equal(got, bits)
    np.testing.assert_array_equal(np.unpackbits(got, count=mask.size).reshape(mask.shape), mask)


def test_long_gaps_use_escapes():
    mask = np.zeros(2000, bool)
    mask[[254, 255, 511, 1999]] = True
    # gaps 254, 0, 255 (= 255 + 0), 1487 (= 5 * 255 + 212)
    want = bytes([254, 0, 255, 0, 255, 255, 255, 255, 255, 212])
    assert reference_gaps(mask) == (1, want)
    arr = encode(np.packbits(mask), mask.size, 4)
    assert _content(arr) == b"\x01" + want
    got, nnz = decode(arr, mask.size)
    assert nnz == 4 and np.array_equal(np.unpackbits(got, count=2000).astype(bool), mask)


def test_random_mask_codes_near_its_entropy():
    rng = np.random.default_rng(1)
    n, p = 1 << 20, 0.1
    mask = rng.random(n) < p
    size = encode(np.packbits(mask), n, int(mask.sum())).size
    entropy_bytes = n * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    assert size < 1.03 * entropy_bytes  # Huffman on geometric gaps: within a few percent


def test_half_dense_mask_codes_as_its_bits():
    """Near half density gap bytes code worse than the bits (about 1.28 bits per element):
    such a mask is stored as its packed bits, no bigger than packbits plus the frame."""
    rng = np.random.default_rng(2)
    n = 100_003  # padding bits in the last byte
    mask = rng.random(n) < 0.5
    bits = np.packbits(mask)
    arr = encode(bits, n, int(mask.sum()))
    assert _content(arr)[:1] == b"\x02"
    assert arr.size < bits.size + 64 < _coded(bytes([1]) + reference_gaps(mask)[1]).size
    got, nnz = decode(arr, n)
    assert nnz == int(mask.sum()) and np.array_equal(got, bits)


BAD = {
    "value byte": (lambda: _frame(3, b"\x00"), 8, "form byte is 3"),
    "bits too short": (lambda: _frame(2, b"\x00"), 9, "packed bits of 1 bytes; a mask of 9 "
                       "elements has 2"),
    "bits too long": (lambda: _frame(2, b"\x00\x00"), 8, "packed bits of 2 bytes"),
    "bits past the end": (lambda: _frame(2, b"\x00\x01"), 15, "padding bits set"),
    "empty": (lambda: np.zeros(0, np.uint8), 8, "not a Zstandard frame"),
    "no content": (lambda: np.frombuffer(zstandard.ZstdCompressor().compress(b""), np.uint8), 8,
                   "holds 0 bytes"),
    "not zstd": (lambda: np.frombuffer(b"\x01garbage!", np.uint8), 8, "not a Zstandard frame"),
    "no content size": (lambda: _frame(1, b"\x00\x01", write_content_size=False), 8,
                        "does not state its content size"),
    "too many gap bytes": (lambda: _frame(1, b"\x00" * 9), 8, "holds 10 bytes"),
    "not the minority": (lambda: _frame(0, b"\x00" * 5), 10, "coded value 0 for a mask "
                         "with 5 of 10"),  # half set: 1 is coded
    "gap past the end": (lambda: _frame(1, b"\x00\x07"), 8, "runs past the mask's 8"),
    "escape past the end": (lambda: _frame(1, b"\xff"), 8, "runs past"),
    "ends in an escape": (lambda: _frame(1, b"\xff"), 300, "end in an escape"),
    "trailing data": (lambda: np.concatenate([_frame(1, b"\x00"), _frame(1, b"\x00")]), 8,
                      "bytes after the Zstandard frame"),
    "2-D": (lambda: _frame(1, b"\x00").reshape(1, -1), 8, "1-D uint8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_stream_raises_codec_error(case):
    make, numel, msg = BAD[case]
    with pytest.raises(CodecError, match=msg):
        decode(make(), numel)


@pytest.mark.parametrize("cut", [1, 5, 10, -4, -1])
def test_truncated_frame_raises_codec_error(cut):
    rng = np.random.default_rng(0)
    mask = rng.random(5000) < 0.2
    arr = encode(np.packbits(mask), mask.size, int(mask.sum()))
    with pytest.raises(CodecError):
        decode(arr[:cut], mask.size)


def test_flipped_bit_is_refused_or_harmless():
    """Zstandard's checksum covers the content: a flipped bit anywhere is refused, or it hit a
    header bit that changes nothing (the frame header's unused bit) and decodes the same mask."""
    rng = np.random.default_rng(0)
    mask = rng.random(5000) < 0.2
    bits = np.packbits(mask)
    arr = encode(bits, mask.size, int(mask.sum()))
    harmless = 0
    for i in range(arr.size):
        for bit in range(8):
            bad = arr.copy()
            bad[i] ^= 1 << bit
            try:
                got, nnz = decode(bad, mask.size)
            except CodecError:
                continue
            assert np.array_equal(got, bits) and nnz == int(mask.sum()), (i, bit)
            harmless += 1
    assert harmless <= 8


def test_huge_declared_content_is_refused_before_allocation():
    # a 20-byte frame header declaring 2**40 content bytes, single segment, 8-byte size field
    header = (0xFD2FB528).to_bytes(4, "little") + bytes([0xE0]) + (1 << 40).to_bytes(8, "little")
    arr = np.frombuffer(header + b"\x01\x00\x00", np.uint8)
    with pytest.raises(CodecError, match="1,099,511,627,776 bytes"):
        decode(arr, 1000)


@pytest.mark.parametrize("piece", [1, 2, 7, 256])
def test_decoding_in_pieces_of_any_size(monkeypatch, piece):
    """The content is decoded a piece at a time: a gap's escapes may straddle two pieces."""
    monkeypatch.setattr(codec, "_PIECE", piece)
    rng = np.random.default_rng(piece)
    for p in (0.0, 0.002, 0.3, 0.8, 1.0):
        mask = rng.random(3001) < p
        bits = np.packbits(mask)
        got, nnz = decode(encode(bits, mask.size, int(mask.sum())), mask.size)
        assert nnz == int(mask.sum()) and np.array_equal(got, bits)
    with pytest.raises(CodecError, match="end in an escape"):
        decode(_frame(1, b"\x01\xff"), 300)


def test_a_frame_asking_for_a_large_window_is_refused():
    """Decoding keeps a window of the frame's choosing: more than MAX_WINDOW is refused (the
    writer's level 1 asks for at most 512 KiB)."""
    k = 3 * MAX_WINDOW
    content = b"\x01" + b"\x01" * k  # 0101...: k of 2k elements set
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=24,
                                                            write_content_size=True)
    arr = np.frombuffer(zstandard.ZstdCompressor(compression_params=params).compress(content),
                        np.uint8)
    with pytest.raises(CodecError, match="corrupt Zstandard frame"):
        decode(arr, 2 * k)


def _laid_out(arr: np.ndarray, how: str) -> np.ndarray:
    """``arr`` as a reader may hand it over: a strided view, read-only, at an offset."""
    if how == "strided":
        big = np.zeros(2 * arr.size, np.uint8)
        big[::2] = arr
        return big[::2]
    if how == "read-only":
        out = arr.copy()
        out.flags.writeable = False
        return out
    return np.concatenate([np.uint8([7]), arr])[1:]


@settings(max_examples=100, deadline=None)
@given(mask=masks(), how=st.sampled_from(["strided", "read-only", "offset"]))
def test_decode_reads_the_array_in_any_layout(mask, how):
    bits = np.packbits(mask.reshape(-1))
    got, nnz = decode(_laid_out(encode(bits, mask.size, int(mask.sum())), how), mask.size)
    assert nnz == int(mask.sum())
    np.testing.assert_array_equal(got, bits)


def test_decode_of_a_strided_array_needs_its_bytes_in_order(monkeypatch):
    # a deliberately wrong variant, the array's buffer taken as it lies, fails on a strided view
    mask = np.arange(300) % 7 == 0
    arr = _laid_out(encode(np.packbits(mask), mask.size, int(mask.sum())), "strided")
    assert decode(arr, mask.size)[1] == int(mask.sum())
    monkeypatch.setattr(codec.np, "ascontiguousarray", lambda a: a)
    with pytest.raises((BufferError, ValueError, TypeError, CodecError)):
        decode(arr, mask.size)
