"""The keys JWT sources of identity and conversion rules verify with, loaded once at start-up.

Owns ``rule_sources`` (every source of every rule, with its TOML key) and
``resolve_rule_keys``: an HMAC secret from the environment, or a PEM public key or a key
set from the environment or a file, each parsed for its algorithm now; a problem names the
source's ``key``. Reads the environment and the key files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.config_values import in_the_file, not_utf8, path_problem, special_file, unset
from gateway.ruleconfig import JWT_ALGORITHMS, ConversionRule, IdentityRule, Source


def rule_sources(
    identity_rules: Sequence[IdentityRule], conversions: Sequence[ConversionRule]
) -> list[tuple[str, Source]]:
    """Every source of every rule, with its TOML key (``identity.rules[0].user_id``)."""
    found: list[tuple[str, Source]] = []
    for i, identity in enumerate(identity_rules):
        found.append((f"identity.rules[{i}].user_id", identity.user_id))
        found.extend((f"identity.rules[{i}].when[{k}]", c) for k, c in enumerate(identity.when))
    for i, rule in enumerate(conversions):
        for name in ("value", "currency", "order_id"):
            value = getattr(rule, name)
            if isinstance(value, Source):
                found.append((f"conversions[{i}].{name}", value))
        found.extend((f"conversions[{i}].when[{k}]", c) for k, c in enumerate(rule.when))
    return found


def resolve_rule_keys(
    sources: Sequence[tuple[str, Source]], environ: Mapping[str, str], base_dir: Path, problems: list[str]
) -> dict[str, bytes]:
    """Each JWT source's key: an HMAC secret from the environment, or a PEM public key or a
    key set (from the environment or a file), checked against its algorithm now rather than
    per request."""
    from addons.jwks import parse_key_set, read_key_file  # the keys the rules use

    keys: dict[str, bytes] = {}
    for at, source in sources:
        if not source.key or source.algorithm not in JWT_ALGORITHMS:
            continue
        key = f"{at}.key"
        raw: bytes
        if source.key.startswith("env:"):
            value = environ.get(source.key[4:], "")
            if bad := not_utf8(source.key[4:], value):
                problems.append(f"{key}: {bad}")
                continue
            if not value:
                problems.append(f"{key}: {unset(source.key[4:], environ)}")
                continue
            raw = value.encode()
        elif source.algorithm.startswith("HS"):
            problems.append(f"{key}: {in_the_file(source.key, 'an HMAC secret is')}")
            continue
        elif bad := path_problem(source.key):
            problems.append(f"{key}: {bad}")
            continue
        else:
            path = Path(source.key)
            path = path if path.is_absolute() else base_dir / path
            if what := special_file(path):
                problems.append(f"{key}: {source.key} is {what}, not a file; name the PEM or key set file")
                continue
            try:
                raw = read_key_file(path)  # as the running gateway reads it again (a pipe put there since)
            except OSError as err:
                problems.append(f"{key}: cannot read {source.key}: {err.strerror}")
                continue
            except ValueError as err:
                problems.append(f"{key}: {source.key}: {err}; name the PEM or key set file")
                continue
        try:
            parse_key_set(source.algorithm, raw)  # a PEM or key set for the algorithm, parsed now
        except ValueError as err:
            problems.append(f"{key}: {err}")
            continue
        keys[at] = raw
    return keys
