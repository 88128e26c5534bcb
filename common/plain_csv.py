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

from typing import Any

import numpy as np

MAX_DIGITS = 15  # below 2**53 as an integer: every such mantissa is an exact double
MAX_CELL = MAX_DIGITS + 2  # a sign and a decimal point
FIXED_TEXT = 32  # text cells up to this many bytes are compared as fixed-width byte strings

_SEP, _DOT, _MINUS, _OTHER = 10, 11, 12, 13
_CLASS = np.full(256, _OTHER, np.uint8)  # a byte's class: its digit, or one of the above
_CLASS[ord("0"):ord("9") + 1] = np.arange(10)
_CLASS[ord(",")] = _CLASS[ord("\n")] = _SEP
_CLASS[ord(".")] = _DOT
_CLASS[ord("-")] = _MINUS
_DIGIT = np.zeros(_OTHER + 1)  # by class: a digit's value, else 0
_DIGIT[:10] = np.arange(10)
_SCALE = np.ones(_OTHER + 1)  # by class: 10 for a digit (one more place), else 1
_SCALE[:10] = 10.0
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
    ends_row = raw == 10
    seps = np.flatnonzero(ends_row | (raw == 44))
    if len(seps) != rows * width or np.count_nonzero(ends_row) != rows:
        return None
    ends = seps.reshape(rows, width)
    if not ends_row[ends[:, -1]].all():  # a row of another width
        return None
    starts = np.empty_like(ends)
    starts[:, 1:] = ends[:, :-1] + 1
    starts[0, 0] = 0
    starts[1:, 0] = ends[:-1, -1] + 1
    numbers = _numbers(raw, starts[:, numeric].T, ends[:, numeric].T) if numeric else []
    if numbers is None:
        return None
    texts = []
    for column in text:
        cells = _texts(data, raw, starts[:, column], ends[:, column])
        if cells is None:
            return None
        texts.append(cells)
    return list(numbers), texts


def _numbers(raw: Any, starts: Any, ends: Any) -> Any:
    """The cells from ``starts`` to ``ends`` (arrays of the same shape) as float64, or None when
    one is not a plain decimal. Position by position over all cells at once, each step a few
    table lookups and arithmetic without masks (a masked NumPy operation costs ten of them)."""
    lengths = ends - starts
    if lengths.min() < 1 or lengths.max() > MAX_CELL:
        return None
    index = np.int32 if len(raw) < 2**31 else np.int64
    at, ends = starts.astype(index), ends.astype(index)
    first = _CLASS[raw[at]]
    negative = first == _MINUS
    worst = first * ~negative  # the highest class seen: a sign past the first byte, or any
    dots = (first == _DOT).astype(np.int8)  # other byte, makes it at least _MINUS
    dot_at = np.zeros(at.shape, np.int8)
    mantissa = _DIGIT[first]
    for j in range(1, int(lengths.max())):
        at += 1
        c = _CLASS[raw[np.minimum(at, ends)]]  # at or past its end a cell reads its separator
        mantissa *= _SCALE[c]
        mantissa += _DIGIT[c]
        dot = (c == _DOT).view(np.int8)
        dots += dot
        dot_at += dot * np.int8(j)
        np.maximum(worst, c, out=worst)
    digits = lengths - negative - dots
    if worst.max() >= _MINUS or dots.max() > 1 or digits.min() < 1 \
            or digits.max() > MAX_DIGITS:
        return None
    decimals = (lengths - 1 - dot_at) * dots  # digits after the point, 0 without one
    values = mantissa / _POW10[decimals]
    values[negative] *= -1.0
    return values


def _texts(data: bytes, raw: Any, starts: Any, ends: Any) -> Any:
    """The cells from ``starts`` to ``ends`` as an object array of str, or None when one is
    empty. Short cells are compared as fixed-width byte strings and each distinct one decoded
    once; longer ones are sliced one by one."""
    lengths = ends - starts
    if lengths.min() < 1:
        return None
    longest = int(lengths.max())
    if longest > FIXED_TEXT:
        return np.array([data[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist(),
                                                            strict=True)], dtype=object)
    offsets = np.arange(longest)
    inside = offsets < lengths[:, None]
    cells = np.where(inside, raw[np.minimum(starts[:, None] + offsets, ends[:, None])], 0)
    fixed = cells.astype(np.uint8).view(f"S{longest}").ravel()
    distinct, index = np.unique(fixed, return_inverse=True)
    return np.array([cell.decode() for cell in distinct.tolist()], dtype=object)[index]
