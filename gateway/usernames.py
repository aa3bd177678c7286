"""How an operator's text names a user: the one rule of the user lookup (``GET
/api/users/{id}``), the erasure (``DELETE /api/users/{id}``) and ``gateway erase USER_ID``, so
that what the lookup shows under a text is what an erasure of the same text erases.

A text of a stored user key's shape (``named_user_key``: 32 hex digits, ``siv:…``, ``id:…``, as
a journey, the dashboard and the conversions download show it) that some user has is read as
that key first; any other text, and a key no user has, as the site's raw user ID, keyed under
every ``identity.user_id_storage`` (``Keys.user_keys``; 32 hex digits may be either: a UUID
written without dashes). A key of ``encrypt`` or ``plain`` gives the raw ID back
(``Keys.recover_user_id``); a hashed one does not, and what only the raw ID finds (the kept bad
events that name it in another case or spelling) is then out of reach: ``NamedUser.user_id``
is None, and ``erasure_note`` says so with the erasure's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from gateway.events import Erasure
from gateway.keys import Keys, named_user_key

if TYPE_CHECKING:
    from pathlib import Path

    from gateway.config import Settings
    from storage.central_queries import CentralReader

T = TypeVar("T")


@dataclass(frozen=True)
class NamedUser:
    """A user as an operator's text names them."""

    read_as: Literal["user_id", "user_key"]
    """How the text was read: as the raw user ID, or as a user key some user has."""
    user_id: str | None
    """The raw user ID: the text, or what a key read as such gives back; None for a hashed key."""
    keys: list[str]
    """Every key the user's rows may be kept under, the one an erasure records first: the raw
    ID's ``Keys.user_keys`` (the key itself among them, or first when it gives no ID back)."""
    key_shaped: bool
    """Whether the text has a user key's shape: read as a raw ID, it may be a mistyped key."""


async def named_user(
    user_id: str,
    keys: Keys,
    lowercases: bool,
    find: Callable[[list[str]], Awaitable[T | None]],
) -> tuple[NamedUser, T | None]:
    """The user ``user_id`` (trimmed, checked: ``operator_user_id``) names; and, when it was read
    as a key, what ``find`` answered for that key alone (the lookup's journey; an erasure's
    "known"), None otherwise. ``find`` is asked only about a text of a key's shape, and not
    about a key the text as a raw ID has itself (``plain``'s ``id:…`` of an ``id:…``)."""
    as_id = keys.user_keys(user_id, lowercases)
    stored = named_user_key(user_id)
    if stored is None or stored in as_id:
        return NamedUser("user_id", user_id, as_id, stored is not None), None
    found = await find([stored])
    if found is None:
        return NamedUser("user_id", user_id, as_id, True), None
    recovered = keys.recover_user_id(stored)
    if recovered is None:
        return NamedUser("user_key", None, [stored], True), found
    forms = keys.user_keys(recovered, lowercases)
    return NamedUser("user_key", recovered, forms if stored in forms else [*forms, stored], True), found


def erasure_note(named: NamedUser, erasure: Erasure, kept: int, *, api: bool) -> str | None:
    """What an erasure of ``named`` says besides its counts (``DELETE /api/users/{id}``'s
    ``note``, a line of ``gateway erase``; ``api`` names the one to use again), None if nothing:
    by a hashed key, what the search of the ``kept`` bad events could not do without the raw
    ID; for a text of a key's shape read as a raw ID that erased nothing, that it was so read
    (a mistyped key must not pass for the erasure of the key's user)."""
    again = "DELETE /api/users/{user_id}" if api else "gateway erase USER_ID"
    if named.read_as == "user_key" and named.user_id is None:
        left = (
            f"{kept} bad event{' is' if kept == 1 else 's are'} kept: erase by the raw user ID too if it"
            f" is known ({again}), else review them (GET /api/bad-events) or let"
            " privacy.retention_days delete them (gateway purge)"
            if kept
            else "no bad event is kept, so none was missed"
        )
        return (
            "kept bad events not searched for the raw user ID: a hashed user_key does not give it"
            " back, so they were searched for the user's devices and for the ID as a whole word in"
            f" the case it was recorded, not in another case nor inside a longer text; {left}. Rows"
            " kept under another key of the same ID (an earlier identity.user_id_storage, another"
            " case where a rule lower-cases) are not found by this key either"
        )
    if (
        named.key_shaped
        and named.read_as == "user_id"
        and not erasure.visitors
        and not any(erasure.counts.values())
    ):
        return (
            "read as a raw user ID: no user has it as a user_key (nor is an erasure of that key"
            " recorded); if it was copied as a user_key, check it against the journey or the"
            " download it came from"
        )
    return None


def erasure_reach(
    settings: Settings,
    who: str = "user",
    user_key: str | None = None,
    keys: Keys | None = None,
    visitor_keys: Sequence[str] = (),
) -> list[str]:
    """Where else the ``who``'s rows may be (``user`` or ``visitor``), by what this config has:
    said after an erasure, by ``gateway erase`` and in the admin API's answer (``elsewhere``).
    ``user_key`` (with ``keys``): the erased user's key, whose sinks' ``userId`` (the key itself
    when ``keys`` cannot give the raw ID back) is named, since a destination deletes by it.
    ``visitor_keys``: the erased visitor's keys, the ``anonymousId`` a sink sent its landings
    under (``storage.sink_messages.track_message``), named so (until 2026-12-08 "delete it
    there" alone, and the operator had only the cookie's visitor ID, which no destination has)."""
    said = []
    # Configured, its variable set or not (erase does not read it): the sync carries it there.
    if settings.options.central.url and who == "visitor":
        said.append(
            "the erasure reaches the central store with the next sync, and every other node's"
            " store at that node's next sync round after it, their kept bad events (bad_events)"
            " that name the visitor's ID included"
        )
    elif settings.options.central.url:
        said.append(
            "the erasure reaches the central store with the next sync, and every other node's"
            " store at that node's next sync round after it, their kept bad events (bad_events)"
            " that name the user's ID or devices included; one that names the ID only inside a"
            " longer text or in another case is not found there: erase on a node too where a"
            " sender's bodies may name the user so"
        )
    if settings.options.sinks:
        said.append(
            "no sink sends these rows from now on; what the sinks sent before stays at their"
            f" destinations: delete it there{_sent_as(user_key, keys)}{_sent_anonymously(visitor_keys)}"
            " (Segment and RudderStack have their own deletion API)"
        )
    return said


def _sent_anonymously(visitor_keys: Sequence[str]) -> str:
    """The ``anonymousId`` a sink sent a visitor's landings under: its visitor_key (a keyed hash,
    never the cookie's visitor ID, which is never said), each key an erasure of the text took
    (a text that is both a visitor_key and a raw ID: both). A one-day key's landing
    (``identity.mode = "cookieless"``, ``no_consent``) went under ``gw-landing-<event id>``,
    which links it to no one, or by a bound user's ``userId`` alone."""
    if not visitor_keys:
        return ""
    return (
        f", by the anonymousId they were sent under, {' or '.join(visitor_keys)} (the visitor_key,"
        " not the cookie's visitor ID; a landing of a one-day key, under identity.mode ="
        ' "cookieless" or without consent, went under gw-landing-<its event id>, which links it to'
        " no one, or by the bound user's userId alone)"
    )


def _sent_as(user_key: str | None, keys: Keys | None) -> str:
    """The ``userId`` a sink sent the user under, as the operator deletes them at a destination
    (Segment's deletion is by ``userId``): the raw ID is never said (the answer and the
    command's output may be kept), only that it is the one, or else the key sent in its place."""
    if user_key is None or keys is None:
        return ""
    if keys.recover_user_id(user_key) is not None:
        return ", by the userId they were sent under, the user ID itself"
    return (
        f", by the userId they were sent under, {user_key} (its user_key: under"
        f' identity.user_id_storage = "{keys.user_mode}" a sink sends the key in place of'
        " the user ID, so a deletion by the user ID finds nothing there)"
    )


@dataclass(frozen=True)
class VisitorRecorded:
    """Whether anything is recorded of a visitor (``visitor_recorded``) or a user
    (``user_recorded``) where its erasure acts."""

    known: bool
    unlooked: str | None = None
    """Where it was not looked for, and why, in the operator's words; None: looked everywhere."""


async def visitor_recorded(
    settings: Settings, visitor_keys: list[str], keys: Keys, central: CentralReader | None = None
) -> VisitorRecorded:
    """Whether anything is recorded of the visitor ``visitor_keys`` name in a store its erasure
    acts on: this node's, and with ``[central]`` configured the central store (every node's
    rows, which the erasure reaches through the sync) and the reporting mirror (a copy of it):
    a text refused when pasted by mistake (a page's address, cookies not of ours) is refused
    only when none holds anything under it (until 2026-12-08 this node's store alone was looked
    in, so a visitor another node's sender named so could not be erased from here).
    ``central``: a reader of the central store to ask (the admin API's own, under
    ``admin.source = "central"``); else one is made when ``central.url`` is known here. Raises
    ``StoreUnavailable`` when the central store cannot be read."""
    from gateway.badbody import body_key
    from storage.erasure import visitor_known

    secret = body_key(settings.secret)

    def known_in(path: Path) -> Awaitable[bool]:
        return visitor_known(path, visitor_keys, body_key=secret, keys=keys)

    return await _recorded(settings, known_in, lambda reader: reader.visitor_known(visitor_keys), central)


async def user_recorded(
    settings: Settings, user_keys: list[str], central: CentralReader | None = None
) -> VisitorRecorded:
    """Whether anything is recorded of the user ``user_keys`` name (a binding, a conversion, an
    erasure of it) in a store its erasure acts on, as ``visitor_recorded`` looks: this node's,
    and with ``[central]`` configured the reporting mirror and the central store (every node's
    rows, which the erasure reaches through the sync). What decides whether a text of a key's
    shape is read as that key or as a raw ID (``named_user``): until 2026-12-08 ``gateway
    erase`` looked in this node's store alone, and erased the key of a user another node
    recorded as a raw ID no one has. ``central``: a reader of the central store to ask; else
    one is made when ``central.url`` is known here. Raises ``StoreUnavailable`` when the central
    store cannot be read."""
    from storage.erasure import user_known

    return await _recorded(
        settings,
        lambda path: user_known(path, user_keys),
        lambda reader: reader.user_known(user_keys),
        central,
    )


async def _recorded(
    settings: Settings,
    known_in: Callable[[Path], Awaitable[bool]],
    central_known: Callable[[CentralReader], Awaitable[bool]],
    central: CentralReader | None,
) -> VisitorRecorded:
    """``visitor_recorded``'s and ``user_recorded``'s look: this node's store (``known_in``),
    then, with ``[central]`` configured, the reporting mirror (``known_in`` too, when its file
    is there) and the central store (``central_known``, asked of ``central`` or of a reader made
    for the look when ``central.url``'s variable is set here)."""
    if await known_in(settings.store_path):
        return VisitorRecorded(True)
    url = settings.options.central.url
    if not url:
        return VisitorRecorded(False)
    mirror = settings.mirror_path
    if mirror is not None and await asyncio.to_thread(mirror.is_file) and await known_in(mirror):
        return VisitorRecorded(True)
    if central is not None:
        return VisitorRecorded(await central_known(central))
    if not settings.central_url:  # a command's: "env:NAME" whose variable is not set here
        return VisitorRecorded(False, f"the central store was not looked in: {url[4:]} is not set")
    from storage.central import url_key  # asyncpg: the postgres extra
    from storage.central_queries import CentralReader

    reader = CentralReader(
        settings.store_path, settings.central_url, settings.options.central.connect_timeout, url_key(url)
    )
    try:
        return VisitorRecorded(await central_known(reader))
    finally:
        await reader.close()
