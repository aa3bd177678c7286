"""The OpenAPI 3.1 document describing the admin API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from gateway import openapi_reports

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
        "dedup_key": {"type": "string", "description": "order:<order id>, or a per-visitor window"},
        "visitor_key": _NULLABLE_STR,
        "user_key": _NULLABLE_STR,
        "value": {"type": ["number", "null"]},
        "currency": _NULLABLE_STR,
        "order_id": _NULLABLE_STR,
        "origin": {"type": "string", "description": "rule, webhook, segment or import"},
        "rule": {"type": "string"},
    },
}

USER_ID = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "description": "the site's raw user ID (keyed internally; percent-encode a /)",
    "schema": {"type": "string"},
}

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
    return {
        str(code): {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def openapi_document() -> dict[str, Any]:
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
                            "description": "alive",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "required": ["ok", "status"]}
                                }
                            },
                        }
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
                    "summary": "Touchpoints in time order, filtered, cursor-paginated",
                    "parameters": [
                        _query("since", "ISO 8601 date or date-time, inclusive", {"type": "string"}),
                        _query("until", "ISO 8601 date or date-time, exclusive"),
                        _query("source", "exact source (case-folded)"),
                        _query("medium", "exact medium (case-folded)"),
                        _query("campaign", "exact campaign"),
                        _query("creator_id", "exact creator ID"),
                        _query("visitor_key", "exact visitor key"),
                        _query("cursor", "next_cursor of the previous page"),
                        _query(
                            "limit",
                            "page size 1..1000 (default 100)",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "a page",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok", "items", "next_cursor"],
                                        "properties": {
                                            "ok": {"const": True},
                                            "items": {"type": "array", "items": touchpoint_ref},
                                            "next_cursor": _NULLABLE_STR,
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401),
                    },
                }
            },
            "/api/visitors/{visitor_id}": {
                "get": {
                    "summary": "A visitor's first touch, last touch and every touchpoint",
                    "parameters": [
                        {
                            "name": "visitor_id",
                            "in": "path",
                            "required": True,
                            "description": "visitor_key, raw visitor ID, or the cookie value",
                            "schema": {"type": "string"},
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
                                        ],
                                        "properties": {
                                            "ok": {"const": True},
                                            "visitor_key": {"type": "string"},
                                            "first_seen": {"type": "string"},
                                            "last_seen": {"type": "string"},
                                            "touch_count": {"type": "integer"},
                                            "first_touch": touchpoint_ref,
                                            "last_touch": touchpoint_ref,
                                            "touchpoints": {
                                                "type": "array",
                                                "items": touchpoint_ref,
                                                "description": "in time order; at most the first 1000",
                                            },
                                            "truncated": {"type": "boolean"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 404),
                    },
                }
            },
            "/api/bad-events": {
                "get": {
                    "summary": "Signed events that failed validation, with their reason, in time order",
                    "parameters": [
                        _query("sender", "only this [[sources]] sender's"),
                        _query("pending", "true: only those not replayed yet", {"type": "boolean"}),
                        _query("cursor", "next_cursor of the previous page"),
                        _query(
                            "limit",
                            "page size 1..1000 (default 100)",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "a page",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok", "items", "next_cursor"],
                                        "properties": {
                                            "ok": {"const": True},
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/BadEvent"},
                                            },
                                            "next_cursor": _NULLABLE_STR,
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401),
                    },
                }
            },
            "/api/users/{user_id}": {
                "get": {
                    "parameters": [USER_ID],
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
                                            "visitors",
                                            "first_touch",
                                            "last_touch",
                                            "touchpoints",
                                            "conversions",
                                        ],
                                        "properties": {
                                            "ok": {"const": True},
                                            "user_key": {"type": "string"},
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
                                            "touchpoints": {"type": "array", "items": touchpoint_ref},
                                            "conversions": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Conversion"},
                                            },
                                            "truncated": {"type": "boolean"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 404),
                    },
                },
                "delete": {
                    "parameters": [USER_ID],
                    "summary": "Erase the user: bindings, their visitors' touchpoints, their conversions",
                    "responses": {
                        "200": {
                            "description": "rows erased per table",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok", "user_key", "erased", "visitors"],
                                        "properties": {
                                            "ok": {"const": True},
                                            "user_key": {"type": "string"},
                                            "erased": {
                                                "type": "object",
                                                "additionalProperties": {"type": "integer"},
                                            },
                                            "visitors": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401),
                    },
                },
            },
            **openapi_reports.PATHS,
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
    }
