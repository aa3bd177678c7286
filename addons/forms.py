"""Form bodies as rules read them: urlencoded and multipart/form-data, in the charset they declare.

Owns the form parser behind a rule's ``form`` source and the charset lookup the
``response_text`` source shares (``addons/extract.py``). Pure functions, no state. A field
whose name contains pass, pwd, secret, token or card (``FORBIDDEN_NAME``) is never returned.
"""

from __future__ import annotations

import codecs
import email.parser
import email.policy
import re
from urllib.parse import parse_qsl

from gateway.ruleconfig import FORBIDDEN_NAME

MAX_FORM_FIELDS = 1000
CHARSET = re.compile(r"(?i)\bcharset\s*=\s*\"?([^\";\s]+)")


def charset_codec(declared: str | None) -> str:
    """The codec a form's (or part's) declared charset names; UTF-8 when none is declared.
    ValueError when Python knows no such text encoding (``base64`` and ``rot13`` are codecs,
    but not of bytes to text): its values cannot be read."""
    name = declared or "utf-8"
    try:
        text = codecs.lookup(name)._is_text_encoding  # what bytes.decode checks too
    except LookupError:
        text = False
    if not text:
        raise ValueError(f"unknown charset {name!r}")
    return name


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """A urlencoded or multipart/form-data body → field → first value (file parts skipped).

    Values are decoded in the charset the form (or the part) declares, UTF-8 when it declares
    none. Bytes that do not decode stay as surrogate escapes, which no value check accepts as
    printable: such a value is refused, never turned into ``\ufffd`` (two different user IDs
    would become one). A part in a charset Python does not know is left out. Fields named like a
    credential (``FORBIDDEN_NAME``) are left out. ValueError when the body is not a form of
    either kind, or declares a charset Python does not know.
    """
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    fields: dict[str, str] = {}
    if media == "application/x-www-form-urlencoded":
        declared = CHARSET.search(params)
        charset = charset_codec(declared.group(1) if declared else None)
        text = body.decode(charset, "surrogateescape")  # raw bytes; percent-escapes decode below
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            encoding=charset,
            errors="surrogateescape",
        )
        for name, value in pairs:
            if not FORBIDDEN_NAME.search(name):
                fields.setdefault(name, value)
        return fields
    if media != "multipart/form-data":
        raise ValueError(f"not a form: {media or 'no content type'}")
    head = b"Content-Type: " + content_type.encode("utf-8", "replace") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("multipart body without parts")
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        if not isinstance(field, str) or part.get_filename() is not None or FORBIDDEN_NAME.search(field):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            charset = charset_codec(part.get_content_charset())
        except ValueError:
            continue  # this part cannot be read; the others can
        fields.setdefault(field, payload.decode(charset, "surrogateescape"))
    return fields
