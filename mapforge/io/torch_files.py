"""Reading torch files (`.pt`, `.pth`) that users hand us, without running the code a pickle can carry.

Every `torch.load` in mapforge goes through `load_torch_file`: it unpickles with `weights_only=True`, so a file may
hold tensors, plain containers, numbers and strings (and the extra classes a caller allows by name), and any
failure, a refused object included, becomes a one-line `InputError`.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from mapforge.errors import InputError

_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def load_torch_file(path: str | Path, what: str, allowed: Sequence[type] = ()) -> object:
    """The object stored in the torch file `path`, on the CPU. `what` names the file for messages ("NeRF
    checkpoint"); `allowed` lists the classes beyond plain data the file may build (e.g. `argparse.Namespace`).

    Raises `InputError` when the file is missing, is not a torch file, or would build anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} not found")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty")
    try:
        with _allowing(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _REFUSED_GLOBAL.search(str(exc))
        if refused:
            raise InputError(f"{what} {path} refused: it holds more than tensors and plain data "
                             f"({refused.group(1).rstrip('.')}), and loading it could run code") from None
        detail = _UNPICKLER_DETAIL.search(str(exc))
        reason = detail.group(1) if detail else first_line(exc)
        raise InputError(f"cannot read the {what} {path}: not a torch file ({reason})") from None
    except Exception as exc:  # torch raises many types for damaged or foreign files; each is the file's fault
        raise InputError(f"cannot read the {what} {path}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, else its type's name (e.g. for a bare `EOFError`)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _allowing(allowed: Sequence[type]) -> contextlib.AbstractContextManager:
    if hasattr(torch.serialization, "safe_globals"):
        return torch.serialization.safe_globals(list(allowed))
    torch.serialization.add_safe_globals(list(allowed))  # torch 2.4 has only the process-wide allow-list
    return contextlib.nullcontext()
