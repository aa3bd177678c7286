"""JWT key sets for identity and conversion rules: read from a file, re-read when it changes.

``parse_key_set`` turns a rule's key material into a ``KeySet`` for its algorithm: a PEM
public key or certificate (or an HMAC secret) as before, or, when it is a JSON object, a
key set: a JWKS (RFC 7517, ``{"keys": [...]}``: RSA ``n``/``e``, EC ``crv``/``x``/``y``) or
Google's ``x509`` map of key IDs to PEM certificates (Firebase). Keys the rule cannot use
(another ``alg``, kind or curve, a ``use`` other than ``sig``) are left out; a shared secret
(``oct``) in a file is refused. ``RuleKeys`` holds one source's keys and, when they come from
a file, looks at it every ``CHECK_EVERY`` seconds off the event loop: a file replaced (a cron
fetching the provider's keys) takes effect without a restart; one that cannot be read or
parsed leaves the keys read before in use, and is logged once, and its gauge
``gateway_rule_key_file_unusable`` (``gateway.metrics``) is 1 until the file is good again. The
gateway itself never fetches keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from addons.jws import KeySet, Verifier, load_key, pem_public_key, public_verifier
from gateway.config_values import not_a_file

if TYPE_CHECKING:
    from prometheus_client import Gauge

    from gateway.metrics import Metrics

log = logging.getLogger("gateway.jwks")

CHECK_EVERY = 2.0
"""Seconds between two looks at a key file (one ``stat``; read again only when it changed)."""
MAX_KEY_FILE = 1024 * 1024
"""Largest key material read: a provider's key set is a few kilobytes."""
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}


def parse_key_set(algorithm: str, material: bytes) -> KeySet:
    """The keys ``material`` holds for ``algorithm``; ValueError saying what is wrong with it."""
    if len(material) > MAX_KEY_FILE:
        raise ValueError(f"larger than {MAX_KEY_FILE} bytes: not a key (a key set is a few kilobytes)")
    if algorithm.startswith("HS") or not material.lstrip().startswith(b"{"):
        try:
            return KeySet.lone(load_key(algorithm, material))
        except ValueError as err:
            if str(err).startswith("not a PEM"):
                raise ValueError(f"{err}, nor a JSON key set") from None
            raise
    try:
        document = json.loads(material)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"a key set must be JSON: {err}") from None
    if not isinstance(document, dict):
        raise ValueError("a key set is a JSON object")
    skipped: list[str] = []
    if "keys" in document:
        keys = _jwks(algorithm, document["keys"], skipped)
    elif document and all(isinstance(v, str) and "-----BEGIN" in v for v in document.values()):
        keys = _certificates(algorithm, document, skipped)
    else:
        raise ValueError(
            'neither a JWKS ({"keys": [...]}) nor a map of key IDs to PEM certificates (Google\'s x509)'
        )
    if not keys:
        left_out = f": left out {', '.join(skipped[:4])}{' …' if len(skipped) > 4 else ''}" if skipped else ""
        raise ValueError(f"the key set holds no key for {algorithm}{left_out}")
    return KeySet(algorithm, tuple(keys))


def _jwks(algorithm: str, entries: Any, skipped: list[str]) -> list[tuple[str, Verifier]]:
    if not isinstance(entries, list):
        raise ValueError('a JWKS\'s "keys" is a list')
    keys = []
    for i, jwk in enumerate(entries):
        if not isinstance(jwk, dict):
            raise ValueError(f"keys[{i}] is not a JSON object")
        kid = jwk.get("kid", "")
        if not isinstance(kid, str):
            raise ValueError(f"keys[{i}].kid is not a string")
        name = f"kid {kid!r}" if kid else f"keys[{i}]"
        kty, use, alg = jwk.get("kty"), jwk.get("use", "sig"), jwk.get("alg", algorithm)
        if kty == "oct":
            raise ValueError(
                f'{name} is a shared secret ("oct"), never read from a file: give it as "env:NAME"'
            )
        if use != "sig":
            skipped.append(f"{name} (use {use!r})")
            continue
        if alg != algorithm:
            skipped.append(f"{name} (alg {alg!r})")
            continue
        if kty == "RSA":
            numbers: Any = rsa.RSAPublicNumbers(_int(jwk, "e", i), _int(jwk, "n", i))
        elif kty == "EC" and jwk.get("crv") in _CURVES:
            curve, size = _CURVES[jwk["crv"]]
            numbers = ec.EllipticCurvePublicNumbers(_int(jwk, "x", i, size), _int(jwk, "y", i, size), curve())
        else:
            skipped.append(f"{name} (kty {kty!r}{', crv ' + repr(jwk.get('crv')) if kty == 'EC' else ''})")
            continue
        try:
            public: PublicKeyTypes = numbers.public_key()
        except (ValueError, UnsupportedAlgorithm):  # an EC point off its curve, an even modulus
            raise ValueError(f"{name} is not a valid {kty} public key") from None
        try:
            keys.append((kid, public_verifier(algorithm, public)))
        except ValueError:
            skipped.append(f"{name} (not a key for {algorithm})")
    return keys


def _int(jwk: dict[str, Any], member: str, i: int, size: int = 0) -> int:
    """A JWK's base64url big-endian integer (of ``size`` bytes exactly, when given)."""
    value = jwk.get(member)
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError(f"keys[{i}].{member} is not base64url")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if size and len(raw) != size:
        raise ValueError(f"keys[{i}].{member} is {len(raw)} bytes, not {size}")
    return int.from_bytes(raw, "big")


def _certificates(algorithm: str, document: dict[str, str], skipped: list[str]) -> list[tuple[str, Verifier]]:
    keys = []
    for kid, pem in document.items():
        try:
            public = pem_public_key(pem.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError(f"kid {kid!r} is not a PEM certificate") from None
        try:
            keys.append((kid, public_verifier(algorithm, public)))
        except ValueError:
            skipped.append(f"kid {kid!r} (not a key for {algorithm})")
    return keys


def read_key_file(path: Path) -> bytes:
    """A key file's bytes, at most ``MAX_KEY_FILE`` + 1 (``parse_key_set`` refuses more):
    ValueError saying what it is when it is no regular file, OSError when it cannot be read.
    Opened without waiting (``O_NONBLOCK``) and checked once open: a named pipe put there
    would otherwise wait for a writer for ever, the start-up or the look with it."""
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
        if what := not_a_file(os.fstat(file.fileno()).st_mode):
            raise ValueError(f"it is {what}, not a file")
        return file.read(MAX_KEY_FILE + 1)


def _described(keys: KeySet) -> str:
    """``kid a, b`` (the keys of a set), ``one key`` (a PEM or a secret): for the log."""
    if not keys.by_kid:
        return "one key"
    return "kid " + ", ".join(kid or "(none)" for kid, _ in keys.keys)


class RuleKeys:
    """One JWT source's keys (``key``: its TOML key, for the log) as read at start-up; from a
    file (``path``), kept up to date with it once ``start``-ed, until ``stop``. ``labels``: its
    rule's name and TOML key, for ``gateway_rule_key_file_unusable``."""

    def __init__(
        self,
        key: str,
        algorithm: str,
        material: bytes,
        path: Path | None = None,
        labels: tuple[str, str] = ("", ""),
    ) -> None:
        self.key = key
        self.labels = labels
        self.algorithm = algorithm
        self.path = path
        self.material = material
        self.current = parse_key_set(algorithm, material)
        self._seen: object = None
        """What the last look found (the file's identity, size and time, or the error): the
        same again is not read or logged again."""
        self._failing = False
        self._unusable: Gauge | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._looking: asyncio.Future[tuple[object, object]] | None = None
        self.looks = 0
        """Looks at the file finished (what a test waits on: "looked at again, nothing said")."""

    def start(self, metrics: Metrics | None = None) -> None:
        """Look at the file every ``CHECK_EVERY`` seconds, on the running loop (a timer, not a
        task: a loop that is only run now and then, as an import worker's, keeps nothing
        pending); with ``metrics``, say in ``gateway_rule_key_file_unusable`` whether the file
        last looked at could be used (0 from the start: the config read it)."""
        if self.path is None:
            return
        if metrics is not None and self._unusable is None:
            self._unusable = metrics.rule_key_file_unusable.labels(*self.labels)
            self._unusable.set(int(self._failing))
        if self._timer is None and self._looking is None:
            self._timer = asyncio.get_running_loop().call_later(CHECK_EVERY, self._look)

    @property
    def following(self) -> bool:
        """Whether the file is still looked at (``start``-ed, not ``stop``-ped since)."""
        return self._timer is not None or self._looking is not None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._looking = None  # its answer, when it comes, is dropped
        if self._unusable is not None and self._failing:
            # No longer looked at (a reload left the rule out, or moved it): no alert for ever.
            # A new chain's keys for the same label set it again at their next look.
            self._unusable.set(0)
        self._unusable = None

    def _look(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        looking = self._looking = loop.run_in_executor(None, self._read, self._seen, self.material)

        def looked(future: asyncio.Future[tuple[object, object]]) -> None:
            if looking is not self._looking:
                return  # stopped meanwhile
            self._looking = None
            self.looks += 1
            try:
                self._apply(*future.result())
            except Exception:  # a bug, not the file: logged, and the next look still comes
                log.exception("%s: looking at %s failed", self.key, self.path)
            if self._unusable is not None:  # at each look: what another chain's stop set is undone
                self._unusable.set(int(self._failing))
            self._timer = loop.call_later(CHECK_EVERY, self._look)

        looking.add_done_callback(looked)

    def _read(self, seen: object, material: bytes) -> tuple[object, object]:
        """(what was found, what to do): None, nothing new; True, the file holds the keys in use;
        a str, a problem; (bytes, KeySet), new keys. Runs in a thread: stat, read and parse
        never block the loop."""
        assert self.path is not None
        try:
            info = os.stat(self.path)
        except OSError as err:
            found: object = err.strerror
            return found, None if found == seen else f"cannot read it: {err.strerror}"
        found = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if found == seen:
            return found, None
        try:
            data = read_key_file(self.path)
        except OSError as err:
            return found, f"cannot read it: {err.strerror}"
        except ValueError as err:
            return found, str(err)
        if data == material:
            return found, True  # rewritten as it was (a cron fetching unchanged keys)
        try:
            return found, (data, parse_key_set(self.algorithm, data))
        except ValueError as err:
            return found, str(err)

    def _apply(self, found: object, outcome: object) -> None:
        self._seen = found
        if isinstance(outcome, str):  # once: the same file (or error) again is not looked at
            log.warning(
                "%s: %s: %s; still verifying with the keys read before (%s)",
                self.key,
                self.path,
                outcome,
                _described(self.current),
            )
            self._failing = True
        elif isinstance(outcome, tuple):
            self.material, self.current = outcome
            self._failing = False
            log.info("%s: %s changed: verifying with %s", self.key, self.path, _described(self.current))
        elif outcome is True and self._failing:
            self._failing = False
            log.info("%s: %s is as it was again (%s)", self.key, self.path, _described(self.current))


class FollowsKeyFiles:
    """What the two rule addons share: their rules' JWT keys (``key_files``), those read from
    a file followed while the chain runs (``running``) until it stops (``done``)."""

    key_files: list[RuleKeys]
    metrics: Metrics

    async def running(self) -> None:
        for keys in self.key_files:
            keys.start(self.metrics)

    def done(self) -> None:
        for keys in self.key_files:
            keys.stop()
