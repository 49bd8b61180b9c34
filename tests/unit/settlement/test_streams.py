"""Bytes to lines, streamed: chunk boundaries anywhere, line ends kept, strict UTF-8."""

from __future__ import annotations

import io

import pytest

from billing.settlement.reconciliation.streams import file_chunks, text_lines

TEXT = 'a,b\r\n"multi\nline",é€\n\nlast without end'


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 1 << 20])
def test_lines_keep_their_ends_whatever_the_chunk_boundaries(size: int) -> None:
    lines = list(text_lines(chunked(TEXT.encode(), size)))

    assert lines == ["a,b\r\n", '"multi\n', 'line",é€\n', "\n", "last without end"]
    assert "".join(lines) == TEXT


def test_bytes_that_are_not_utf8_raise_from_the_iterator() -> None:
    lines = text_lines([b"ok\n", b"\xff\n"])

    assert next(lines) == "ok\n"
    with pytest.raises(UnicodeDecodeError):
        next(lines)


def test_a_truncated_multibyte_character_at_the_end_is_an_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        list(text_lines(["é".encode()[:1]]))


def test_file_chunks_reads_a_stream_in_pieces() -> None:
    assert list(file_chunks(io.BytesIO(b"abcdefg"), 3)) == [b"abc", b"def", b"g"]
