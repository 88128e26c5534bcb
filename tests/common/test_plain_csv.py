"""plain_columns reads exactly what float() and csv read, or declines."""

from __future__ import annotations

import csv
import io
import random
import struct

import numpy as np
import pytest

from common.plain_csv import MAX_DIGITS, plain_columns

EDGE = ["0", "-0", "0.0", "-0.0", ".5", "-.5", "5.", "-5.", "007", "0.1", "0.2", "0.3",
        "1.0000000000001", "999999999999999", "-999999999999999", "0.00000000000001",
        "123456789.012345", "3.14159265358979", "2.5", "0.125", "1.005", "4.35", "8.675",
        "340282346638528.", "9007199254740.99", "0.30000000000000"]


def read(body: bytes, width: int, numeric: list[int], text: list[int]) -> tuple | None:
    return plain_columns(body, width, numeric, text, body.count(b"\n") + (not body.endswith(b"\n")))


def bits(values: object) -> list[bytes]:
    return [struct.pack("<d", v) for v in np.asarray(values).tolist()]


def random_decimal(rng: random.Random) -> str:
    digits = rng.randint(1, MAX_DIGITS)
    text = "".join(rng.choice("0123456789") for _ in range(digits))
    point = rng.randint(-1, digits)
    if point >= 0:
        text = text[:point] + "." + text[point:]
    return ("-" if rng.random() < 0.4 else "") + text


def test_every_number_is_the_double_float_reads_bit_for_bit() -> None:
    rng = random.Random(14)
    cells = EDGE + [random_decimal(rng) for _ in range(20_000)]
    cells = [c for c in cells if c.strip("-.")]  # "." and "-." are not numbers
    rows = [cells[i:i + 4] for i in range(0, len(cells) - 3, 4)]
    body = "".join(",".join(r) + "\n" for r in rows).encode()
    got = read(body, 4, [0, 1, 2, 3], [])
    assert got is not None
    for column in range(4):
        assert bits(got[0][column]) == bits([float(r[column]) for r in rows])


def test_text_cells_are_what_csv_reads() -> None:
    rng = random.Random(3)
    words = ["basic", "plus", "ünïcode", "#hash", "a b", "x" * 40, "'single'", "tab\tin", "1.5",
             "-", "."]
    rows = [[rng.choice(words), f"{rng.randint(-99, 99)}.{rng.randint(0, 99)}",
             rng.choice(words + [w * 2 for w in words])] for _ in range(3000)]
    body = "".join(",".join(r) + "\n" for r in rows).encode()
    want = list(csv.reader(io.StringIO(body.decode(), newline="")))
    got = read(body, 3, [1], [0, 2])
    assert got is not None
    assert got[1][0].tolist() == [r[0] for r in want]
    assert got[1][1].tolist() == [r[2] for r in want]  # cells over 32 bytes sliced one by one
    assert bits(got[0][0]) == bits([float(r[1]) for r in want])


@pytest.mark.parametrize("last", ["z", "12345678", "123456789", "x" * 32, "x" * 33])
def test_the_last_cell_of_the_block_whatever_its_length(last: str) -> None:
    for first in ("a", "y" * 20, "y" * 40):  # the block's longest cell, before it
        for end in ("", "\n"):
            got = plain_columns(f"1,{first}\n2,{last}{end}".encode(), 2, [0], [1], 2)
            assert got is not None and got[1][0].tolist() == [first, last]


def test_text_cells_of_9_to_32_bytes_over_several_blocks() -> None:
    rng = random.Random(5)
    cells = ["".join(rng.choice("abcé,") for _ in range(rng.randint(9, 30))).replace(",", "")
             for _ in range(10_000)]
    cells = [c if len(c.encode()) <= 32 else c[:9] for c in cells]
    body = "".join(f"{c},{i}\n" for i, c in enumerate(cells)).encode()
    got = read(body, 2, [1], [0])
    assert got is not None and got[1][0].tolist() == cells
    assert got[0][0].tolist() == [float(i) for i in range(10_000)]


def test_what_csv_refuses_or_skips_is_declined() -> None:
    limit = csv.field_size_limit()
    assert read(b"1," + b"x" * (limit + 1) + b"\n", 2, [0], [1]) is None  # csv: field limit
    assert read(b"1," + b"x" * limit + b"\n", 2, [0], [1]) is not None
    assert read(b"1," + b"x" * (limit + 1) + b"\n", 2, [0], []) is None  # a column not read
    assert plain_columns(b"a\n\nb\n", 1, [], [], 3) is None  # an empty line: no row
    assert plain_columns(b"", 1, [], [0], 1) is None
    for bad in (b"\xff", b"a\xc3", b"\xed\xa0\x80" * 4, b"x" * 40 + b"\xff"):  # not UTF-8
        assert read(b"1," + bad + b"\n2,b\n", 2, [0], [1]) is None


def test_blocks_shorter_than_a_word() -> None:
    got = plain_columns(b"a\n", 1, [], [0], 1)
    assert got is not None and got[1][0].tolist() == ["a"]
    got = plain_columns(b"7,b", 2, [0], [1], 1)
    assert got is not None and got[0][0].tolist() == [7.0] and got[1][0].tolist() == ["b"]


def test_crlf_and_an_unended_last_row() -> None:
    for body in (b"1.5,a\r\n-2,b\r\n", b"1.5,a\n-2,b", b"1.5,a\r\n-2,b"):
        got = plain_columns(body, 2, [0], [1], 2)
        assert got is not None, body
        assert got[0][0].tolist() == [1.5, -2.0] and got[1][0].tolist() == ["a", "b"]


def test_a_column_neither_numeric_nor_text_is_skipped_whatever_it_holds() -> None:
    got = plain_columns(b"1,anything at all: 1e5 nan,x\n2,,y\n", 3, [0], [2], 2)
    assert got is not None and got[0][0].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("cell", [
    "1e5", "1E5", "+1", " 1", "1 ", "1_000", "nan", "inf", "-inf", "0x10", "1.2.3", "1-2", "--1",
    "-", ".", "-.", "", "1" * (MAX_DIGITS + 1), "0." + "0" * MAX_DIGITS, "١", "1\t",
])
def test_a_number_it_cannot_read_exactly_is_declined(cell: str) -> None:
    assert read(f"1,{cell},a\n2,3,b\n".encode(), 3, [0, 1], [2]) is None


@pytest.mark.parametrize("body,rows", [
    (b"1,a\n2\n", 2),  # a short row
    (b"1,a\n2,b,c\n", 2),  # a long row
    (b"1,a\n\n2,b\n", 2),  # an empty line (csv skips it; the plan counted it otherwise)
    (b"1,a\n2,b\n", 3),  # another count than the plan's
    (b"1,a\r2,b\n", 2),  # a lone carriage return ends a row for csv
    (b'1,"a"\n2,b\n', 2),  # a quote
    (b"1,a\x00\n2,b\n", 2),  # a NUL byte
    (b"1,\n2,b\n", 2),  # an empty text cell
    (b"", 0),
])
def test_a_block_that_is_not_plain_is_declined(body: bytes, rows: int) -> None:
    assert plain_columns(body, 2, [0], [1], rows) is None


def test_no_columns_asked_still_checks_the_shape() -> None:
    assert plain_columns(b"1,a\n2,b\n", 2, [], [], 2) == ([], [])
    assert plain_columns(b"1,a\n2\n", 2, [], [], 2) is None
