"""User-facing errors: the CLI prints these as one line and exits non-zero, never with a traceback."""


class MapforgeError(Exception):
    """Bad input or an impossible request, described for the user in one line."""


class InputError(MapforgeError):
    """A file or folder given by the user is missing, unreadable, corrupt or malformed."""


class ReconstructionError(MapforgeError):
    """A stage ran but could not produce a usable result (too few matches, no initial pair, ...)."""


def check_settings(what: str, checks: dict[str, bool]) -> None:
    """Raise one `InputError` naming every setting of `what` whose check in `checks` (name -> ok) failed."""
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise InputError(f"invalid {what} setting(s): {', '.join(bad)}")
