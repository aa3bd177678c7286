"""``deploy/nginx.conf``: ``nginx -t`` on it placed as README says, in a main config shaped as
Debian's (``include conf.d/*.conf`` inside ``http``), its certificate swapped for a self-signed
one; and what it forwards read against what the gateway believes of a trusted proxy (README:
``proxy.trusted_proxies``). Without nginx installed the first is skipped (``apt-get install
nginx-light`` gives it)."""

from __future__ import annotations

import datetime
import ipaddress
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy.deployfiles import DEPLOY, ROOT, readme_deployment

CONF = DEPLOY / "nginx.conf"
MAIN = """\
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{}}
http {{
    access_log off;
    include {prefix}/conf.d/*.conf;
}}
"""
"""Debian's /etc/nginx/nginx.conf in what matters here: the site files included in ``http``."""


def placed() -> str:
    """Where README installs the file: the target of its ``install … deploy/nginx.conf`` line."""
    lines = readme_deployment().splitlines()
    (line,) = [line for line in lines if "install" in line and "deploy/nginx.conf /" in line]
    words = shlex.split(line, comments=True)
    return words[words.index("deploy/nginx.conf") + 1]


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crt, pem = folder / "fullchain.pem", folder / "privkey.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return crt, pem


def test_readme_places_it_where_nginx_reads_site_files() -> None:
    """The file holds ``upstream``, ``map`` and ``server`` blocks: it belongs inside ``http``,
    where Debian's and nginx.org's packages include ``/etc/nginx/conf.d/*.conf``."""
    assert re.fullmatch(r"/etc/nginx/conf\.d/[\w-]+\.conf", placed()), placed()


def test_nginx_accepts_the_file(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed: `nginx -t` not run (apt-get install nginx-light)")
    crt, pem = self_signed(tmp_path)
    text = CONF.read_text(encoding="utf-8")
    swapped = re.sub(r"(ssl_certificate\s+)\S+;", f"\\g<1>{crt};", text)
    swapped = re.sub(r"(ssl_certificate_key\s+)\S+;", f"\\g<1>{pem};", swapped)
    assert swapped.count(str(tmp_path)) == 2
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / Path(placed()).name).write_text(swapped)
    main = tmp_path / "nginx.conf"
    main.write_text(MAIN.format(prefix=tmp_path))
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # nginx 1.25.1+ prefers `http2 on;`, which the nginx of Debian 12 (1.22) and Ubuntu 24.04
    # (1.24) refuse; the `listen … http2` they take is only warned of there.
    warned = [w for w in re.findall(r"\[warn\] (.*)", done.stderr) if "http2" not in w]
    assert warned == [] and "[emerg]" not in done.stderr, done.stderr


def directives(block: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in block.splitlines():
        line = line.split("#")[0].strip().rstrip(";")
        if line:
            name, _, value = line.partition(" ")
            found.setdefault(name, []).append(" ".join(value.split()))
    return found


def test_it_forwards_what_the_gateway_believes_of_a_trusted_proxy() -> None:
    """nginx appends the client to X-Forwarded-For and says the scheme and host the visitor
    used, over HTTP/1.1 to the gateway's public listener (the annotated config's, README's
    127.0.0.1:8080), which it reaches from an address in the ``proxy.trusted_proxies`` README
    says to set — so the gateway believes it, and no one else."""
    text = CONF.read_text(encoding="utf-8")
    location = re.search(r"location / \{(.*?)\n    \}", text, re.DOTALL)
    assert location
    said = directives(location.group(1))
    headers = dict(v.split(" ", 1) for v in said["proxy_set_header"])
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Forwarded-Host"] == "$host"
    assert headers["Host"] == "$host"  # proxy.preserve_host: the visitor's Host goes on
    assert said["proxy_http_version"] == ["1.1"]
    assert said["proxy_pass"] == ["http://tracking_gateway"]
    upstream = re.search(r"upstream tracking_gateway \{(.*?)\}", text, re.DOTALL)
    assert upstream
    (server,) = directives(upstream.group(1))["server"]
    example = tomllib.loads((ROOT / "gateway.toml").read_text(encoding="utf-8"))
    assert server == example["proxy"]["listen"] == "127.0.0.1:8080"
    trusted = re.search(r"`proxy\.trusted_proxies = (\[.*?\])`", readme_deployment())
    assert trusted
    networks = [ipaddress.ip_network(n) for n in tomllib.loads(f"t = {trusted.group(1)}")["t"]]
    peer = ipaddress.ip_address(server.rpartition(":")[0])  # nginx reaches loopback from loopback
    assert any(peer in n for n in networks)
    assert f"trusted_proxies = {trusted.group(1)}" in text
