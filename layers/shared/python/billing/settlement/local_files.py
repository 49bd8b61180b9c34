"""Settlement files and report outputs on the local disk, for `python -m billing.settlement run`.

The CLI reconciles files named on its command line exactly as the function reconciles S3 objects: the same
SettlementFile streams (a MiB at a time), the same engine. A file is reported under its base name, so the same file
gives the same report id wherever it lies. Outputs, when asked for, are written under a directory with the keys the
reports bucket would use.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from billing.settlement.reconciliation.reading import Opener, SettlementFile
from billing.settlement.reconciliation.streams import file_chunks


def local_settlement_files(paths: Sequence[Path]) -> list[SettlementFile]:
    """The files to read, named by base name; ValueError for a missing file or two files of one name."""
    files: list[SettlementFile] = []
    names: set[str] = set()
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        if path.name in names:
            raise ValueError(f"two files are called {path.name}: a report names its files by base name")
        names.add(path.name)
        files.append(SettlementFile(source=path.name, open=_opener(path)))
    return files


def _opener(path: Path) -> Opener:
    def open_file() -> Iterator[bytes]:
        with path.open("rb") as stream:
            yield from file_chunks(stream)

    return open_file


class DirectoryStore:
    """The writing half of ObjectStore over a directory: keys become relative paths, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{key!r} leaves {self.root}")
        return path

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.put_stream(key, [body], content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "wb") as stream:
                for chunk in chunks:
                    stream.write(chunk)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
