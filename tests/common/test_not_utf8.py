"""The row a CSV's first byte that is not UTF-8 is on, as csv reads rows (quoted line breaks,
empty lines, a BOM), for add_data, /forward_batch and batch chunks."""

from __future__ import annotations

import pytest

from common.payloads import not_utf8_row


@pytest.mark.parametrize(("data", "first", "header", "where"), [
    (b"a,b\n1,2\n3,\xff\n", 0, True, "(row 1)"),
    (b"a,\xffb\n1,2\n", 0, True, "(its header)"),
    (b'\xef\xbb\xbfa,b\n\n1,2\n\n"x\ny",2\n5,\xe9\n', 0, True, "(row 2)"),  # BOM, empty lines
    (b'a,b\n"1\xff,2\n', 0, True, "(row 0)"),  # in a quoted cell that runs to the end
    (b"1,2\n3,\xed\xa0\x80\n", 3000, False, "(row 3001)"),  # an encoded surrogate: not UTF-8
    (b"1,\xc3\n", 7, False, "(row 7)"),  # cut in the middle of a character
    # malformed before the byte (a cell over csv's field limit): the line, or for a chunk of a
    # file, whose lines are not the file's, the row it starts at
    (b"a,b\n1," + b"x" * 200_000 + b"\n2,\xff\n", 0, True, "(line 3)"),
    (b"1," + b"x" * 200_000 + b"\n2,\xff\n", 50_000, False, "(row 50000 or after it)"),
])
def test_the_row_is_named(data: bytes, first: int, header: bool, where: str) -> None:
    assert not_utf8_row(data, first, header) == f"the CSV is not UTF-8 text {where}: save the file as UTF-8"
