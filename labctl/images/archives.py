"""Per-host archives: a `docker save` of what each host runs, for images.delivery
`control`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from labctl.paths import CACHE

# Per-host archives (`docker save` of what a host runs), kept across `down` and `up`
# and shared by every lab on this machine: each is named by the references and image
# IDs it holds, so it never goes stale. Archives no lab asked for lately go, the least
# recently used first, once the others pass ARCHIVES_MAX_BYTES.
ARCHIVES = CACHE / "archives"
ARCHIVES_MAX_BYTES = 3 * 2**30
# An archive used this recently may be on its way to another lab's hosts: never pruned.
ARCHIVE_IN_USE_SECONDS = 30 * 60


def host_archive(images: dict[str, str]) -> Path:
    """`docker save` of the given images (ref -> ID) into one archive, shared layers once;
    cached by references and IDs (its time of use renewed)."""
    refs = sorted(images)
    digest = hashlib.sha256(json.dumps([refs, sorted(images.values())]).encode()).hexdigest()[:16]
    archive = ARCHIVES / f"{digest}.tar"
    if archive.exists():
        archive.touch()
    else:
        ARCHIVES.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(f".{os.getpid()}.partial")  # two labs may save it at once
        subprocess.run(["docker", "save", "-o", str(partial), *refs], check=True)
        partial.rename(archive)
    return archive


def prune_archives(keep: set[Path]) -> None:
    """Remove the least recently used archives beyond ARCHIVES_MAX_BYTES, except those
    in `keep` (this lab's) and those another lab may be delivering now."""
    stats = {}
    for archive in ARCHIVES.glob("*.tar"):
        if archive not in keep:
            try:
                stats[archive] = archive.stat()
            except FileNotFoundError:  # another lab's prune took it since the glob
                continue
    total = sum(st.st_size for st in stats.values())
    recent = time.time() - ARCHIVE_IN_USE_SECONDS
    for archive, st in sorted(stats.items(), key=lambda item: item[1].st_mtime):
        if total <= ARCHIVES_MAX_BYTES:
            break
        if st.st_mtime < recent:
            archive.unlink(missing_ok=True)
            total -= st.st_size
