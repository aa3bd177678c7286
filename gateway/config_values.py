"""Checks of single configured values the start-up checks share: regular expressions, host
names, cookie names, file paths, names compared with requests, PostgreSQL URLs, and why an
``"env:NAME"`` gave nothing.

Each returns why a value cannot be used (the text after ``key: `` in a problem line), or
None. Pure functions, no I/O but ``special_file``'s one ``stat``: ``gateway.config``,
``gateway.config_checks`` and the rules' checks (``gateway.rulechecks``, ``gateway.rulecapture``,
``gateway.rulekeys``) call them and name the key.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import stat
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec
from yarl import URL

COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An RFC 6265 cookie-name: an RFC 7230 token (no spaces, ``;``, ``=``, quotes or commas)."""
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "an array",
}
"""msgspec's type names, as a person writing TOML or JSON knows them (an ``object`` is a TOML
table but a JSON object: each reader adds its own)."""


def toml_key(key: str) -> str:
    """A table key as written in TOML: bare when it can be, else quoted (``"kagi.com"``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else msgspec.json.encode(key).decode()


def unknown_name(kind: str, name: str, allowed: list[str] | tuple[str, ...], elsewhere: str = "") -> str:
    """``unknown key, did you mean listen? (allowed: …)``: the allowed name closest to a
    misspelt one (``listn``, ``Listen``, ``review_treshold``), when one is close; and
    ``elsewhere``, what else the name is (``upstream is a key of [proxy]``), when it is one."""
    close = difflib.get_close_matches(name.lower(), allowed, n=1, cutoff=0.7)
    said = f"unknown {kind}" + (f", did you mean {close[0]}?" if close else "")
    said += (" " if close else "; ") + elsewhere if elsewhere else ""
    return said + (f" (allowed: {', '.join(allowed)})" if allowed else "")


_VARIABLE = r"([A-Z_][A-Z0-9_]*)"
_ENV_ELSEWHERE = re.compile(rf"(?i:env):(\w+)|\${_VARIABLE}|\$\{{{_VARIABLE}\}}|%{_VARIABLE}%")
"""A variable named as a shell, a compose file or Windows would (in capitals, as variables are:
a secret pasted in that starts with ``$`` is not shown back), or ``env:`` in capitals."""


def in_the_file(value: str, what: str = "secrets are") -> str:
    """Why a secret written as ``value`` (not ``env:NAME``) is refused, naming the fix: a
    variable the operator meant (``$GATEWAY_SECRET``, ``ENV:…``) is not read from the
    environment, as nothing in a TOML file is."""
    if found := _ENV_ELSEWHERE.fullmatch(value):
        name = next(group for group in found.groups() if group)
        return f'{_shown(value)} is not read from the environment; write "env:{name}"'
    return f'{what} never written in the file; use "env:NAME"'


def regex_problem(pattern: str, flags: int = 0) -> str | None:
    """Why a configured regular expression cannot be used, or None: compiled here with the
    flags it runs with, so start-up refuses what would otherwise fail at the first request."""
    try:
        re.compile(pattern, flags)
    except re.error as err:
        reason = str(err)
    except OverflowError:  # a{4294967296}: raised by re itself, not as re.error
        reason = "a repeat count is too large"
    except RecursionError:  # ((((…)))) a thousand deep
        reason = "nested too deeply"
    else:
        return None
    return f"not a valid regular expression ({reason}): {_shown(pattern)}"


_DOTTED = re.compile(r"\$?\.?((?:[^./~\[\]\s]+|\[[0-9]+\])(?:\.[^./~\[\]\s]+|\[[0-9]+\])*)")
"""A path written with dots (``user.id``, JSONPath's ``$.items[0].id``): said as a pointer."""


def json_pointer_problem(pointer: str, or_empty: str = "") -> str | None:
    """Why ``pointer`` is no JSON pointer (RFC 6901) into a document (None: it is one): it starts
    with ``/``. A path written with dots is answered with the pointer it means. (A ``~`` that is
    not ``~0`` or ``~1`` is read as itself, as rules always read it: a key ``a~b`` is ``/a~b``.)
    ``or_empty`` says what ``""`` means where it is allowed (`` (or "" to unmap)``); the caller
    lets ``""`` through."""
    if pointer.startswith("/"):
        return None
    fix = ""
    if (meant := pointer_meant(pointer)) is not None:
        after = ", without the space before it" if pointer.lstrip().startswith("/") else ""
        fix = ": write " + _quoted(meant) + after
    return f'a JSON pointer starts with "/"{or_empty}, got {pointer!r}{fix}'


_SLASHED = re.compile(r"[^\s/.$\[\]]+(?:/[^\s/]*)+")
"""A pointer written without its leading ``/`` (``user/id``), as no dotted path is."""


def pointer_meant(pointer: str) -> str | None:
    """The JSON pointer a mistyped one means: ``user.id`` (or JSONPath's ``$.items[0].id``) is
    ``/user/id`` (``/items/0/id``), `` /user/id`` and ``user/id`` are ``/user/id``; None when it
    says none."""
    if pointer.lstrip().startswith("/"):
        return pointer.lstrip()
    if _SLASHED.fullmatch(pointer):  # the leading "/" forgotten: user/id
        return "/" + pointer
    dotted = _DOTTED.fullmatch(pointer)
    if dotted is None:
        return None
    tokens = re.sub(r"\.?\[([0-9]+)\]", r".\1", dotted.group(1)).split(".")
    return "/" + "/".join(tokens)


def _quoted(text: str) -> str:
    """``text`` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comparison_problems(key: str, equals: str | None, matches: str | None, absent: bool) -> list[str]:
    """What is wrong with a condition's test (a rule's or a sender's ``when`` entry): at most
    one of ``equals`` and ``matches``, neither with ``absent``, a pattern that compiles."""
    if absent and (equals is not None or matches is not None):
        return [f"{key}: absent = true takes neither equals nor matches"]
    if equals is not None and matches is not None:
        return [f"{key}: set equals or matches, not both"]
    if matches is not None and (bad := regex_problem(matches)):
        return [f"{key}.matches: {bad}"]
    return []


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:60]) + "…"


def is_host_name(value: str) -> bool:
    """Dot-separated labels of letters, digits, ``-`` and ``_`` (any case), at most 253 long."""
    return 0 < len(value) <= 253 and all(_LABEL.fullmatch(label) for label in value.lower().split("."))


def is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def idna_form(name: str) -> str | None:
    """A host name (or one label) beyond ASCII in the form HTTP carries it (``bücher.example`` →
    ``xn--bcher-kva.example``); None when it has none (not even an internationalized name)."""
    try:
        return name.encode("idna").decode()
    except UnicodeError:
        return None


def host_problem(value: str, *, example: str = "example.com", ip: bool = False) -> str | None:
    """Why ``value`` is not a bare host name like ``example.com`` (or, with ``ip``, an IP
    address): the gateway compares hosts literally, so a URL, a port or a path never matches."""
    if is_host_name(value) or (ip and is_ip_address(value)):
        return None
    hint = ""
    if "://" in value or "/" in value or ":" in value:
        try:
            host = URL(value if "://" in value else f"http://{value}").host
        except ValueError:
            host = None
        if host and (is_host_name(host) or (ip and is_ip_address(host))):
            hint = f' (write "{host}")'
    elif not value.isascii() and (ascii_form := idna_form(value)) is not None:
        hint = f' (write it as "{ascii_form}")'
    what = "a bare host name or IP address" if ip else "a bare host name"
    return f'must be {what} like "{example}", without scheme, port or path, got {_shown(value)}{hint}'


def listen_host_problem(host: str) -> str | None:
    """Why ``host`` (of ``proxy.listen``, ``admin.listen``) cannot be listened on whatever the
    network: neither an IP address nor a host name (a label of more than 63 characters, an
    empty one: Python's resolver raised ``UnicodeError`` for them, a traceback at ``run``)."""
    if is_ip_address(host) or is_host_name(host):
        return None
    return (
        "the host must be an IP address (127.0.0.1, [::1]) or a host name of dot-separated labels"
        f" of 1..63 letters, digits, - or _, got {_shown(host)}"
    )


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot name a file: the operating system refuses a NUL character in a
    path, and Python raises for it wherever the file is first opened (a traceback, not a
    config error)."""
    if "\x00" in value:
        return f"a file path cannot hold a NUL character (\\u0000), got {_shown(value)}"
    return None


def not_a_file(mode: int) -> str | None:
    """What a path of this ``st_mode`` is when it is no regular file (``a named pipe``, ``a
    device``, ``a socket``, ``a folder``…), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else "something else"


def special_file(path: Path) -> str | None:
    """What ``path`` is when it is there but is neither a file nor a folder (a named pipe, a
    device, a socket), or None: opening a named pipe waits for a writer, so reading one as a
    GeoIP database, a PEM key or the store hung ``gateway check``, ``run`` and ``doctor``."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # not there, or not a name the system takes: said elsewhere
        return None
    return None if stat.S_ISDIR(mode) else not_a_file(mode)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def unset(name: str, environ: Mapping[str, str]) -> str:
    """Why ``"env:NAME"`` gave nothing, for a problem line: the variable is not set, is set but
    empty (``export NAME=``), or NAME is no variable name at all (``"env:"``)."""
    if not _ENV_NAME.fullmatch(name):
        shown = msgspec.json.encode(f"env:{name}").decode()  # a control character escaped: "env:A\u0000B"
        return f"{shown} does not name an environment variable (letters, digits and _)"
    return f"environment variable {name} is {'empty' if name in environ else 'not set'}"


LONGEST_PROBLEM = 600
"""A problem line longer than this has its long words (values, names) cut: see ``readable``."""


def readable(problem: str) -> str:
    """``problem`` as one line a terminal shows as it is: each control or unprintable character
    escaped (``\x1b``, ``\x00``: a value's escape sequence recoloured the terminal, a tier
    name or a file path was written raw), and, in a line longer than ``LONGEST_PROBLEM``, each
    run of more than 250 characters without a space, quote, colon or comma cut to its first 60
    and its length: a value, an unknown key or a path of thousands of characters (a file
    pasted in by mistake) was repeated whole, a line of megabytes for one key. A path as long
    as real ones are is shown whole."""
    problem = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in problem)
    if len(problem) <= LONGEST_PROBLEM:
        return problem
    long = r"""[^\s:,'"]{251,}"""  # quotes and a key's colon kept around what is cut
    return re.sub(long, lambda m: f"{m.group()[:60]}…({len(m.group()):,} characters)", problem)


def not_utf8(name: str, value: str) -> str | None:
    """Why the value of environment variable ``name`` cannot be used as text, or None: it holds
    bytes that are not UTF-8 (Python keeps them as lone surrogates, and encoding the value
    later raises). The value itself is never said: it is a secret."""
    try:
        value.encode()
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a lone surrogate"
        return f"the value of {name} is not UTF-8 ({what} at character {err.start + 1}); set it as UTF-8 text"
    return None


def text_problem(value: str, *, stripped: bool = False) -> str | None:
    """Why ``value`` cannot be a name the gateway stores and compares (a channel, a node, a
    source): empty, or holding a control character, which PostgreSQL refuses (NUL) and no
    request value ever matches (they are refused as unprintable). ``stripped``: it is compared
    with a request's value, which arrives without surrounding spaces."""
    if not value.strip():
        return "must not be empty"
    if not value.isprintable():
        return f"must be printable characters (no control characters), got {_shown(value)}"
    if stripped and value != value.strip():
        return f"must not start or end with a space (values arrive without them), got {_shown(value)}"
    return None


def creator_id_problem(value: str, longest: int) -> str | None:
    """Why ``value`` cannot be a creator ID a click carries (a ``[[creators]]`` id, a
    ``payouts.creators`` key): ``text_problem``'s, as a request's value arrives, or longer than
    ``campaign.max_value_length`` (``longest``), past which a click's creator_id is dropped."""
    if bad := text_problem(value, stripped=True):
        return bad
    if len(value) > longest:
        return (
            f"longer than campaign.max_value_length ({longest}), so a click never carries it"
            f" (a longer creator_id is dropped), got {len(value)} characters"
        )
    return None


DSN_EXAMPLE = "postgresql://user:password@host:5432/database"


PADDED = (
    "starts or ends with white space or holds control characters (a newline from the file it was read from?)"
)
"""What ``padded`` finds, as a config problem says it."""


def padded(text: str) -> bool:
    """Whether a value read from the environment has white space at an end or a control
    character in it: most often the newline of the file it was read from (a Kubernetes
    secret made with ``echo``), which no sender, header or server holds. No ``==`` on the
    value: it is often a secret."""
    return text[:1].isspace() or text[-1:].isspace() or not text.isprintable()


def dsn_problem(dsn: str) -> str | None:
    """Why ``dsn`` is not a PostgreSQL URL asyncpg could connect with: its scheme, a user name or
    password that ends the host part early (an unencoded ``/``, ``?`` or ``#``) or starts it late
    (an unencoded ``@``: asyncpg takes the first one as the host's start), or a port that is
    not a number 1..65535 (asyncpg takes one, and the connection then fails with an
    OverflowError on every attempt), white space around it or a control character in it (the
    newline of the file it was read from: a database name ending in one does not exist), or an
    ``sslmode`` or ``target_session_attrs`` asyncpg refuses (at each sync round, not at start), or
    a parameter of libpq's asyncpg does not take (``LIBPQ_ONLY``: refused by the server).
    Never says the DSN itself: it holds a password."""
    if padded(dsn):
        return PADDED
    scheme, sep, _ = dsn.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return f"expected a PostgreSQL URL like {DSN_EXAMPLE}"
    try:
        parts = urlsplit(dsn)  # the host part as asyncpg reads it (``urllib.parse.urlparse``)
    except ValueError:  # an unbalanced [ of an IPv6 address
        return f"expected a PostgreSQL URL like {DSN_EXAMPLE}"
    netloc = parts.netloc
    if "@" not in netloc and "@" in parts.path + parts.fragment + parts.query.partition("=")[0]:
        # What asyncpg would take for the host and port is the user name and password, cut at
        # that character: the host part above would show (part of) the password.
        return "a '/', '?' or '#' in the user name or password must be percent-encoded (%2F, %3F, %23)"
    if netloc.count("@") > 1:
        # asyncpg ends the user name and password at the first @: the rest of the password
        # became the host it looked up, every round (`gaierror: Name or service not known`).
        return "an '@' in the user name or password must be percent-encoded (%40)"
    for host in netloc.partition("@")[2 if "@" in netloc else 0].split(","):  # h1:5432,h2:5433
        port = host.rpartition("]")[2] if host.startswith("[") else host
        port = port.rpartition(":")[2] if ":" in port else ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"its port must be 1..65535, got {port!r}"
    query = parse_qs(parts.query, keep_blank_values=True)
    for name in query:
        if name in LIBPQ_ONLY:
            instead = f" ({LIBPQ_ONLY[name]} sets that)" if LIBPQ_ONLY[name] else ""
            return (
                f"its parameter {name} is libpq's, which asyncpg does not take{instead}: it would go"
                " to the server as a setting, which refuses it at every sync round; remove it"
            )
    for name, allowed in _DSN_CHOICES.items():
        for value in query.get(name, []):
            spelled = value.replace("_", "-") if name == "sslmode" else value  # verify_ca too
            if spelled not in allowed:
                return f"its {name} must be one of {', '.join(allowed)}, got {value!r}"
    return None


LIBPQ_ONLY = {
    "connect_timeout": "central.connect_timeout",
    "keepalives": "",
    "keepalives_idle": "",
    "keepalives_interval": "",
    "keepalives_count": "",
    "tcp_user_timeout": "",
    "hostaddr": "",
    "channel_binding": "",
    "gssencmode": "",
    "gssdelegation": "",
    "sslcompression": "",
    "sslsni": "",
    "sslcertmode": "",
    "requirepeer": "",
    "require_auth": "",
    "requiressl": "",
    "load_balance_hosts": "",
    "fallback_application_name": "",
}
"""URL parameters of libpq (a DSN copied from psql's or another tool's) that asyncpg does not
take: it passes every parameter it does not know to the server as a setting at connecting,
and PostgreSQL refuses these (``unrecognized configuration parameter``); the gateway's key
that does their work, where there is one."""


_DSN_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": ("any", "primary", "standby", "prefer-standby", "read-write", "read-only"),
}
"""The values asyncpg takes for the URL parameters that have a fixed few."""


MAX_COOKIE_NAME = 4000
"""The longest cookie name taken: browsers drop a cookie whose name and value pass 4096 bytes
(RFC 6265bis), without a word — a visitor then new on every request; the visitor cookie's
value is 49 characters."""


HEADER_NAME = COOKIE_NAME
"""A header name: an RFC 9110 §5.6.2 token, the characters a cookie name is written in too."""


def header_name_problem(name: str) -> str | None:
    """Why ``name`` is no header name (None: it is one): no request or answer carries a header
    named with a space, a colon, a control character or a letter beyond ASCII, so a rule
    reading one never matches. Says the first such character and where it is (1-based)."""
    if HEADER_NAME.fullmatch(name):
        return None
    at, c = next((i, c) for i, c in enumerate(name) if not HEADER_NAME.fullmatch(c))
    if c == " ":
        what = "a space"
    elif unicodedata.category(c) == "Cc":
        what = f"a control character, U+{ord(c):04X},"
    elif not c.isascii():
        what = f"{c!r}, beyond ASCII,"
    else:
        what = repr(c)
    return (
        f"{_shown(name)} is not a header name ({what} at character {at + 1});"
        " header names are letters, digits and !#$%&'*+-.^_`|~"
    )


def cookie_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a cookie: RFC 6265 allows only a token, and browsers drop a
    cookie over 4096 bytes (``MAX_COOKIE_NAME``)."""
    if not COOKIE_NAME.fullmatch(name):
        return (
            "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~ "
            f"(no spaces, ;, =, quotes or commas), got {_shown(name)}"
        )
    if len(name) > MAX_COOKIE_NAME:
        return (
            f"at most {MAX_COOKIE_NAME} characters (browsers drop a cookie whose name and value pass 4096"
            f" bytes), got {len(name)}"
        )
    return None
