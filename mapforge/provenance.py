"""What produced the outputs in a run folder: fingerprints of the input files and the record of each stage's inputs.

A stage folder's record (in `stages.json` beside the stage folders) holds the options and input fingerprints the
folder's contents come from. `mapforge run` compares it with what the stage would be computed from now and clears
a folder whose record differs, so that no output of other images or other options is ever taken for current.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from mapforge.io.atomic import write_json
from mapforge.io.images import IMAGE_EXTENSIONS

RECORDS_NAME = "stages.json"
# Kept when a stage folder is cleared: what lies there is keyed by its own inputs (SfM's per-image features).
CACHE_NAME = "cache"


def file_stamp(path: str | Path) -> str:
    """`path` with its size and modification time, so that an edited file reads as a different input."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return f"{path} (missing)"
    return f"{path} ({stat.st_size} bytes, modified {stat.st_mtime_ns})"


def images_fingerprint(folder: str | Path) -> str:
    """A digest of the names, sizes and modification times of the images in `folder` and in its `images/`."""
    folder = Path(folder)
    entries = []
    for candidate in (folder, folder / "images"):
        if candidate.is_dir():
            for path in sorted(candidate.iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    stat = path.stat()
                    entries.append([str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns])
    digest = hashlib.sha1(json.dumps(entries).encode()).hexdigest()[:16]
    return f"{len(entries)} images, digest {digest}"


def read_records(out: Path) -> dict[str, dict]:
    """The recorded inputs of every stage folder of the run folder `out` ({} when there is no valid record)."""
    try:
        records = json.loads((out / RECORDS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def write_records(out: Path, records: dict[str, dict]) -> None:
    write_json(out / RECORDS_NAME, records)


def changed_inputs(old: dict | None, new: dict) -> list[str]:
    """The names of the inputs that differ between a record and the current inputs (every name without a record)."""
    if not isinstance(old, dict):
        return sorted(new)
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


def clear_outputs(folder: Path) -> None:
    """Remove everything in a stage folder except its `cache/`."""
    for child in folder.iterdir():
        if child.name == CACHE_NAME and child.is_dir():
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
