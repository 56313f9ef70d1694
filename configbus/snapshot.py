"""The last-known-good file: the record a replica last applied, so it can serve after a
restart while Redis is down. It holds the stored body (secrets still encrypted), written
atomically: temp file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from configbus.errors import CorruptRecord
from configbus.store import VersionRecord

log = logging.getLogger("configbus.watcher")
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(VersionRecord)


def write_snapshot(path: Path, record: VersionRecord) -> None:
    write_atomic(path, _encoder.encode(record))


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_snapshot(path: Path) -> VersionRecord | None:
    """The stored record, None when there is no file; CorruptRecord when it is unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptRecord(f"{path}: cannot read snapshot: {exc.strerror}") from None
    try:
        record = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"{path}: unreadable snapshot: {exc}") from None
    record.verify()
    return record


async def load_snapshot(
    path: Path, decode: Callable[[bytes], Any], build: Callable[[Any, Any], Any] | None
) -> tuple[VersionRecord, Any] | None:
    """The last-known-good record and the value built from it; None (logged) when there
    is no file or it cannot be used."""
    try:
        record = await asyncio.to_thread(read_snapshot, path)
        if record is None:
            return None
        doc = decode(record.body)
        value: Any = build(doc, None) if build else doc
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        log.error("ignoring last-known-good file %s: %s", path, exc)
        return None
    return record, value
