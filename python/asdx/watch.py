"""`asdx score --watch`: score WAV files as they appear in a folder, by polling.

A recorder writes a file over some time; scoring it half-written would score a
short clip (libsndfile reads what is there) or fail. A file is taken once its
size has not changed between two polls and its RIFF header is final: the RIFF
size equals the file size minus 8 and the data chunk holds what it declares
(writers put 0 or a placeholder there until they close the file).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Callable

from asdx.data.audio import check_wav_complete


def wav_header_is_final(path: Path) -> bool:
    """True when a RIFF/WAVE file's sizes are filled in and match the bytes on disk."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return False
        (riff_size,) = struct.unpack("<I", header[4:8])
        if riff_size != size - 8:
            return False
        check_wav_complete(path)
        return True
    except (OSError, ValueError):
        return False


class FolderWatcher:
    """Finds the WAV files of a folder that are new and complete since the last poll."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder}: --watch needs an existing folder.")
        self.taken: set[Path] = set()
        self._sizes: dict[Path, int] = {}

    def poll(self) -> list[Path]:
        """Files whose size is unchanged since the previous poll and whose header is final, each once."""
        ready = []
        for path in sorted(p for p in self.folder.iterdir() if p.suffix.lower() == ".wav" and p not in self.taken):
            try:
                size = path.stat().st_size
            except OSError:  # removed meanwhile
                continue
            stable = self._sizes.get(path) == size
            self._sizes[path] = size
            if stable and wav_header_is_final(path):
                ready.append(path)
                self.taken.add(path)
                self._sizes.pop(path, None)
        return ready


def watch(folder: Path, handle: Callable[[list[Path]], None], interval: float = 1.0,
          should_stop: Callable[[], bool] = lambda: False) -> None:
    """Calls handle(new complete files) after every poll that finds some, until should_stop() or Ctrl-C."""
    watcher = FolderWatcher(folder)
    try:
        while not should_stop():
            ready = watcher.poll()
            if ready:
                handle(ready)
            time.sleep(interval)
    except KeyboardInterrupt:
        return


__all__ = ["FolderWatcher", "watch", "wav_header_is_final"]
