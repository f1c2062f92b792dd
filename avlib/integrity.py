"""Stored parts are checked against the digests written with them, so a damaged file is never used.

Every folder of model parts the stages write (the foundation models, trained
projectors and adapters, feature shards) records the sha256 of each file when
it writes it; loading verifies them first. A flipped bit, a truncated copy or a
hand-edited file is an error naming the file and how to get a good one back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class DamagedFile(RuntimeError):
    """A stored file does not match the digest written with it."""


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(path: str | Path) -> str:
    """sha256 of a file, or of every file in a folder (names and bytes, in order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def file_digests(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` but those named in `skip`."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in skip}


def verify(folder: str | Path, recorded: dict[str, str], fix: str) -> None:
    """Raise DamagedFile for the first file under `folder` whose sha256 is not the recorded one (or that is gone)."""
    folder = Path(folder)
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            raise DamagedFile(f"{path}: missing, though it was written with this folder; {fix}")
        if file_sha256(path) != expected:
            raise DamagedFile(f"{path}: damaged (its sha256 is not the one recorded when it was written); {fix}")


def verify_digest(path: str | Path, expected: str, fix: str) -> None:
    """Raise DamagedFile if `digest(path)` is not `expected`."""
    if digest(path) != expected:
        raise DamagedFile(f"{path}: damaged (its sha256 is not the one recorded when it was written); {fix}")
