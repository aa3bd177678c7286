"""The names the admin listener answers to (``admin.hosts``): its guard against DNS rebinding.

A page on a public domain whose name an attacker re-points at the operator's admin address
(127.0.0.1, a LAN IP) is same-origin with itself, so the browser sends its requests there with
``Host: evil.example``. Every request to the admin listener whose ``Host`` is not one of its
names is refused before anything else reads it (``gateway/admin.py``'s ``known_host``).

Accepted without configuration: an IP address (IPv6 in brackets), ``localhost`` and names under
``.localhost``, and a name without a dot (a compose service, ``gateway:9090``), none of which a
rebinding page can have: a public domain's name has a dot. Then the names listed in
``admin.hosts``; ``"*"`` alone accepts any. The port is ignored, and so are case and a final
dot. Only ``Host`` is read, never ``X-Forwarded-Host`` (the admin listener reads none, its
same-origin test included); a request without ``Host`` (HTTP/1.0) is answered.
Owns the parsing of ``Host``, the test of a name and the check of ``admin.hosts`` entries.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence

from gateway.config_values import host_problem, is_host_name

ANY = "*"
"""The ``admin.hosts`` entry that accepts any ``Host`` (the behaviour before 2026-12-06)."""
_PORT = re.compile(r"(?::[0-9]*)?")


def host_name(header: str) -> str | None:
    """The name of a ``Host`` value, lower-cased, without its port and final dot
    (``[::1]`` kept in brackets); None for one that is no ``host[:port]``."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name = value.partition(":")[0]
        rest = value[len(name) :]
    if not _PORT.fullmatch(rest):
        return None
    return name[:-1] if name.endswith(".") else name


def _default(name: str) -> bool:
    """An address, ``localhost`` or under ``.localhost``, or a name without a dot (ASCII only:
    a browser sends a name beyond it in its ``xn--`` form)."""
    if not name.isascii():
        return False
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return True
    return name == "localhost" or name.endswith(".localhost") or ("." not in name and is_host_name(name))


@functools.lru_cache(maxsize=8)
def _listed(hosts: tuple[str, ...]) -> frozenset[str]:
    """``admin.hosts`` as the names are compared (once per value: it may change on reload)."""
    return frozenset(host.strip().lower().rstrip(".") for host in hosts)


def host_refusal(header: str | None, hosts: tuple[str, ...]) -> str | None:
    """Why a request with this ``Host`` (None: without one) is not for the admin listener; None
    when it is."""
    if not header or not header.strip():
        return None
    listed = _listed(hosts)
    if ANY in listed:
        return None
    name = host_name(header)
    if name is not None and (_default(name) or name in listed):
        return None
    shown = _shown(name or header.strip())
    return f'Host "{shown}" is not a name of this admin listener; add it to admin.hosts if it is yours'


def _shown(value: str) -> str:
    """``value`` as the refusal shows it: at most 100 characters, a byte beyond ASCII escaped
    (aiohttp reads a header's bytes that are not UTF-8 as surrogates, which no JSON can hold)."""
    text = value[:100].encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
    return text if text.isprintable() else repr(text)[1:-1]


def hosts_problems(hosts: Sequence[str]) -> list[str]:
    """``admin.hosts``: bare names (no scheme, no port), or ``"*"`` alone."""
    if ANY in hosts:
        return [] if len(hosts) == 1 else [f'admin.hosts: "{ANY}" accepts every Host; list it alone']
    problems = []
    for i, host in enumerate(hosts):
        bad = host_problem(host.strip().rstrip("."), example="admin.example.com")
        if bad:
            problems.append(f"admin.hosts[{i}]: {bad}")
    return problems
