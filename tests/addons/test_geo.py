"""GeoIP against small .mmdb files the tests build themselves (GeoLite2 and DB-IP layouts)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from addons.geo import GeoIP, country_of, normalise_ip
from gateway.config import ConfigError, load_settings
from gateway.events import Touchpoint
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.pipeline import Exchange, Geo, Pipeline, RequestView, build_pipeline
from tests.addons.conftest import FIXED_TS
from tests.conftest import ENV

CHROME = {
    "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "accept-language": "en",
    "sec-ch-ua": '"Chromium";v="131"',
    "sec-fetch-dest": "document",
}


def write_mmdb(
    path: Path, database_type: str, networks: dict[str, dict[str, object]], v6: bool = True
) -> Path:
    writer = MMDBWriter(ip_version=6 if v6 else 4, ipv4_compatible=v6, database_type=database_type)
    for cidr, record in networks.items():
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def dbs(tmp_path: Path) -> Path:
    """A GeoLite2-City-layout file and a GeoLite2-ASN-layout file, both IPv6 with IPv4 inside."""
    write_mmdb(
        tmp_path / "city.mmdb",
        "GeoLite2-City",
        {
            "198.51.100.0/24": {"country": {"iso_code": "DE"}, "subdivisions": [{"iso_code": "BY"}]},
            "203.0.113.0/24": {"country": {"iso_code": "FR"}},
            "2001:db8::/32": {"country": {"iso_code": "NL"}},
        },
    )
    write_mmdb(
        tmp_path / "asn.mmdb",
        "GeoLite2-ASN",
        {
            "198.51.100.0/24": {"autonomous_system_number": 3320, "autonomous_system_organization": "DTAG"},
            "203.0.113.0/24": {
                "autonomous_system_number": 16509,
                "autonomous_system_organization": "AMAZON-02",
            },
            "2001:db8::/32": {"autonomous_system_number": 64500, "autonomous_system_organization": "DOC"},
        },
    )
    return tmp_path


async def started(dbs: Path, toml: str = "") -> Pipeline:
    text = f'[geo]\ncountry_db = "{dbs / "city.mmdb"}"\nasn_db = "{dbs / "asn.mmdb"}"\n' + textwrap.dedent(
        toml
    )
    settings = load_settings(None, text=text, environ=ENV)
    pipe = build_pipeline(settings, Metrics(), Keys.from_master(settings.secret))
    await pipe.running()
    return pipe


def geo_of(pipe: Pipeline) -> GeoIP:
    return next(addon for name, addon in pipe.addons if name == "geo")  # type: ignore[return-value]


def landing(ip: str, target: str = "/?utm_source=ig") -> Exchange:
    path, _, query = target.partition("?")
    return Exchange(RequestView("GET", "https", "shop.example", path, query, CHROME, ip, FIXED_TS))


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("198.51.100.20", Geo("DE", "DE-BY", 3320)),
        ("::ffff:198.51.100.20", Geo("DE", "DE-BY", 3320)),  # IPv4-mapped: normalised first
        ("203.0.113.9", Geo("FR", None, 16509)),
        ("2001:db8::1", Geo("NL", None, 64500)),
        ("192.0.2.1", None),  # not in the files
        ("not-an-ip", None),
    ],
)
async def test_lookup(dbs: Path, ip: str, expected: Geo | None) -> None:
    pipe = await started(dbs)
    assert geo_of(pipe).lookup(ip) == expected
    await pipe.done()


async def test_touchpoint_gets_country_region_asn_and_datacenter_signal(dbs: Path) -> None:
    pipe = await started(dbs)
    home = landing("198.51.100.20")
    await pipe.request(home)
    (tp,) = [e for e in home.events if isinstance(e, Touchpoint)]
    assert (tp.country, tp.region, tp.asn, tp.verdict, tp.reasons) == ("DE", "DE-BY", 3320, "allow", [])
    cloud = landing("203.0.113.9")
    await pipe.request(cloud)
    (tp,) = [e for e in cloud.events if isinstance(e, Touchpoint)]
    assert (tp.country, tp.asn, tp.reasons, tp.verdict) == ("FR", 16509, ["datacenter"], "review")
    await pipe.done()


async def test_assets_are_not_looked_up(dbs: Path) -> None:
    pipe = await started(dbs)
    ex = Exchange(
        RequestView(
            "GET", "https", "shop.example", "/app.css", "", {"sec-fetch-dest": "style"}, "198.51.100.2"
        )
    )
    await pipe.request(ex)
    assert ex.geo is None
    await pipe.done()


@pytest.fixture
def dbip(tmp_path: Path) -> Path:
    return write_mmdb(
        tmp_path / "dbip.mmdb",
        "DBIP-Country-Lite",
        {
            "192.0.2.0/24": {
                "country": {"iso_code": "JP", "names": {"en": "Japan"}},
                "continent": {"code": "AS"},
            }
        },
        v6=False,
    )


async def test_dbip_country_layout_ipv4_only_file(tmp_path: Path, dbip: Path) -> None:
    pipe = await started(tmp_path, "")  # asn.mmdb is missing here: only the country lookup runs
    geo = geo_of(pipe)
    assert geo.lookup("192.0.2.5") is None  # city.mmdb is missing too
    await pipe.done()
    settings = load_settings(None, text=f'[geo]\ncountry_db = "{tmp_path / "dbip.mmdb"}"\n', environ=ENV)
    pipe = build_pipeline(settings, Metrics(), Keys.from_master(settings.secret))
    await pipe.running()
    assert geo_of(pipe).lookup("192.0.2.5") == Geo("JP", None, None)
    assert geo_of(pipe).lookup("2001:db8::1") is None  # IPv6 in an IPv4-only file: nothing, no error
    await pipe.done()


async def test_an_ipv4_only_country_file_does_not_hide_the_asn_of_an_ipv6_client(
    dbs: Path, dbip: Path
) -> None:
    text = f'[geo]\ncountry_db = "{dbip}"\nasn_db = "{dbs / "asn.mmdb"}"\n'
    settings = load_settings(None, text=text, environ=ENV)
    pipe = build_pipeline(settings, Metrics(), Keys.from_master(settings.secret))
    await pipe.running()
    assert geo_of(pipe).lookup("2001:db8::1") == Geo(None, None, 64500)
    await pipe.done()


async def test_missing_file_warns_once_and_turns_lookups_off(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, "gateway.geo")
    pipe = await started(tmp_path)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        f"geo: not found: geo.country_db {tmp_path / 'city.mmdb'}, geo.asn_db {tmp_path / 'asn.mmdb'}; "
        "geo lookups are off"
    ]
    ex = landing("198.51.100.20")
    await pipe.request(ex)
    assert ex.geo is None
    await pipe.done()


def test_no_database_configured_leaves_the_chain(caplog) -> None:
    caplog.set_level(logging.INFO, "gateway.geo")
    settings = load_settings(None, text="", environ=ENV)
    pipe = build_pipeline(settings, Metrics(), Keys.from_master(settings.secret))
    assert [name for name, _ in pipe.addons] == ["identity", "campaign", "bots"]
    # At info: the default, a choice, not a fault to page anyone for (a warning until 2026-12-07).
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "geo: no database configured ([geo] country_db, asn_db): geo lookups are off")
    ]


def test_corrupt_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "bad.mmdb").write_bytes(b"this is not a MaxMind database" * 10)
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=f'[geo]\ncountry_db = "{tmp_path / "bad.mmdb"}"\n', environ=ENV)
    (problem,) = info.value.problems
    assert problem.startswith(f"geo.country_db: cannot read {tmp_path / 'bad.mmdb'} as a MaxMind database")


def test_asn_db_must_be_an_asn_database(dbs: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=f'[geo]\nasn_db = "{dbs / "city.mmdb"}"\n', environ=ENV)
    assert info.value.problems == [
        f"geo.asn_db: {dbs / 'city.mmdb'} is a 'GeoLite2-City' database, not an ASN one"
    ]


def test_country_db_must_not_be_an_asn_database(dbs: Path, tmp_path: Path) -> None:
    """The two keys swapped: an ASN file named as the country database has no country in it, and
    used to be taken silently, every touchpoint without a country (the other way round was
    refused already)."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=f'[geo]\ncountry_db = "{dbs / "asn.mmdb"}"\n', environ=ENV)
    assert info.value.problems == [
        f"geo.country_db: {dbs / 'asn.mmdb'} is a 'GeoLite2-ASN' database, not a Country or City one"
        " (an ASN database goes in geo.asn_db)"
    ]
    dbip_asn = write_mmdb(tmp_path / "dbip-asn.mmdb", "DBIP-ASN-Lite (compat=GeoLite2-ASN)", {})
    with pytest.raises(ConfigError, match=r"geo\.country_db: .* is a 'DBIP-ASN-Lite"):
        load_settings(None, text=f'[geo]\ncountry_db = "{dbip_asn}"\n', environ=ENV)
    for kind in ("GeoLite2-Country", "GeoIP2-City", "DBIP-Country-Lite", "DBIP-City-Lite"):
        good = write_mmdb(tmp_path / f"{kind}.mmdb", kind, {})
        load_settings(None, text=f'[geo]\ncountry_db = "{good}"\n', environ=ENV)


def test_relative_paths_are_relative_to_the_config_file(dbs: Path) -> None:
    (dbs / "gw.toml").write_text('[geo]\nasn_db = "city.mmdb"\n')
    with pytest.raises(ConfigError, match=r"geo\.asn_db: .*city\.mmdb is a 'GeoLite2-City' database"):
        load_settings(dbs / "gw.toml", environ=ENV)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"country": {"iso_code": "DE"}}, ("DE", None)),
        ({"registered_country": {"iso_code": "US"}}, ("US", None)),
        (
            {"country": {"iso_code": "DE"}, "subdivisions": [{"iso_code": "BE"}, {"iso_code": "X"}]},
            ("DE", "DE-BE"),
        ),
        ({"country": "weird"}, (None, None)),
        (None, (None, None)),
        ("text", (None, None)),
    ],
)
def test_country_of(record: object, expected: tuple[str | None, str | None]) -> None:
    assert country_of(record) == expected


def test_normalise_ip() -> None:
    assert normalise_ip("::ffff:10.0.0.1") == "10.0.0.1"
    assert normalise_ip("::ffff:a00:1") == "::ffff:a00:1"
    assert normalise_ip("2001:db8::1") == "2001:db8::1"


async def test_one_missing_file_turns_only_its_lookups_off(dbip: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, "gateway.geo")
    text = f'[geo]\ncountry_db = "{dbip}"\nasn_db = "{tmp_path / "gone.mmdb"}"\n'
    settings = load_settings(None, text=text, environ=ENV)
    pipe = build_pipeline(settings, Metrics(), Keys.from_master(settings.secret))
    await pipe.running()
    assert [r.getMessage() for r in caplog.records] == [
        f"geo: not found: geo.asn_db {tmp_path / 'gone.mmdb'}; lookups from it are off"
    ]
    assert geo_of(pipe).lookup("192.0.2.5") == Geo("JP", None, None)
    await pipe.done()


async def test_a_folded_reload_is_looked_up_as_the_landing_it_repeats(dbs: Path) -> None:
    """A reload campaign folds (``campaign.repeat_seconds``) stores no touchpoint, but bots
    blocks it as the landing it is: from a hosting network with ``on_review = "block"``, a
    reload that says nothing of being a page load (a script's) is answered 403 as its first
    load was, the datacenter signal included."""
    pipe = await started(dbs, '[bots]\non_review = "block"\n')
    first = landing("203.0.113.9")
    await pipe.request(first)
    assert first.reply is not None and first.reply.status == 403
    await pipe.response(first)
    [cookie] = first.set_cookies
    headers = {k: v for k, v in CHROME.items() if k != "sec-fetch-dest"}
    headers["cookie"] = f"{cookie.name}={cookie.value}"
    path, _, query = "/?utm_source=ig".partition("?")
    again = Exchange(
        RequestView("GET", "https", "shop.example", path, query, headers, "203.0.113.9", FIXED_TS)
    )
    await pipe.request(again)
    assert again.folded is not None and again.geo is not None and again.geo.asn == 16509
    assert again.reply is not None and again.reply.status == 403
    await pipe.done()
