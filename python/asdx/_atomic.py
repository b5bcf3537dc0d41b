"""Atomic file output: readers never see a half-written file (DEVELOPERS.md, "temp file then rename")."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

# Temp files are hidden (".<name>.") and end in this suffix, so resume logic can find
# and delete leftovers of an interrupted writer.
PARTIAL_SUFFIX = ".partial"


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Calls write(temp_path) for a temporary file in the destination folder, then `os.replace`s it onto `path`.

    The temp file lives in the same folder so the rename stays on one file
    system (atomic on POSIX and Windows). On any error, Ctrl-C included, the temp
    file is removed and an existing `path` is left untouched. The folder must exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist.")
    # mkstemp creates the file 0600; keep an existing file's mode, else use the usual 0644.
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp_name))
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Writes `text` atomically (see atomic_write), flushed to disk before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)
