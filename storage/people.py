"""People across devices, and how a report's people are shared out between worker processes.

A person is a user with every visitor (device) bound to them, or a visitor bound to nobody.
``data_driven`` learns from whole journeys: each conversion's, and each person's touchpoints
of the period that no conversion used. For a worker process to count both for its people
alone, everything one conversion can touch must be in that worker: the visitors and users
joined by bindings, or by a conversion recorded for a user on a visitor not bound to them,
are one *group* (a connected component), and a group belongs to one worker.

A ``Share`` names one worker's part. A group goes to the worker a hash of its smallest user
names; a visitor in no group — most of them, never signed in — to the worker whose range of
the (hexadecimal, evenly spread) keys holds it, so that a worker reads those straight from
its range of the visitor index. Every worker reads the bindings and the period's
conversions as of one snapshot the gateway took (``Share.bindings``, ``Share.conversions``):
rows written since are left out, and rows erased since show as a count that moved
(``Moved``) or as checksums that differ between workers (``People.fingerprint``); the report
then runs in one process, so no two workers can disagree about a group.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import NamedTuple

KEY_SPACE = 16**8
"""Keys are hexadecimal keyed hashes: their first 8 digits spread evenly over this."""


class Moved(Exception):
    """Bindings or conversions were erased while a report ran, or committed with an ID at or
    before the last of the snapshot (of its last millisecond, from another process): a worker's
    snapshot is not the gateway's, so its share may not match the others' (the report runs in
    one process)."""


class Snapshot(NamedTuple):
    """The last id and the number of rows of a table, when the gateway cut the report."""

    last: str | None
    rows: int


class Share(NamedTuple):
    """Worker ``worker`` of ``workers``: its groups of people and its range of lone visitors,
    as of the gateway's snapshot of the bindings and the period's conversions."""

    worker: int
    workers: int
    bindings: Snapshot
    conversions: Snapshot

    @property
    def cuts(self) -> list[str]:
        return [format(KEY_SPACE * i // self.workers, "08x") for i in range(1, self.workers)]

    @property
    def keys(self) -> tuple[str | None, str | None]:
        """The range of lone visitors' keys this share owns, ``lo <= key < hi`` (None: no bound)."""
        cuts: list[str | None] = [None, *self.cuts, None]
        return cuts[self.worker], cuts[self.worker + 1]


class People:
    """The bindings (visitor, user), earliest first, and the period's conversions' (visitor,
    user): who each visitor's devices and person are, and which share owns each group."""

    def __init__(
        self,
        bindings: Iterable[tuple[str, str]],
        conversions: Sequence[tuple[str | None, str | None]],
        share: Share | None = None,
        version: str | None = None,
    ) -> None:
        """``version``: for a share, what names the state of the bindings (``Reports`` makes it
        from the counters of migration 0009), checksummed instead of the bindings themselves."""
        self.users_of: dict[str, set[str]] = {}
        self.visitors_of: dict[str, set[str]] = {}
        self.person_of: dict[str, str] = {}
        """Each bound visitor's person: the user of its earliest binding."""
        self.share = share
        self.fingerprint = 0
        """For a share: a checksum of the bindings (or their ``version``) and conversions its
        groups come from. Shares of one report must agree on it (``Reports.count_moves``): a
        count and a last id per table miss an erasure that an insert of an older id made up for."""
        if share is None:
            self.bind(bindings)
            return
        # Without a version, read twice: the groups, and their fingerprint.
        listed = list(bindings) if version is None else []
        self.bind(listed if version is None else bindings)
        self._group(share, listed, conversions, version)

    @classmethod
    def adopt(
        cls,
        bound: People,
        conversions: Sequence[tuple[str | None, str | None]],
        share: Share,
        version: str,
    ) -> People:
        """A share's people over the bindings ``bound`` holds (a process keeps them between
        reports): its dictionaries, not copies, which nothing changes while the share is in use."""
        people = cls((), ())
        people.users_of, people.visitors_of = bound.users_of, bound.visitors_of
        people.person_of, people.share = bound.person_of, share
        people._group(share, (), conversions, version)
        return people

    def _group(
        self,
        share: Share,
        bindings: Sequence[tuple[str, str]],
        conversions: Sequence[tuple[str | None, str | None]],
        version: str | None,
    ) -> None:
        """The fingerprint, and the groups of a share's people (once bound)."""
        text = "\x1e".join(f"{v}\x1f{u}" for v, u in (*bindings, *conversions))
        if version is not None:
            text = f"{version}\x1d{text}"
        self.fingerprint = zlib.crc32(text.encode("utf-8", "replace"))
        # A group is named by its smallest user (every group has one): users joined by a
        # visitor bound to several (rare), or by a conversion of a visitor not bound to them.
        self._cuts = share.cuts
        self._parent: dict[str, str] = {}
        self._owners: dict[str, int] = {}
        self._joined: dict[str, str] = {}
        """Visitors bound to nobody, joined to the user of one of their conversions."""
        for users in self.users_of.values():
            if len(users) > 1:
                first, *others = users
                for other in others:
                    self._join(first, other)
        for seen, named in conversions:
            if seen is None or named is None:
                continue
            bound = self.users_of.get(seen)
            if bound is not None:
                if named not in bound:
                    self._join(next(iter(bound)), named)
            elif self._joined.setdefault(seen, named) != named:
                self._join(self._joined[seen], named)

    def bind(self, bindings: Iterable[tuple[str, str]]) -> None:
        """Add bindings (visitor, user), earliest first, all of them later than those already
        added (``Reports`` adds a whole report's new ones to the people it kept; not for a share,
        whose groups are joined once)."""
        users_of, visitors_of, person_of = self.users_of, self.visitors_of, self.person_of
        for visitor, user in bindings:
            users_of.setdefault(visitor, set()).add(user)
            visitors_of.setdefault(user, set()).add(visitor)
            person_of.setdefault(visitor, user)

    def _root(self, user: str) -> str:
        """The smallest user of ``user``'s group (path splitting keeps the chains short)."""
        parent = self._parent
        while (up := parent.get(user, user)) != user:
            parent[user] = parent.get(up, up)
            user = up
        return user

    def _join(self, a: str, b: str) -> None:
        a, b = self._root(a), self._root(b)
        if a < b:
            self._parent[b] = a
        elif b < a:
            self._parent[a] = b

    def _owner(self, user: str) -> int:
        """The share that owns ``user``'s group: a hash of the group's name (``crc32``, the same
        in every process), so groups spread evenly whatever keys they hold."""
        assert self.share is not None
        root = self._root(user) if self._parent else user
        owner = self._owners.get(root)
        if owner is None:
            owner = self._owners[root] = zlib.crc32(root.encode()) % self.share.workers
        return owner

    def _user(self, visitor: str) -> str | None:
        """A user of ``visitor``'s group, if it is in one."""
        users = self.users_of.get(visitor)
        return next(iter(users)) if users else self._joined.get(visitor)

    def mine(self, visitor: str | None, user: str | None) -> bool:
        """Whether a conversion of ``visitor`` (or, without one, ``user``) is this share's:
        its group's, else (a visitor alone) its key range's."""
        if self.share is None:
            return True
        if visitor is None:
            assert user is not None  # conversions name a visitor or a user (a CHECK constraint)
            return self._owner(user) == self.share.worker
        grouped = self._user(visitor)
        if grouped is None:
            return bisect_right(self._cuts, visitor) == self.share.worker
        return self._owner(grouped) == self.share.worker

    def visitors(self) -> tuple[list[str], list[str]]:
        """Grouped visitors this share reads besides its key range (their group is its own),
        and those in its key range it leaves out (their group is another share's)."""
        assert self.share is not None
        index, cuts = self.share.worker, self._cuts
        extra, foreign = [], []
        for visitor, user in chain(
            ((v, next(iter(users))) for v, users in self.users_of.items()), self._joined.items()
        ):
            owner, ranged = self._owner(user), bisect_right(cuts, visitor)
            if owner == index and ranged != index:
                extra.append(visitor)
            elif owner != index and ranged == index:
                foreign.append(visitor)
        return sorted(extra), sorted(foreign)
