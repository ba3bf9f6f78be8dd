"""Making file-system changes durable: a created, renamed or deleted file only survives a crash once its
directory entry is fsynced too."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
