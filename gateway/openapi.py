"""The OpenAPI 3.1 document describing the admin API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from gateway.attribution import MODELS
from gateway.events import CONVERSION_ORIGINS, NAME, VERDICTS
from gateway.keys import MAX_VISITOR_ID
from storage.dashboard import PARTS

_NULLABLE_STR = {"type": ["string", "null"]}

TOUCHPOINT = {
    "type": "object",
    "required": [
        "id",
        "ts",
        "node",
        "visitor_key",
        "source",
        "medium",
        "campaign",
        "term",
        "content",
        "creator_id",
        "sub_id",
        "click_id_kind",
        "click_id",
        "referrer_host",
        "channel",
        "landing_path",
        "raw_params",
        "bot_score",
        "verdict",
        "reasons",
        "verdict_origin",
        "country",
        "region",
        "asn",
    ],
    "properties": {
        "id": {"type": "string", "description": "UUIDv7, time-ordered"},
        "ts": {"type": "string", "format": "date-time"},
        "node": {"type": "string"},
        "visitor_key": {"type": "string", "description": "keyed hash of the visitor ID"},
        **{
            name: _NULLABLE_STR
            for name in (
                "source",
                "medium",
                "campaign",
                "term",
                "content",
                "creator_id",
                "sub_id",
                "click_id_kind",
                "click_id",
                "referrer_host",
            )
        },
        "channel": {
            "type": ["string", "null"],
            "description": "marketing channel (Organic Search, Paid Social…); null: before channels",
        },
        "landing_path": {"type": "string"},
        "raw_params": {"type": "object", "additionalProperties": {"type": "string"}},
        "bot_score": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
        "verdict": {
            "enum": [*VERDICTS, None],
            "description": "effective verdict: an analyst's override (unless withdrawn), else the latest"
            " re-score, else as scored; null: not scored",
        },
        "reasons": {"type": "array", "items": {"type": "string"}, "description": "signal names"},
        "verdict_origin": {
            "enum": ["rescore", "analyst", None],
            "description": "what set the effective verdict; null: the scoring at the time",
        },
        "country": {**_NULLABLE_STR, "description": "ISO 3166-1 alpha-2"},
        "region": {**_NULLABLE_STR, "description": "ISO 3166-2, e.g. DE-BY"},
        "asn": {"type": ["integer", "null"]},
        "consent": {
            "enum": ["cookie", "cookieless", "no_consent"],
            "description": "population: the ID cookie, cookieless mode, or no consent (one-day key)",
        },
    },
}

_COUNTS = {
    "type": "object",
    "required": [*VERDICTS, "unscored"],
    "additionalProperties": False,
    "properties": {v: {"type": "number", "minimum": 0} for v in (*VERDICTS, "unscored")},
}

FRAUD_GROUP = {
    "type": "object",
    "required": ["key", "clicks", "verdicts", "shares", "top_reasons", "distinct_visitors", "distinct_ips"],
    "properties": {
        "key": {**_NULLABLE_STR, "description": "the creator ID, source or campaign (null: none)"},
        "clicks": {"type": "integer", "description": "touchpoints"},
        "verdicts": {**_COUNTS, "description": "touchpoints per effective verdict"},
        "shares": {**_COUNTS, "description": "share of clicks per effective verdict, 0..1"},
        "top_reasons": {
            "type": "array",
            "maxItems": 5,
            "items": {
                "type": "object",
                "required": ["reason", "count"],
                "properties": {"reason": {"type": "string"}, "count": {"type": "integer"}},
            },
        },
        "distinct_visitors": {"type": "integer"},
        "distinct_ips": {
            "type": "integer",
            "description": "through a keyed IP hash rotated daily: an IP seen on two days counts twice",
        },
    },
}

CREATOR = {
    "type": "object",
    "required": ["id", "verified", "name", "source", "analyst", "ts"],
    "properties": {
        "id": {"type": "string", "description": "the creator ID as it arrives in creator_id"},
        "verified": {"type": "boolean"},
        "name": {"type": "string"},
        "source": {"enum": ["config", "api"], "description": "[[creators]], or a standing set here"},
        "analyst": {**_NULLABLE_STR, "description": "who set the standing (api)"},
        "ts": {**_NULLABLE_STR, "description": "when (api)"},
    },
}

VERDICT_CHANGE = {
    "type": "object",
    "required": ["id", "ts", "node", "verdict", "bot_score", "reasons", "origin", "note", "analyst"],
    "properties": {
        "id": {"type": "string"},
        "ts": {"type": "string", "format": "date-time"},
        "node": {"type": "string"},
        "verdict": {"enum": list(VERDICTS)},
        "bot_score": {"type": ["integer", "null"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "origin": {
            "enum": ["rescore", "analyst", "analyst_cleared"],
            "description": "a late signal re-scored it; an analyst overrode it; an analyst withdrew"
            " the override (verdict, score and reasons: what it went back to)",
        },
        "note": {"type": "string", "description": "rescore: the late signal; analyst, analyst_cleared: why"},
        "analyst": {**_NULLABLE_STR, "description": "who decided (analyst changes and withdrawals)"},
    },
}


BAD_EVENT = {
    "type": "object",
    "required": ["id", "ts", "node", "sender", "reason", "body", "truncated", "replayed"],
    "properties": {
        "id": {"type": "string", "description": "UUIDv7, time-ordered"},
        "ts": {"type": "string", "format": "date-time", "description": "when it was received"},
        "node": {"type": "string"},
        "sender": {"type": "string", "description": "the [[sources]] name"},
        "reason": {"type": "string", "description": "every field error, separated by '; '"},
        "body": {"type": "string", "description": "the event as received (cut at webhooks.bad_body_limit)"},
        "truncated": {"type": "boolean"},
        "replayed": {**_NULLABLE_STR, "description": "when gateway replay-bad ingested it"},
    },
}

CONVERSION = {
    "type": "object",
    "required": ["id", "ts", "node", "name", "dedup_key", "visitor_key", "user_key", "value", "currency"],
    "properties": {
        "id": {"type": "string"},
        "ts": {"type": "string", "format": "date-time"},
        "node": {"type": "string"},
        "name": {"type": "string"},
        "dedup_key": {
            "type": "string",
            "description": "order:<order id> (order/<scope>:<order id> under an order_scope),"
            " or a per-visitor window",
        },
        "visitor_key": _NULLABLE_STR,
        "user_key": _NULLABLE_STR,
        "value": {"type": ["number", "null"]},
        "currency": _NULLABLE_STR,
        "order_id": _NULLABLE_STR,
        "origin": {"type": "string", "description": "rule, webhook, segment or import"},
        "rule": {"type": "string"},
    },
}

_CREDIT = {
    "channel": {"type": "string"},
    "currency": _NULLABLE_STR,
    "conversions": {"type": "number", "description": "credited conversions (fractions of one)"},
    "value": {"type": "number", "description": "credited value in major units of currency"},
}
_CREDIT_REQUIRED = ["channel", "currency", "conversions", "value"]
_TOP = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "touchpoints", "visitors", "not_credited", "conversions"],
        "properties": {
            "name": {"type": "string"},
            "touchpoints": {
                "type": "integer",
                "description": "landings in the period the reports credit (effective bot verdict in"
                " attribution.verdicts): what the table ranks by",
            },
            "visitors": {"type": "integer", "description": "distinct visitors of those landings"},
            "not_credited": {
                "type": "integer",
                "description": "landings in the period left out: a bot verdict the reports do not credit"
                " (block, review…)",
            },
            "conversions": {
                "type": "integer",
                "description": "the period's conversions with a landing of this name on any of the "
                "converter's devices inside the widest lookback window",
            },
        },
    },
}

_COUNTS_PART = [
    "conversion_names",
    "totals",
    "top_campaigns",
    "top_creators",
    "landed",
    "not_credited",
    "bots",
    "populations",
]
"""What ``part=counts`` answers, besides what every part does."""

DASHBOARD_SUMMARY = {
    "type": "object",
    "required": ["ok", "since", "until", "model", "models", "conversion", "population", "source"],
    # Every part (no part asked for), or the one asked for.
    "anyOf": [
        {"required": _COUNTS_PART},
        {"required": ["days", "by_day"]},
        {"required": ["comparison", "learnt"]},
    ],
    "properties": {
        "ok": {"const": True},
        "since": {"type": "string", "format": "date"},
        "until": {"type": "string", "format": "date", "description": "exclusive"},
        "model": {"type": "string"},
        "models": {"type": "array", "items": {"type": "string"}},
        "conversion": {
            "type": ["string", "null"],
            "description": "the conversion name the numbers are of (null: every conversion)",
        },
        "population": {
            "enum": ["cookie", "cookieless", "no_consent", None],
            "description": "the population whose touchpoints the credits are of (null: every one)",
        },
        "source": {
            "enum": ["local", "mirror"],
            "description": "the store the summary read, as the reports say it: this node's own"
            " (storage.path), or the reporting mirror of every node's rows (central.mirror_path)",
        },
        "conversion_names": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the period's conversion names, most frequent first",
        },
        "totals": {
            "type": "object",
            "required": ["touchpoints", "visitors", "not_credited", "conversions"],
            "additionalProperties": {"type": "integer"},
            "properties": {
                "touchpoints": {
                    "type": "integer",
                    "description": "the period's landings the reports credit (effective bot verdict in"
                    " attribution.verdicts)",
                },
                "visitors": {"type": "integer", "description": "distinct visitors of those landings"},
                "not_credited": {
                    "type": "integer",
                    "description": "the period's landings left out: a bot verdict the reports do not"
                    " credit (bots counts every landing by verdict)",
                },
                "conversions": {"type": "integer", "description": "every population's"},
                "population_conversions": {
                    "type": "integer",
                    "description": "with population: the conversions its touchpoints reach (one of"
                    " them on a converter's device inside the widest lookback window, at or before"
                    " the conversion), those its credits share out",
                },
            },
        },
        "days": {
            "type": "array",
            "items": {"type": "string", "format": "date"},
            "description": "with by_day: the period's days in attribution.timezone, in order, the"
            " daily chart's; a date the zone skipped whole (Pacific/Apia's 2011-12-30) is none",
        },
        "by_day": {
            "type": "array",
            "description": "credits under model, per conversion day, channel and currency",
            "items": {
                "type": "object",
                "required": ["day", *_CREDIT_REQUIRED],
                "properties": {"day": {"type": "string", "format": "date"}, **_CREDIT},
            },
        },
        "comparison": {
            "type": "array",
            "description": "credits over the whole period per model, channel and currency",
            "items": {
                "type": "object",
                "required": ["model", *_CREDIT_REQUIRED],
                "properties": {"model": {"type": "string"}, **_CREDIT},
            },
        },
        "learnt": {
            "allOf": [{"$ref": "#/components/schemas/Learnt"}],
            "description": "with comparison: what data_driven learnt from the period's journeys"
            " (of the conversion and the population asked for, under attribution.verdicts), as"
            " /api/attribution?model=data_driven says it for the same days",
        },
        "top_campaigns": _TOP,
        "top_creators": _TOP,
        "landed": {
            "type": "object",
            "description": "how many campaigns and creators the period's landings name in all (the"
            " top tables list the 10 most landed)",
            "required": ["campaigns", "creators"],
            "properties": {"campaigns": {"type": "integer"}, "creators": {"type": "integer"}},
        },
        "not_credited": {
            "type": "object",
            "description": "the landings of every campaign (creator) of the period that the top tables"
            " leave out: a bot verdict the reports do not credit",
            "required": ["campaigns", "creators"],
            "properties": {"campaigns": {"type": "integer"}, "creators": {"type": "integer"}},
        },
        "bots": {
            "type": "object",
            "required": ["scored", "verdicts"],
            "properties": {
                "scored": {
                    "type": "boolean",
                    "description": "false: no bot verdicts recorded, every touchpoint counts as allow",
                },
                "verdicts": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "populations": {
            "type": "object",
            "description": "landings per population: cookie, cookieless, no_consent, and aggregate "
            "(Sec-GPC/DNT daily counts); each named, 0 when it has none",
            "required": ["cookie", "cookieless", "no_consent", "aggregate"],
            "additionalProperties": {"type": "integer"},
        },
    },
}

# ISO 8601 as the API reads it: every day of the Gregorian calendar from 1970 to 9999, each
# month its own length, 29 February in leap years. A client that checks its requests against
# the document (a generated one) must be able to ask for 31 October: this was 1971..9998 and
# days up to 28, which refused 2026-10-31 and every 1970 date. The API's bounds as instants
# (a zone can push 1970-01-01 before 1970-01-01T00:00Z) are no pattern's to say: the operations
# taking dates are those whose rules the document does not state whole (tests/gateway/
# test_admin_schema.py NOT_EXACT).
_YEAR = r"(19[7-9][0-9]|[2-9][0-9]{3})"
_MONTH_DAY = (
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_YEAR = r"(19(7[26]|8[048]|9[26])|[2-9][0-9](0[48]|[2468][048]|[13579][26])|([2468][048]|[3579][26])00)"
_DATE = f"({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
# T and Z in either case (RFC 3339), and 24:00 (the day's end: the next day's midnight).
_TIME = (
    r"[Tt](([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?|24:00(:00(\.0{1,6})?)?)"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?"
)
DAY = {"type": "string", "pattern": f"^{_DATE}$"}
MOMENT = {"type": "string", "pattern": f"^{_DATE}({_TIME})?$"}
UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CURSOR = {"type": "string", "pattern": UUID}
NEWEST_CURSOR = "newest."
"""What marks the cursor of an ``order=newest`` listing page (before the row's id)."""
ORDERS = ("oldest", "newest")
"""A listing's orders (``order=``), the default first."""
FEED_ORDERS = (*ORDERS, "stored")
"""The orders of ``/api/touchpoints`` and ``/api/conversions``: also ``stored``, the order the
rows were stored in (``storage.feed``), to follow new rows."""


def stored_cursor_pattern(table: str) -> str:
    """An ``order=stored`` page's cursor of ``/api/<table>`` (``storage.feed.StoredCursor``):
    the listing named in it, as one of the other listing is refused."""
    return f"stored\\.{table}\\.[0-9]{{1,19}}\\.[0-9]{{1,19}}(\\." + UUID[1:-1] + ")?"


# IDs in a path may be written in capitals too (the API lowers them: RFC 9562 §4).
TOUCHPOINT_ID = {
    "type": "string",
    "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
}
TOUCHPOINT_PARAMETERS = [{"name": "touchpoint_id", "in": "path", "required": True, "schema": TOUCHPOINT_ID}]
"""The path parameter of every ``/api/touchpoints/{touchpoint_id}/verdict`` operation."""
ANALYST = {"type": "string", "minLength": 1, "maxLength": 100}
"""Who decided an analyst's change (a verdict's override or withdrawal, a creator's standing)."""
ANALYST_REASON = {"type": "string", "minLength": 1, "maxLength": 1000}
"""Why, as ``ANALYST`` says who."""
# A touchpoint listing's exact filter: a value as touchpoints record it (printable, without
# spaces around it; the API refuses anything else, as no touchpoint could match it).
_CONTROL = "\\u0000-\\u001f\\u007f-\\u009f"
FILTER = {
    "type": "string",
    "minLength": 1,
    "pattern": f"^[^\\s{_CONTROL}]([^{_CONTROL}]*[^\\s{_CONTROL}])?$",
}
VISITOR_KEY = {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}
# A visitor_key (32 hex digits, in any case), a raw visitor ID (the cookie's 22 characters, or
# any a sender or an import named: printable, at most MAX_VISITOR_ID), or the cookie value.
VISITOR_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_VISITOR_ID,
    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
}

USER_ID = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "description": "the site's raw user ID (keyed internally; percent-encode a /)",
    "schema": {"type": "string"},
}
USER_LOOKUP_ID = {
    **USER_ID,
    "description": "the site's raw user ID (keyed internally; percent-encode a /), or a user_key as"
    " a journey or the conversions download shows it (32 hex digits, siv:…, id:…): a text of a"
    " key's shape is read as a user_key first, then as a raw ID",
}

ERASED_ROWS = {"type": "object", "additionalProperties": {"type": "integer"}}
"""An erasure's answer: rows erased per table (a user's, a visitor's)."""
ELSEWHERE = {
    "type": "array",
    "items": {"type": "string"},
    "description": "where else the erased rows are, by what the config has, as gateway erase says"
    " it: the central store and the other nodes (reached by the sync), the sinks' destinations"
    " (what they were sent stays there: delete it there, by the userId named: under"
    ' identity.user_id_storage = "hash" the user_key); empty with neither',
}
"""An erasure's answer: where else its rows are (``gateway.usernames.erasure_reach``)."""

CONVERSIONS_TRUNCATED = {
    "type": "boolean",
    "description": "there are more conversions than listed (the earliest 1000 in time are)",
}
"""A journey's answer: whether its conversions were cut (``storage.queries.Reader._conversions``)."""

ERROR = {
    "type": "object",
    "required": ["ok", "status", "error"],
    "properties": {
        "ok": {"const": False},
        "status": {"type": "integer"},
        "error": {"type": "string"},
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    """Error answers by status. 503 belongs to every operation that reads or writes a store:
    the error middleware answers it when the store stays busy past its timeout (an import
    holds the write lock) and when the central store is out of reach (``admin.source``). 429
    belongs to every one behind the token (401): an address that sent too many wrong tokens is
    refused a while (``gateway/lockout.py``), and so does 403: a dashboard session's cookie
    alone is refused on a write, and on a read another origin's page made. 421 belongs to every
    one: a ``Host`` that is not one of the listener's names (``admin.hosts``,
    ``gateway/adminhosts.py``)."""
    return {
        str(code): {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in sorted({*codes, 421, *((403, 429) if 401 in codes else ())})
    }


def query_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """An optional query parameter of an operation, its value a string unless ``schema`` says."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_PERIOD = [
    query_param(
        "since",
        "ISO 8601 date or date-time, inclusive; before until when both are given, before now when"
        " until is left out (else a 400, not an empty page)",
        MOMENT,
    ),
    query_param("until", "ISO 8601 date or date-time, exclusive", MOMENT),
]
"""A listing's period."""
_PAGING = [
    query_param("cursor", "next_cursor of the previous page", CURSOR),
    query_param(
        "limit", "page size 1..1000 (default 100)", {"type": "integer", "minimum": 1, "maximum": 1000}
    ),
]
"""A listing's page: where it starts and how long it is."""
_ORDERED_PAGING = [
    query_param(
        "cursor",
        "next_cursor of the previous page, in the order it came from (an order=newest page's"
        " starts newest.; a 400 with the other order)",
        {"type": "string", "pattern": UUID.replace("^", "^(newest\\.)?", 1)},
    ),
    _PAGING[1],
    query_param(
        "order",
        "oldest (default): oldest first; newest: newest first, the cursor moving back in time,"
        " a listing's download too",
        {"type": "string", "enum": list(ORDERS)},
    ),
]
"""A row listing's page (touchpoints, conversions, the review queue, bad events): ``_PAGING`` in
either order."""


def _feed_paging(table: str) -> list[dict[str, Any]]:
    """The ordered page of a listing that can follow new rows (``/api/<table>``: touchpoints,
    conversions)."""
    return [
        query_param(
            "cursor",
            "next_cursor of the previous page, in the order it came from (an order=newest page's"
            f" starts newest., an order=stored page's stored.{table}.; a 400 with another order,"
            " or another listing's); with order=stored, a download's Next-Cursor header too",
            {
                "type": "string",
                "pattern": f"^((newest\\.)?{UUID[1:-1]}|{stored_cursor_pattern(table)})$",
            },
        ),
        _PAGING[1],
        query_param(
            "order",
            "oldest (default): oldest first; newest: newest first, the cursor moving back in time;"
            " stored: in the order the rows were stored (committed), to follow new rows: a row"
            " committed after a page was read comes on a later page whatever its id, and"
            " next_cursor is never null (a page shorter than limit: none more yet; ask again with"
            " it later). A listing's download too",
            {"type": "string", "enum": list(FEED_ORDERS)},
        ),
    ]


FORMATS = ("json", "csv", "ndjson")
"""What a report or a listing comes in (``format=``)."""
BOM = query_param(
    "bom",
    "true: a CSV download starts with a UTF-8 byte order mark, for Excel opened by a double click "
    "(default false; a 400 with another format)",
    {"type": "string", "enum": ["true", "false"]},
)
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
"""What separates a CSV's cells (``delimiter=``): its name → the character."""
DELIMITER = query_param(
    "delimiter",
    "what separates a CSV download's cells: comma (default), semicolon (Excel where the list "
    "separator is ;: German, French, Dutch, Italian, Spanish) or tab; decimals keep the point "
    "(a 400 with another format than csv, unless comma)",
    {"type": "string", "enum": list(DELIMITERS)},
)
_DOWNLOAD = [
    query_param(
        "format",
        "json (default): a page; csv or ndjson: every row of the period from cursor on, as a download"
        " (limit is then refused)",
        {"type": "string", "enum": list(FORMATS)},
    ),
    BOM,
    DELIMITER,
]
"""A listing's download: the whole period as CSV or NDJSON instead of a page."""


def _page_of(
    item: dict[str, Any], description: str = "a page", downloads: bool = False, feed: str | None = None
) -> dict[str, Any]:
    """The 200 answer of a listing: a page of ``item``s and the next page's cursor; with
    ``downloads``, also every row as CSV or NDJSON (``_DOWNLOAD``); with ``feed`` (the table
    of a listing with ``order=stored``), a download's ``Next-Cursor`` header."""
    page = {
        "type": "object",
        "required": ["ok", "items", "next_cursor"],
        "properties": {
            "ok": {"const": True},
            "items": {"type": "array", "items": item},
            "next_cursor": _NULLABLE_STR,
        },
    }
    content: dict[str, Any] = {"application/json": {"schema": page}}
    if downloads:
        content |= {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        }
    answer = {"description": description, "content": content}
    if feed:
        answer["headers"] = {
            "Next-Cursor": {
                "description": "order=stored, a download: the cursor of the next download (the"
                " rows stored since this one began)",
                "schema": {"type": "string", "pattern": f"^{stored_cursor_pattern(feed)}$"},
            }
        }
    return answer


def analyst_body(**fields: dict[str, Any]) -> dict[str, Any]:
    """A verdict operation's JSON body: ``fields`` first, then who acts and why (required)."""
    properties = {**fields, "analyst": ANALYST, "reason": ANALYST_REASON}
    schema = {"type": "object", "required": list(properties), "additionalProperties": False}
    return {
        "required": True,
        "content": {"application/json": {"schema": {**schema, "properties": properties}}},
    }


def verdict_history(description: str) -> dict[str, Any]:
    """A touchpoint's effective verdict and its every change, oldest first (read and override)."""
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["ok", "touchpoint", "changes"],
                    "properties": {
                        "ok": {"const": True},
                        "touchpoint": {"$ref": "#/components/schemas/Touchpoint"},
                        "changes": {"type": "array", "items": {"$ref": "#/components/schemas/VerdictChange"}},
                    },
                }
            }
        },
    }


def _touchpoint_filters(creator: str) -> list[dict[str, Any]]:
    """A touchpoint listing's exact filters (``/api/touchpoints``, ``/api/review``)."""
    return [
        query_param("source", "exact source (case-folded)", FILTER),
        query_param("medium", "exact medium (case-folded)", FILTER),
        query_param("campaign", "exact campaign", FILTER),
        query_param("creator_id", creator, FILTER),
        query_param("visitor_key", "exact visitor key (32 hex digits, in any case)", VISITOR_KEY),
    ]


def openapi_document() -> dict[str, Any]:
    from gateway import openapi_reports  # it reads the parameter formats defined here

    touchpoint_ref = {"$ref": "#/components/schemas/Touchpoint"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "tracking-gateway admin API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Touchpoint": TOUCHPOINT,
                "Conversion": CONVERSION,
                "BadEvent": BAD_EVENT,
                "Error": ERROR,
                "FraudGroup": FRAUD_GROUP,
                "VerdictChange": VERDICT_CHANGE,
                "Creator": CREATOR,
                **openapi_reports.SCHEMAS,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness; no token needed",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "alive: `ok`, or `degraded` while the store's latest"
                            " commit failed (the site is served, events are lost) or another"
                            " connection holds its write lock (events are queued; asked on each"
                            " call, waiting at most 0.25 s for the lock)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok", "status", "node"],
                                        "properties": {
                                            "ok": {"const": True},
                                            "status": {"enum": ["ok", "degraded"]},
                                            "node": {"type": "string"},
                                            "store": {"type": "string"},
                                            "failing_since": {"type": "string", "format": "date-time"},
                                            "readers_failing": {
                                                "type": "object",
                                                "description": "the readers of the log failing now"
                                                " (central, mirror, sink:<name>), each since its"
                                                " first failure in a row, with its attempts; the"
                                                " status is not changed (nothing is lost), the log"
                                                " says the problem",
                                                "additionalProperties": {
                                                    "type": "object",
                                                    "required": ["failing_since", "attempts"],
                                                    "properties": {
                                                        "failing_since": {
                                                            "type": "string",
                                                            "format": "date-time",
                                                        },
                                                        "attempts": {"type": "integer", "minimum": 1},
                                                    },
                                                },
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(503),  # the store's writer stopped; a stop draining (proxy.drain_seconds)
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {"description": "metrics", "content": {"text/plain": {}}},
                        **_errors(401),
                    },
                }
            },
            "/api/touchpoints": {
                "get": {
                    "summary": "Touchpoints in time order (oldest or newest first) or as stored, filtered,"
                    " paged",
                    "parameters": [
                        *_PERIOD,
                        *_touchpoint_filters("exact creator ID"),
                        *_feed_paging("touchpoints"),
                        *_DOWNLOAD,
                    ],
                    "responses": {
                        "200": _page_of(touchpoint_ref, downloads=True, feed="touchpoints"),
                        **_errors(400, 401, 503),
                    },
                }
            },
            "/api/conversions": {
                "get": {
                    "summary": "Conversions in time order (oldest or newest first) or as stored, filtered,"
                    " paged",
                    "parameters": [
                        *_PERIOD,
                        *(
                            query_param(name, what, {**FILTER, "maxLength": 200})
                            for name, what in (
                                ("name", "exact conversion name (signup, purchase…)"),
                                ("rule", "exact rule or sender that recorded it"),
                            )
                        ),
                        query_param(
                            "origin",
                            "what recorded it: rule, webhook, segment or import",
                            {"type": "string", "enum": list(CONVERSION_ORIGINS)},
                        ),
                        *_feed_paging("conversions"),
                        *_DOWNLOAD,
                    ],
                    "responses": {
                        "200": _page_of(
                            {"$ref": "#/components/schemas/Conversion"}, downloads=True, feed="conversions"
                        ),
                        **_errors(400, 401, 503),
                    },
                }
            },
            "/api/visitors/{visitor_id}": {
                "get": {
                    "summary": "A visitor's first touch, last touch, every touchpoint and its conversions",
                    "parameters": [
                        {
                            "name": "visitor_id",
                            "in": "path",
                            "required": True,
                            "description": "visitor_key, raw visitor ID (the cookie's, or one a"
                            " signed event or an import named), or the cookie value",
                            "schema": VISITOR_ID,
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the journey",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": [
                                            "ok",
                                            "visitor_key",
                                            "first_touch",
                                            "last_touch",
                                            "touchpoints",
                                            "conversions",
                                        ],
                                        "properties": {
                                            "ok": {"const": True},
                                            "visitor_key": {"type": "string"},
                                            "first_seen": {"type": "string"},
                                            "last_seen": {"type": "string"},
                                            "touch_count": {"type": "integer"},
                                            "first_touch": {"oneOf": [touchpoint_ref, {"type": "null"}]},
                                            "last_touch": {"oneOf": [touchpoint_ref, {"type": "null"}]},
                                            "touchpoints": {
                                                "type": "array",
                                                "items": touchpoint_ref,
                                                "description": "in time order; at most the first 1000",
                                            },
                                            "conversions": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Conversion"},
                                                "description": "recorded on this visitor, in time order; "
                                                "at most the first 1000",
                                            },
                                            "truncated": {
                                                "type": "boolean",
                                                "description": "there are more touchpoints than listed",
                                            },
                                            "conversions_truncated": CONVERSIONS_TRUNCATED,
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 404, 503),
                    },
                },
                "delete": {
                    "summary": "Erase the visitor: its touchpoints, the conversions recorded on it, the kept"
                    " bad events naming it (its bindings to users stay: a user's erasure takes them)",
                    "parameters": [
                        {
                            "name": "visitor_id",
                            "in": "path",
                            "required": True,
                            "description": "as the GET takes it; 32 hex digits erase both the visitor_key"
                            " and the raw ID",
                            "schema": VISITOR_ID,
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "rows erased per table",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": [
                                            "ok",
                                            "visitor_keys",
                                            "erased",
                                            "bound_users",
                                            "elsewhere",
                                        ],
                                        "properties": {
                                            "ok": {"const": True},
                                            "visitor_keys": {"type": "array", "items": {"type": "string"}},
                                            "erased": ERASED_ROWS,
                                            "bound_users": {
                                                "type": "integer",
                                                "description": "users the visitor is bound to: their"
                                                " bindings stay",
                                            },
                                            "elsewhere": ELSEWHERE,
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 503),
                    },
                },
            },
            "/api/bad-events": {
                "get": {
                    "summary": "Signed events that failed validation, with their reason, in time order"
                    " (oldest or newest first)",
                    "parameters": [
                        query_param(
                            "sender",
                            "only this [[sources]] sender's (its name: 1-64 of a-z 0-9 _ . -)",
                            {"type": "string", "pattern": f"^{NAME.pattern}$"},
                        ),
                        query_param("pending", "true: only those not replayed yet", {"type": "boolean"}),
                        *_ORDERED_PAGING,
                        query_param(
                            "format",
                            "json (default): a page; csv or ndjson: every event of the filters from"
                            " cursor on, body and reason opened as on a page, as a download (limit is"
                            " then refused)",
                            {"type": "string", "enum": list(FORMATS)},
                        ),
                        BOM,
                        DELIMITER,
                    ],
                    "responses": {
                        "200": _page_of({"$ref": "#/components/schemas/BadEvent"}, downloads=True),
                        **_errors(400, 401, 503),
                    },
                }
            },
            "/api/users/{user_id}": {
                "get": {
                    "parameters": [USER_LOOKUP_ID],
                    "summary": "A user's first touch, last touch, every touchpoint across their visitors, "
                    "and their conversions",
                    "responses": {
                        "200": {
                            "description": "the user's journey",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": [
                                            "ok",
                                            "user_key",
                                            "looked_up_as",
                                            "visitors",
                                            "first_touch",
                                            "last_touch",
                                            "touchpoints",
                                            "conversions",
                                        ],
                                        "properties": {
                                            "ok": {"const": True},
                                            "user_key": {
                                                "type": "string",
                                                "description": "the key the user's rows are kept under",
                                            },
                                            "looked_up_as": {
                                                "enum": ["user_id", "user_key"],
                                                "description": "how the path's text found the user: as"
                                                " a raw user ID, or as a user_key",
                                            },
                                            "visitors": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "required": ["visitor_key", "first_bound", "bindings"],
                                                    "properties": {
                                                        "visitor_key": {"type": "string"},
                                                        "first_bound": {"type": "string"},
                                                        "bindings": {"type": "integer"},
                                                    },
                                                },
                                            },
                                            "first_touch": {"oneOf": [touchpoint_ref, {"type": "null"}]},
                                            "last_touch": {"oneOf": [touchpoint_ref, {"type": "null"}]},
                                            "touchpoints": {
                                                "type": "array",
                                                "items": touchpoint_ref,
                                                "description": "in time order; at most the first 1000",
                                            },
                                            "conversions": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Conversion"},
                                                "description": "the user's and their visitors', in time"
                                                " order; at most the first 1000",
                                            },
                                            "truncated": {
                                                "type": "boolean",
                                                "description": "there are more touchpoints than listed, or"
                                                " more visitors than joined (1000)",
                                            },
                                            "conversions_truncated": CONVERSIONS_TRUNCATED,
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 404, 503),
                    },
                },
                "delete": {
                    "parameters": [USER_LOOKUP_ID],
                    "summary": "Erase the user: bindings, their visitors' touchpoints, their conversions",
                    "responses": {
                        "200": {
                            "description": "rows erased per table",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": [
                                            "ok",
                                            "user_key",
                                            "erased_as",
                                            "erased",
                                            "visitors",
                                            "raw_id_searched",
                                            "bad_events_kept",
                                            "elsewhere",
                                        ],
                                        "properties": {
                                            "ok": {"const": True},
                                            "user_key": {"type": "string"},
                                            "erased_as": {
                                                "enum": ["user_id", "user_key"],
                                                "description": "how the path's text was read, as the"
                                                " lookup reads it: a raw user ID, or a user_key",
                                            },
                                            "erased": ERASED_ROWS,
                                            "visitors": {"type": "integer"},
                                            "raw_id_searched": {
                                                "type": "boolean",
                                                "description": "whether the kept bad events were searched"
                                                " for the raw user ID (false for a hashed user_key,"
                                                " which does not give it back)",
                                            },
                                            "bad_events_kept": {
                                                "type": "integer",
                                                "description": "bad events the store keeps after the erasure",
                                            },
                                            "elsewhere": ELSEWHERE,
                                            "note": {
                                                "type": "string",
                                                "description": "what the erasure could not do by this"
                                                " text, and what to do (a hashed user_key; a key's shape"
                                                " read as a raw ID that erased nothing)",
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 503),  # 503: another process holds the store's write lock
                    },
                },
            },
            "/api/dashboard/summary": {
                "get": {
                    "summary": "What the dashboard draws: conversions by channel per day, every model "
                    "by channel, top campaigns and creators, bot share, totals",
                    "parameters": [
                        query_param(
                            "since",
                            "first day (in attribution.timezone), YYYY-MM-DD (default: until - 30 days)",
                            DAY,
                        ),
                        query_param(
                            "until", "day after the last, YYYY-MM-DD (default: tomorrow); 1..92 days", DAY
                        ),
                        query_param(
                            "model", "model of the daily chart (default linear)", {"enum": list(MODELS)}
                        ),
                        query_param(
                            "population",
                            "credit only this population's touchpoints (default: all)",
                            {"enum": ["cookie", "cookieless", "no_consent"]},
                        ),
                        query_param(
                            "conversion",
                            "only conversions of this name (default: every conversion); no spaces"
                            " around it, as conversions are recorded (a 400 otherwise, not an empty"
                            " report)",
                            {"type": "string", "minLength": 1, "maxLength": 200},
                        ),
                        query_param(
                            "part",
                            "only this part (default: all): counts (totals, top campaigns and creators,"
                            " bots, populations, conversion_names), daily (by_day) or models"
                            " (comparison, learnt)",
                            {"enum": list(PARTS)},
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "the summary (with part: since, until, model, models,"
                            " conversion, source and that part's keys)",
                            "content": {"application/json": {"schema": DASHBOARD_SUMMARY}},
                        },
                        **_errors(400, 401, 503),
                    },
                }
            },
            "/api/review": {
                "get": {
                    "summary": "The review queue: touchpoints whose effective verdict is review (or block)",
                    "parameters": [
                        *_PERIOD,
                        query_param("verdict", "review (default) or block", {"enum": ["review", "block"]}),
                        *_touchpoint_filters("exact creator ID: review a creator's clicks before a payout"),
                        *_ORDERED_PAGING,
                        *_DOWNLOAD,
                    ],
                    "responses": {
                        "200": _page_of(touchpoint_ref, "a page, oldest first", downloads=True),
                        **_errors(400, 401, 503),
                    },
                }
            },
            "/api/touchpoints/{touchpoint_id}/verdict": {
                "get": {
                    "summary": "A touchpoint's effective verdict and its every change: re-scores, and "
                    "analysts' overrides with who and why (the audit trail)",
                    "parameters": TOUCHPOINT_PARAMETERS,
                    "responses": {
                        "200": verdict_history("the touchpoint with its effective verdict, and every change"),
                        **_errors(400, 401, 404, 409, 503),
                    },
                },
                "post": {
                    "summary": "An analyst overrides a touchpoint's verdict (who and why are kept)",
                    "parameters": TOUCHPOINT_PARAMETERS,
                    "requestBody": analyst_body(verdict={"enum": list(VERDICTS)}),
                    "responses": {
                        "200": verdict_history(
                            "the touchpoint with its new effective verdict, and every change"
                        ),
                        **_errors(400, 401, 404, 408, 409, 413, 415, 503),
                    },
                },
                "delete": {
                    "summary": "An analyst withdraws the override in force: the verdict is the scoring's"
                    " again (the latest re-score, else as scored) until another override; who and why"
                    " are kept. No override in force: 409",
                    "parameters": TOUCHPOINT_PARAMETERS,
                    "requestBody": analyst_body(),
                    "responses": {
                        "200": verdict_history(
                            "the touchpoint with the scoring's verdict again, and every change (the"
                            " withdrawal last)"
                        ),
                        **_errors(400, 401, 404, 408, 409, 413, 415, 503),
                    },
                },
            },
            "/api/creators": {
                "get": {
                    "summary": "The creator registry: [[creators]] with the standings set here on top",
                    "responses": {
                        "200": {
                            "description": "every known creator, by id",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok", "items"],
                                        "properties": {
                                            "ok": {"const": True},
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Creator"},
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401),
                    },
                }
            },
            "/api/creators/{creator_id}": {
                "put": {
                    "summary": "Set a creator's standing (who and why are kept; bots uses it at once)",
                    "parameters": [
                        {"name": "creator_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["verified", "analyst", "reason"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "verified": {"type": "boolean"},
                                        "name": {"type": "string", "maxLength": 200},
                                        "analyst": ANALYST,
                                        "reason": ANALYST_REASON,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the creator as now known",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok", "creator"],
                                        "properties": {
                                            "ok": {"const": True},
                                            "creator": {"$ref": "#/components/schemas/Creator"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 408, 413, 415, 503),
                    },
                }
            },
            "/api/sinks/{name}/users/{user_id}": {
                "post": {
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "description": "the [[sinks]] entry's name",
                            "schema": {"type": "string"},
                        },
                        USER_LOOKUP_ID,
                    ],
                    "summary": "Re-send one user's identify and track calls through a sink, now "
                    "(same messageIds as before: nothing counts twice)",
                    "responses": {
                        "200": {
                            "description": "messages the destination accepted",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok", "sink", "user_key", "sent"],
                                        "properties": {
                                            "ok": {"const": True},
                                            "sink": {"type": "string"},
                                            "user_key": {"type": "string"},
                                            "sent": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 404, 409, 502, 503),
                    },
                }
            },
            **openapi_reports.PATHS,
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}, **_errors()},
                }
            },
        },
    }
