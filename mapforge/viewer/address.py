"""Where the viewer may listen: a host and port checked before the server starts.

viser retries the next port on any `OSError` and never reports a failed start, so a host that is not an address
of this machine, or a port out of range, would leave it waiting forever; they are refused here at once.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from mapforge.errors import InputError

# Hosts that mean every interface of this machine.
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def local_addresses(host: str, port: int) -> list[str]:
    """The IP addresses of this machine that `host` names (one or more; a wildcard host gives itself).

    Raises `InputError` for a port outside 0-65535, a malformed IP address, a name that does not resolve, or an
    address that belongs to another machine.
    """
    if not 0 <= port <= 65535:
        raise InputError(f"port {port} is outside 0-65535")
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise InputError(f"host {host!r} is not an IP address ({exc})") from None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"host {host!r} does not resolve to an address ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for family, address in {(info[0], str(info[4][0])) for info in infos}:
        _check_bindable(family, address, host)
    return addresses


def _check_bindable(family: int, address: str, host: str) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))  # port 0: a busy port is not the question here, viser takes the next one
        except OSError as exc:
            named = host if host == address else f"{host} ({address})"
            raise InputError(f"cannot listen on {named}: {exc.strerror or exc}") from None


def is_loopback(addresses: list[str]) -> bool:
    """Whether every one of `addresses` is reachable from this machine only."""
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def browser_url(host: str, port: int) -> str:
    """The address to open in a browser on this machine for a server bound to `host:port`."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
