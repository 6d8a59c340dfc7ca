"""Who holds a store: writer locks are `pid@host` strings, in the store's root attribute (one
writer) or in lock files beside it (shard writers, and the shard that finishes the store)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(holder: str) -> bool:
    """Whether the process named by `pid@host` may still run: on another host it is assumed to."""
    pid, _, host = holder.strip().partition("@")
    if not pid.isdigit():
        return False
    return host != socket.gethostname() or pid_alive(int(pid))


def lock_files(path: Path) -> list[Path]:
    """The shard and finish lock files beside the store at `path`."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.lock")) if path.parent.is_dir() else []


def live_writers(path: Path, writer_attr: object) -> list[str]:
    """The `pid@host` of every live process writing the store: its writer attribute and lock files."""
    found = [str(writer_attr)] if writer_attr and holder_alive(str(writer_attr)) else []
    for lock in lock_files(path):
        try:
            holder = lock.read_text().strip()
        except OSError:
            continue
        if holder and holder_alive(holder) and holder not in found:
            found.append(holder)
    return found
