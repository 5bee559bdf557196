"""Write-then-rename, so that a crash never leaves a half-written file or folder that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mapforge.errors import InputError, MapforgeError


def check_output_folder(path: str | Path) -> None:
    """Raise `InputError` when `path`, or a parent that would have to be created, is an existing file.

    Creates nothing: a stage calls it before its long work, then `output_folder` when it writes.
    """
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.is_dir():
            return
        if folder.exists():
            what = "is an existing file" if folder == path else f"cannot be created: {folder} is a file"
            raise InputError(f"output folder {path} {what}")


def output_folder(path: str | Path) -> Path:
    """Create the folder `path` (and its parents) unless it exists, and return it.

    Raises `InputError` when `path` or one of its parents is an existing file, `MapforgeError` when the folder
    cannot be created or written to.
    """
    path = Path(path)
    check_output_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MapforgeError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise MapforgeError(f"output folder {path} is not writable")
    return path


def start_outputs(folder: str | Path, summary: str) -> Path:
    """Prepare `folder` for a stage that is about to (re)write its outputs and finishes with the file `summary`.

    The summary from an earlier run is removed first: a stage is complete when its summary exists, so a run
    stopped after some of the new outputs were written (a model, but no report yet) is recognisably unfinished
    rather than taken for complete with the old summary. Returns the folder.
    """
    folder = output_folder(folder)
    (folder / summary).unlink(missing_ok=True)
    return folder


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on failure removed.

    Works for files and folders alike: whatever the caller creates at the yielded path is moved into place.
    An existing folder at `path` is replaced only once the new one is complete.
    """
    path = Path(path)
    output_folder(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller decides whether it becomes a file or a folder
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        if path.is_dir() and tmp.is_dir():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if exc.errno == 28:
            raise MapforgeError(f"no space left on the device while writing {path}") from exc
        raise MapforgeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


def write_json(path: str | Path, data: object) -> Path:
    """Write `data` as indented UTF-8 JSON with a final newline, atomically. Returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return Path(path)
