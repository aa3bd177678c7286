"""The report endpoints of the OpenAPI document: attribution, its time series, path lengths
and time to convert, creator payouts, click fraud (merged into ``gateway.openapi.openapi_document``);
under ``data_driven``, what it learnt (``Learnt``).

Every report answers one table: ``columns`` (the order of the CSV and of the terminal
table) and ``rows`` (one flat object per row), plus what the report was asked for. The
same rows are exported as CSV or NDJSON with ``format=`` or an ``Accept`` header.
"""

from __future__ import annotations

from typing import Any

from gateway.attribution import MODELS
from gateway.events import VERDICTS
from gateway.openapi import BOM, DELIMITER, FORMATS, MOMENT, query_param
from storage.queries import FRAUD_GROUPS, FRAUD_LIMIT

GROUP_BY = ("channel", "source", "medium", "campaign", "creator_id")
_NUMBER = {"type": "number"}
_NULLABLE_STR = {"type": ["string", "null"]}


def _common(model_default: str, *, all_models: bool = True, payouts: bool = False) -> list[dict[str, Any]]:
    models = [*MODELS, "all"] if all_models else list(MODELS)
    return [
        query_param(
            "model",
            f"attribution model (default {model_default})"
            + ("; all: every model side by side, one column pair each" if all_models else ""),
            {"type": "string", "enum": models},
        ),
        query_param(
            "conversion",
            "only conversions of this name (default: every conversion); no spaces around it, as"
            " conversions are recorded (a 400 otherwise, not an empty report)",
            {"type": "string", "minLength": 1, "maxLength": 200},
        ),
        query_param(
            "since",
            "ISO 8601 date or date-time, in attribution.timezone without an offset; inclusive"
            " (default: until minus 30 days there)",
            MOMENT,
        ),
        query_param(
            "until",
            "ISO 8601 date or date-time, in attribution.timezone without an offset; exclusive (default: now)",
            MOMENT,
        ),
        query_param(
            "verdicts",
            f"comma-separated bot verdicts whose touchpoints count, among {', '.join(VERDICTS)};"
            " an unknown name is a 400 (default: attribution.verdicts)"
            + (
                "; they must name allow, the traffic the report pays (verdicts=review is a 400)"
                if payouts
                else ""
            ),
        ),
        query_param(
            "population",
            "only this population's touchpoints (touchpoints.consent), and the conversions that "
            "have some (default: every population)",
            {"type": "string", "enum": ["cookie", "cookieless", "no_consent"]},
        ),
        _FORMAT,
        BOM,
        DELIMITER,
    ]


_FORMAT = query_param(
    "format",
    "json (default), csv or ndjson; without it, the Accept header chooses: each format takes the q "
    "of the most specific range naming it (text/csv, text/*, */*), the highest wins (JSON if none)",
    {"type": "string", "enum": list(FORMATS)},
)


def _table(extra: str, learnt: bool = False) -> dict[str, Any]:
    also = (
        "; learnt: what data_driven learnt, a row per channel (model=data_driven or all only, a 400"
        " with another model)"
        if learnt
        else ""
    )
    return query_param(
        "table",
        f"a CSV or NDJSON download of the report's rows (default) or of its {extra} (what the JSON"
        f" carries beside the rows){also}; a 400 with JSON",
        {"type": "string", "enum": ["rows", extra, *(["learnt"] if learnt else [])]},
    )


_GROUP_BY = query_param(
    "group_by", "what a row is (default channel)", {"type": "string", "enum": list(GROUP_BY)}
)

_TOTAL = {
    "type": "object",
    "required": ["currency", "conversions", "value"],
    "properties": {
        "currency": _NULLABLE_STR,
        "conversions": {"type": "integer", "description": "conversions in the period"},
        "value": {**_NUMBER, "description": "their value, in the currency's units"},
    },
}

ATTRIBUTION_ROW = {
    "type": "object",
    "required": ["group", "currency"],
    "description": "one group and currency; with one model `conversions` (credited, fractional) "
    "and `value` (credited, exact to the minor unit); with model=all a pair per model: "
    "`linear_conversions`, `linear_value`, …",
    "properties": {
        "day": {
            "type": "string",
            "format": "date",
            "description": "timeseries only: the day, in attribution.timezone (UTC by default)",
        },
        "group": {**_NULLABLE_STR, "description": "the group_by value; null: none (e.g. no source)"},
        "currency": _NULLABLE_STR,
    },
    "additionalProperties": _NUMBER,
}

PATHS_ROW = {
    "type": "object",
    "required": ["measure", "bucket", "conversions", "share"],
    "properties": {
        "measure": {"enum": ["touches", "days"], "description": "path length, or time to convert"},
        "bucket": {"type": "string", "description": "touches: 0, 1 … 9, 10+; days: 0, 1, 2-3, 4-7, …"},
        "conversions": {"type": "integer"},
        "share": {**_NUMBER, "description": "of the period's conversions (of those with a touch for days)"},
    },
}

PAYOUT_ROW = {
    "type": "object",
    "required": [
        "creator_id",
        "status",
        "tier",
        "rule",
        "currency",
        "clicks",
        "conversions",
        "value",
        "payout",
    ],
    "properties": {
        "creator_id": {"type": "string"},
        "status": {
            "enum": ["approve", "quarantined"],
            "description": "quarantined: touchpoints whose bot verdict is not accepted — "
            "excluded from the payout, listed with what they would have earned",
        },
        "tier": _NULLABLE_STR,
        "rule": {"type": "string", "description": "the payout rule applied, e.g. 'CPA 5.00 + 10% of value'"},
        "currency": _NULLABLE_STR,
        "clicks": {"type": "integer", "description": "the creator's touchpoints in the period"},
        "conversions": {**_NUMBER, "description": "credited conversions (fractional)"},
        "value": {**_NUMBER, "description": "credited value"},
        "payout": {**_NUMBER, "description": "amount to approve (0 for quarantined rows)"},
    },
}


_ERRORS = {
    "400": {
        "description": "a bad parameter, named in the error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "401": {
        "description": "missing or wrong token",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "403": {
        "description": "a dashboard session's cookie alone, on a request another origin's page"
        " made: send Authorization: Bearer",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "421": {
        "description": "the Host is not one of the admin listener's names (admin.hosts)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "429": {
        "description": "too many wrong tokens from this address: refused (the right token too)"
        " until Retry-After",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "503": {
        "description": "the store was busy past its timeout (another process held its write"
        " lock); try again after Retry-After",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
}

FRAUD_ROW = {
    "type": "object",
    "required": ["group", "clicks", "distinct_visitors", "distinct_ips", "top_reasons"],
    "description": "one group: `clicks`, a count and a share per verdict (`allow`, `allow_share`, "
    "… `unscored`, `unscored_share`), the distinct visitors and IPs, and the top reasons as text "
    "(`headless: 12; http_library: 3`)",
    "properties": {
        "group": {**_NULLABLE_STR, "description": "the group_by value; null: none (e.g. no creator)"},
        "clicks": {"type": "integer"},
        "distinct_visitors": {"type": "integer"},
        "distinct_ips": {"type": "integer"},
        "top_reasons": {"type": "string"},
    },
    "additionalProperties": _NUMBER,
}


_SOURCE = {
    "enum": ["local", "mirror"],
    "description": "the store the report read: this node's own (storage.path), or the reporting"
    " mirror of every node's rows (central.mirror_path)",
}


def _answer(row_ref: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "200": {
            "description": "the report; text/csv and application/x-ndjson carry the same rows, "
            "with a Content-Disposition filename",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": [
                            "ok",
                            "report",
                            "since",
                            "until",
                            "source",
                            "columns",
                            "rows",
                            *required,
                        ],
                        "properties": {
                            "ok": {"const": True},
                            "report": {"type": "string"},
                            "since": {"type": "string", "format": "date-time"},
                            "until": {"type": "string", "format": "date-time"},
                            "conversion": _NULLABLE_STR,
                            "verdicts": {"type": "array", "items": {"type": "string"}},
                            "population": _NULLABLE_STR,
                            "conversion_names": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "only when the report is limited to a conversion or"
                                " population and counts no conversion (payouts: to a conversion none"
                                " of the period's has): the names of the period's conversions, most"
                                " frequent first, so that a typo in conversion reads as one",
                            },
                            "source": _SOURCE,
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "rows": {"type": "array", "items": {"$ref": row_ref}},
                            **extra,
                        },
                    }
                },
                "text/csv": {},
                "application/x-ndjson": {},
            },
        },
        **_ERRORS,
    }


_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
LEARNT = {
    "type": "object",
    "required": ["converting_journeys", "non_converting_journeys", "channels"],
    "additionalProperties": False,
    "description": "only under model=data_driven or all: what data_driven learnt from the period's"
    " journeys (its Markov chain), to explain its credits",
    "properties": {
        "converting_journeys": {"type": "integer", "minimum": 0},
        "non_converting_journeys": {"type": "integer", "minimum": 0},
        "channels": {
            "type": "array",
            "description": "every channel of those journeys, largest weight first, then by name",
            "items": {
                "type": "object",
                "required": ["channel", "removal_effect", "weight"],
                "additionalProperties": False,
                "properties": {
                    "channel": {"type": "string"},
                    "removal_effect": {
                        **_FRACTION,
                        "description": "how much the chance of converting drops, relatively, without"
                        " the channel (1 - without / with); six decimals",
                    },
                    "weight": {
                        **_FRACTION,
                        "description": "the removal effects normalised (together 1 before rounding to six"
                        " decimals; all 0 when no journey converted): the share of a conversion the"
                        " channel's touches get",
                    },
                },
            },
        },
        "learnt_at": {
            "type": "string",
            "format": "date-time",
            "description": "when the weights were learnt: a report over the same period reuses them"
            " for admin.data_driven_reuse_seconds (600 by default), and one over the same length"
            " of a period that ran up to then (the last N days) too",
        },
        "since": {"type": "string", "format": "date-time", "description": "the period learnt over"},
        "until": {
            "type": "string",
            "format": "date-time",
            "description": "the period learnt over: the report's, or, for the last N days, as they"
            " were at learnt_at",
        },
    },
}

_MODELS_FIELDS = {
    "model": {"type": "string"},
    "models": {"type": "array", "items": {"type": "string"}, "description": "the models in the columns"},
    "group_by": {"enum": list(GROUP_BY)},
    "totals": {
        "type": "array",
        "items": _TOTAL,
        "description": "per currency; every model's credits sum to these",
    },
    "learnt": {"$ref": "#/components/schemas/Learnt"},
}

SCHEMAS: dict[str, Any] = {
    "AttributionRow": ATTRIBUTION_ROW,
    "PathsRow": PATHS_ROW,
    "PayoutRow": PAYOUT_ROW,
    "FraudRow": FRAUD_ROW,
    "Learnt": LEARNT,
}

PATHS: dict[str, Any] = {
    "/api/attribution": {
        "get": {
            "summary": "Credited conversions and value per group and currency under a model, "
            "or every model side by side (model=all)",
            "parameters": [*_common("linear"), _GROUP_BY, _table("totals", learnt=True)],
            "responses": _answer(
                "#/components/schemas/AttributionRow",
                _MODELS_FIELDS,
                ["model", "models", "group_by", "totals"],
            ),
        }
    },
    "/api/attribution/timeseries": {
        "get": {
            "summary": "Credited conversions and value per day of the conversion (in attribution.timezone),"
            " group and currency",
            "description": "Dense: each group and currency credited in the period has a row on every"
            " day of it, from the day holding since to the day holding the last instant before until,"
            " with conversions and value 0 on the days it was credited nothing (one per group and day);"
            " no rows when the period has no conversion.",
            "parameters": [*_common("linear"), _GROUP_BY, _table("totals", learnt=True)],
            "responses": _answer(
                "#/components/schemas/AttributionRow",
                _MODELS_FIELDS,
                ["model", "models", "group_by", "totals"],
            ),
        }
    },
    "/api/attribution/paths": {
        "get": {
            "summary": "Path lengths (eligible touches per conversion) and time to convert "
            "(days from the first eligible touch)",
            "parameters": [*(p for p in _common("linear") if p["name"] != "model"), _table("summary")],
            "responses": _answer(
                "#/components/schemas/PathsRow",
                {
                    "summary": {
                        "type": "object",
                        "required": ["conversions", "with_touches"],
                        "properties": {
                            "conversions": {"type": "integer"},
                            "with_touches": {"type": "integer"},
                            "mean_touches": {"type": ["number", "null"]},
                            "median_touches": {"type": ["number", "null"]},
                            "mean_days": {"type": ["number", "null"]},
                            "median_days": {"type": ["number", "null"]},
                        },
                    }
                },
                ["summary"],
            ),
        }
    },
    "/api/payouts": {
        "get": {
            "summary": "Creator payouts: per creator_id and currency, credited conversions and value "
            "under a model and the amount to approve by the [payouts] rules; quarantined traffic "
            "listed apart",
            "parameters": [*_common("payouts.model", all_models=False, payouts=True), _table("totals")],
            "responses": _answer(
                "#/components/schemas/PayoutRow",
                {
                    "model": {"type": "string"},
                    "totals": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["currency", "payout"],
                            "properties": {"currency": _NULLABLE_STR, "payout": _NUMBER},
                        },
                        "description": "amount to approve per currency",
                    },
                },
                ["model", "totals"],
            ),
        }
    },
    "/api/fraud": {
        "get": {
            "summary": "Click fraud per creator, source, medium, campaign or channel: clicks, count "
            "and share per verdict, top reasons, distinct visitors and IPs",
            "parameters": [
                query_param(
                    "since",
                    "ISO 8601 date or date-time, inclusive; before until when both are given, "
                    "before now when until is left out (default: the first touchpoint)",
                    MOMENT,
                ),
                query_param("until", "ISO 8601 date or date-time, exclusive (default: none)", MOMENT),
                query_param(
                    "group_by",
                    "what a group is (default creator_id)",
                    {"type": "string", "enum": list(FRAUD_GROUPS)},
                ),
                _FORMAT,
                BOM,
                DELIMITER,
            ],
            "responses": {
                "200": {
                    "description": f"groups, largest first: the JSON lists at most {FRAUD_LIMIT} "
                    "(truncated: there are more); text/csv and application/x-ndjson are every group "
                    "as one flat row each (FraudRow), with a Content-Disposition filename",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": [
                                    "ok",
                                    "group_by",
                                    "since",
                                    "until",
                                    "source",
                                    "groups",
                                    "truncated",
                                ],
                                "properties": {
                                    "ok": {"const": True},
                                    "group_by": {"enum": list(FRAUD_GROUPS)},
                                    "since": _NULLABLE_STR,
                                    "until": _NULLABLE_STR,
                                    "groups": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/FraudGroup"},
                                    },
                                    "truncated": {"type": "boolean"},
                                    "source": _SOURCE,
                                },
                            }
                        },
                        "text/csv": {},
                        "application/x-ndjson": {},
                    },
                },
                **_ERRORS,
            },
        }
    },
}
