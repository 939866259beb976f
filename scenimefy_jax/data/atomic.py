"""Atomic file writes for job outputs: a temporary file in the same folder, then `os.replace`, so a reader
(or a resumed run) never sees a half-written file, whatever interrupts the writer."""
from __future__ import annotations

import json
import os


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically (the temporary file is removed on failure)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str | os.PathLike, record) -> None:
    """Writes `record` as indented JSON to `path` atomically (the temporary file is removed on failure)."""
    write_bytes(path, json.dumps(record, indent=1).encode())
