"""Schemathesis against the admin API, as its OpenAPI document describes it: a real gateway
(``gateway run``, loopback, ports of the system's choosing) with a few stored landings, and
schemathesis's own command generating requests from ``/api/openapi.json`` with the bearer
token. Every generated request: no 5xx, a status the document lists, a body matching its
schema, the declared content type, 401 without the token (``ignored_auth``), and 405 with an
``Allow`` header for methods the document does not list. Deterministic and bounded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ENV, TOKEN

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,unsupported_method,ignored_auth,missing_required_header,"
    "allow_header_conformance"
)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``gateway run`` in a subprocess: (proxy origin, admin origin), stopped after the test."""
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\n'
        '[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n'
    )
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **ENV},
        )
    try:
        for _ in range(300):  # bounded: up to ~30 s for a cold start on a loaded machine
            text = log.read_text()
            proxy = re.search(r"proxy on (http://[\d.:]+)/", text)
            admin = re.search(r"admin API on (http://[\d.:]+)/", text)
            if proxy and admin:
                break
            assert proc.poll() is None, text
            time.sleep(0.1)
        else:
            raise AssertionError("gateway did not start:\n" + log.read_text())
        yield proxy.group(1), admin.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.timeout(300)
def test_admin_api_holds_to_its_openapi_document(running: tuple[str, str], tmp_path: Path) -> None:
    proxy, admin = running
    for i in range(3):  # landings to report on (the upstream is down: 502, still recorded)
        request = urllib.request.Request(
            f"{proxy}/?utm_source=s{i}&utm_medium=m&creator_id=c{i}&gclid=g{i}",
            headers={"User-Agent": BROWSER, "Accept": "text/html", "Accept-Language": "en"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        err.value.close()
        assert err.value.code == 502
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{admin}/api/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            CHECKS,
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--generation-deterministic",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=280,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert re.search(r"Operations:\s+1\d selected", done.stdout), done.stdout[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", done.stdout), done.stdout[-3000:]
