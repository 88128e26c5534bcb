"""The columns of a block of plain CSV rows, read with whole-array NumPy operations.

A batch job's chunk is tens of thousands of rows; ``np.loadtxt`` reads them in C but spends most
of a row's time tokenizing and in the general float parser. Most files a model scores are
simpler than what either handles: unquoted cells, numbers written as plain decimals. For those,
:func:`plain_columns` finds every separator at once, reads each numeric cell's digits position by
position over all cells together, and takes each text column's distinct values once.

It reads only what it can read exactly and answers None for anything else (the caller then uses
``np.loadtxt`` or ``csv``). A numeric cell it takes is ``-?D+``, ``-?D+.D*`` or ``-?D*.D+`` with at
most 15 digits (``D`` a decimal digit): its digits are an integer below 2**53 and its decimals at
most 15, so the integer divided by the power of ten is one correctly rounded IEEE division of two
exact doubles, the double nearest the decimal: what ``float()`` returns for the same text.
Anything else (an exponent, a sign '+', spaces, underscores, 'nan', more digits) is left to
``float()``'s path. A text cell is the cell's text as ``csv`` reads it when the block has no
quote character.

Pure NumPy: this runs on the ONNX layer's score worker, which has no CSV library beyond it.
"""

from __future__ import annotations

import csv
from typing import Any

import numpy as np

MAX_DIGITS = 15  # below 2**53 as an integer: every such mantissa is an exact double
MAX_CELL = MAX_DIGITS + 2  # a sign and a decimal point
BLOCK_CELLS = 65_536  # numeric cells read at once
FIXED_TEXT = 32  # text cells up to this many bytes are compared as fixed-width byte strings

_ZERO, _DOT, _MINUS, _COMMA, _LF = (np.uint8(ord(c)) for c in "0.-,\n")
_SCALE = np.array([1.0, 10.0])  # by whether a byte is a digit: one more decimal place
_LOW_BYTES = np.array([(1 << 8 * n) - 1 for n in range(9)], np.uint64)  # by a cell's length
_POW10 = 10.0 ** np.arange(MAX_DIGITS + 2)  # each exact


def plain_columns(data: bytes, width: int, numeric: list[int], text: list[int],
                  rows: int) -> tuple[list[Any], list[Any]] | None:
    """The ``numeric`` columns (float64, each what ``float()`` reads from its cells) and the
    ``text`` columns (object arrays of str) of ``data``: exactly ``rows`` rows of ``width``
    comma-separated cells, each row ended by LF or CRLF (the last one may be unended), UTF-8
    text. None when a row is not that or a cell is not plain (see the module's docstring),
    and when a text cell is empty."""
    if not rows or b'"' in data or b"\x00" in data:
        return None
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
        if b"\r" in data:  # a lone carriage return: csv ends a row there
            return None
    if not data.endswith(b"\n"):
        data += b"\n"
    raw = np.frombuffer(data, np.uint8)
    ends_row = raw == _LF
    seps = np.flatnonzero(ends_row | (raw == _COMMA))
    if len(seps) != rows * width or np.count_nonzero(ends_row) != rows:
        return None
    ends = seps.reshape(rows, width)
    if not ends_row[ends[:, -1]].all():  # a row of another width
        return None
    starts = np.empty_like(ends)
    starts[:, 1:] = ends[:, :-1] + 1
    starts[0, 0] = 0
    starts[1:, 0] = ends[:-1, -1] + 1
    lengths = ends - starts
    if lengths.max() > csv.field_size_limit():  # csv refuses the file
        return None
    if width == 1 and lengths.min() < 1:  # an empty line, which is no row for csv
        return None
    blocks = []  # of rows, read a block at a time: its arrays stay in the CPU's caches
    step = max(1, BLOCK_CELLS // max(1, len(numeric)))
    for first in range(0, rows, step) if numeric else ():
        block = _numbers(raw, starts[first:first + step, numeric].T,
                         ends[first:first + step, numeric].T)
        if block is None:
            return None
        blocks.append(block)
    texts = []
    for column in text:
        cells = _texts(data, raw, starts[:, column], ends[:, column])
        if cells is None:
            return None
        texts.append(cells)
    return (list(np.concatenate(blocks, axis=1)) if blocks else []), texts


def _numbers(raw: Any, starts: Any, ends: Any) -> Any:
    """The cells from ``starts`` to ``ends`` (arrays of the same shape) as float64, or None when
    one is not a plain decimal. Position by position over all the cells at once, each step a
    few comparisons and arithmetic without masks (a masked NumPy operation costs ten of them)."""
    lengths = ends - starts
    if lengths.min() < 1 or lengths.max() > MAX_CELL:
        return None
    index = np.int32 if len(raw) < 2**31 else np.int64
    at, ends = starts.astype(index), ends.astype(index)
    byte = raw[at]
    negative = byte == _MINUS
    digit = (value := byte - _ZERO) < 10
    dot = byte == _DOT
    bad = ~(digit | negative | dot)  # a sign may only come first
    dots = dot.view(np.int8).copy()
    dot_at = np.zeros(at.shape, np.int8)
    mantissa = (value * digit).astype(np.float64)
    for j in range(1, int(lengths.max())):
        at += 1
        byte = raw[np.minimum(at, ends)]  # at or past its end a cell reads its separator
        digit = (value := byte - _ZERO) < 10
        mantissa *= _SCALE[digit.view(np.uint8)]  # one more place for a digit
        mantissa += value * digit
        dot = (byte == _DOT).view(np.int8)
        dots += dot
        dot_at += dot * np.int8(j)
        bad |= ~(digit | dot.view(bool) | (byte == _COMMA) | (byte == _LF))
    digits = lengths - negative - dots
    if bad.any() or dots.max() > 1 or digits.min() < 1 or digits.max() > MAX_DIGITS:
        return None
    values = mantissa / _POW10[(lengths - 1 - dot_at) * dots]  # by 10 ** digits after a point
    values *= 1.0 - 2.0 * negative
    return values


def _texts(data: bytes, raw: Any, starts: Any, ends: Any) -> Any:
    """The cells from ``starts`` to ``ends`` of ``data`` (``raw``: its bytes as an array) as an
    object array of str, or None when one is empty. Cells of up to 8 bytes are compared as
    64-bit integers, up to FIXED_TEXT bytes as fixed-width byte strings, each distinct one
    decoded once; longer ones are sliced one by one."""
    lengths = ends - starts
    if lengths.min() < 1:
        return None
    longest = int(lengths.max())
    if longest > FIXED_TEXT:
        try:
            return np.array([data[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist(),
                                                                strict=True)], dtype=object)
        except UnicodeDecodeError:
            return None
    if longest <= 8:  # the 8 bytes from each start (read unaligned), the cell's bytes kept
        words = max(0, len(data) - 7)  # where a word can start
        cells = np.zeros(len(starts), np.uint64)
        if words:
            view = np.ndarray((words,), "<u8", data, strides=(1,))
            cells = view[np.minimum(starts, words - 1)] & _LOW_BYTES[lengths]
        for i in np.flatnonzero(starts >= words).tolist():  # the block's last bytes
            cells[i] = int.from_bytes(data[starts[i]:ends[i]], "little")
        distinct, index = np.unique(cells, return_inverse=True)
        texts = [int(w).to_bytes(8, "little").rstrip(b"\0") for w in distinct.tolist()]
    else:  # a block of rows at a time: its index arrays stay small
        fixed = np.empty(len(starts), f"S{longest}")
        offsets = np.arange(longest)
        step = max(1, BLOCK_CELLS // longest)
        for first in range(0, len(starts), step):
            at, size = starts[first:first + step, None], lengths[first:first + step, None]
            cells = raw[np.minimum(at + offsets, len(raw) - 1)] * (offsets < size)
            fixed[first:first + step] = cells.view(f"S{longest}").ravel()
        distinct, index = np.unique(fixed, return_inverse=True)
        texts = distinct.tolist()  # a fixed-width byte string drops the NULs that pad it
    try:
        decoded = [t.decode() for t in texts]
    except UnicodeDecodeError:  # not UTF-8: csv's path says where
        return None
    return np.array(decoded, dtype=object)[index]
