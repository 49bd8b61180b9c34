"""Bytes to text lines, streamed: a settlement file is read in chunks (S3's StreamingBody, a local file), never whole.

Lines keep their ends and quoted fields may span lines; the CSV readers downstream need both. Lines are cut at
"\\n" only (after "\\r\\n" or "\\n"), so a "\\r\\n" split across two chunks stays one line ending. Text is strict
UTF-8 (a leading byte-order mark is kept, the parsers drop it from the header); bytes that are not UTF-8 raise
UnicodeDecodeError from the iterator, where the parsers report it with the line it stopped at.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Final

# 1 MiB reads: few calls per file, little memory per open file.
CHUNK_BYTES: Final = 1 << 20


def text_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The UTF-8 text of `chunks`, one line (with its ending) at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    pending = ""
    for chunk in chunks:
        text = pending + decoder.decode(chunk)
        end = text.rfind("\n")
        if end < 0:
            pending = text
            continue
        pending = text[end + 1 :]
        start = 0
        while True:
            stop = text.find("\n", start, end + 1)
            if stop < 0:
                break
            yield text[start : stop + 1]
            start = stop + 1
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def file_chunks(stream: BinaryIO, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A binary stream's bytes in chunks of `size`."""
    while chunk := stream.read(size):
        yield chunk
