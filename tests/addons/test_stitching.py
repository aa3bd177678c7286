"""Identity rules on a plain Exchange: each source kind, success statuses, validation, metrics."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from addons.identity import Identity
from addons.stitching import Stitching
from gateway.config import ConfigError, load_settings
from gateway.events import Binding
from gateway.pipeline import Context, Exchange, ResponseView
from tests.addons.conftest import FIXED_TS, configured, context, exchange, metric
from tests.addons.test_rules import es256, hs256, pem
from tests.conftest import ENV

FORM = "application/x-www-form-urlencoded"
NOW = int(FIXED_TS.timestamp())


def rule(source: str, *, path: str = "/login", status: str = "[302]", method: str = "POST") -> str:
    return f"""
        [[identity.rules]]
        name = "r"
        method = "{method}"
        path = "{path}"
        status = {status}
        user_id = {source}
    """


def run(
    ctx: Context,
    ex: Exchange,
    status: int,
    *,
    headers: dict[str, str] | None = None,
    request_body: bytes | None = None,
    response_body: bytes | None = None,
) -> tuple[Stitching, list[Binding]]:
    """What the host does: identity, the request hook, the bodies asked for, the response hook."""
    configured(Identity, ctx=ctx).request(ex)
    stitching = configured(Stitching, ctx=ctx)
    stitching.request(ex)
    if ex.want_request_body:
        ex.request_body = request_body
    if ex.want_response_body:
        ex.response_body = response_body
    ex.response = ResponseView(status, headers or {})
    stitching.response(ex)
    return stitching, [e for e in ex.events if isinstance(e, Binding)]


def test_form_login_binds_visitor_to_user_key() -> None:
    ctx = context(rule('{ form = "username" }'))
    ex = exchange("/login", method="POST", headers={"content-type": FORM})
    _, bindings = run(ctx, ex, 302, request_body=b"username=ada&password=hunter2")
    assert ex.want_request_body == 65536 and ex.want_response_body == 0
    assert len(bindings) == 1
    b = bindings[0]
    assert ex.visitor is not None
    assert (b.visitor_key, b.user_key, b.rule, b.origin) == (
        ex.visitor.key,
        ctx.keys.user_key("ada"),
        "r",
        "rule",
    )
    assert b.node == ctx.settings.node and b.ts == "2026-11-25T12:00:00.000000Z"
    assert ex.user_key == b.user_key
    # No field holds the raw ID or the password (hex keys may contain "ada" by chance: compare whole
    # values, not substrings).
    assert not {"ada", "hunter2"} & {str(v) for v in (b.visitor_key, b.user_key, b.rule, b.origin)}
    assert "hunter2" not in repr(b)
    # Counted by the store once it has stored the binding (a pair it had already is not), not
    # here: another worker, or this gateway before a restart, may have bound the pair.
    assert metric(ctx, "gateway_bindings_total", {"rule": "r"}) == 0


@pytest.mark.parametrize("status", [200, 400, 500])
def test_failed_login_status_binds_nothing(status: int) -> None:
    ctx = context(rule('{ form = "username" }'))
    ex = exchange("/login", method="POST", headers={"content-type": FORM})
    _, bindings = run(ctx, ex, status, request_body=b"username=ada")
    assert bindings == [] and ex.user_key is None


@pytest.mark.parametrize(
    "target,method,host",
    [
        ("/login/extra", "POST", "shop.example"),
        ("/login", "GET", "shop.example"),
        ("/x/login", "POST", "a.b"),
    ],
)
def test_non_matching_request_asks_for_nothing(target: str, method: str, host: str) -> None:
    ctx = context(rule('{ form = "username" }'))
    ex = exchange(target, method=method, host=host, headers={"content-type": FORM})
    _, bindings = run(ctx, ex, 302, request_body=b"username=ada")
    assert ex.want_request_body == 0 and bindings == []


def test_host_match_ignores_case_and_port() -> None:
    toml = rule('{ form = "u" }') + '        host = "Shop.Example"\n'
    ctx = context(toml)
    ex = exchange("/login", method="POST", host="shop.example:8443", headers={"content-type": FORM})
    assert len(run(ctx, ex, 302, request_body=b"u=1")[1]) == 1
    ex = exchange("/login", method="POST", host="other.example", headers={"content-type": FORM})
    assert run(ctx, ex, 302, request_body=b"u=1")[1] == []


def test_multipart_signup() -> None:
    from tests.addons.test_rules import multipart

    ctx = context(rule('{ form = "email" }', path="/signup"))
    ctype, body = multipart([("email", "ada@example.com", None), ("password1", "x", None)])
    ex = exchange("/signup", method="POST", headers={"content-type": ctype})
    _, bindings = run(ctx, ex, 302, request_body=body)
    assert bindings[0].user_key == ctx.keys.user_key("ada@example.com")


def test_request_json_pointer() -> None:
    ctx = context(rule('{ request_json = "/user/email" }', status="[201]"))
    ex = exchange("/login", method="POST", headers={"content-type": "application/json"})
    body = json.dumps({"user": {"email": "ada@example.com", "password": "x"}}).encode()
    assert run(ctx, ex, 201, request_body=body)[1][0].user_key == ctx.keys.user_key("ada@example.com")


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not json", "not_json"), (b"[" * 30_000 + b"]" * 30_000, "not_json"), (b'{"user": 1}', "missing")],
)
def test_response_json_failures(body: bytes, reason: str) -> None:
    ctx = context(rule('{ response_json = "/user/id" }', status="[200]"))
    assert run(ctx, exchange("/login", method="POST"), 200, response_body=body)[1] == []
    assert metric(ctx, "gateway_extraction_failures_total", {"rule": "r", "reason": reason}) == 1


def test_response_json_pointer_numeric_id() -> None:
    ctx = context(rule('{ response_json = "/user/id" }', status="[200]"))
    ex = exchange("/login", method="POST")
    _, bindings = run(ctx, ex, 200, response_body=b'{"user": {"id": 42}, "access_token": "t"}')
    assert ex.want_response_body == 65536 and ex.want_request_body == 0
    assert bindings[0].user_key == ctx.keys.user_key("42")


def test_response_header_and_query() -> None:
    ctx = context(rule('{ header = "X-User-Id" }'))
    ex = exchange("/login", method="POST")
    assert run(ctx, ex, 302, headers={"x-user-id": "u9"})[1][0].user_key == ctx.keys.user_key("u9")
    ctx = context(rule('{ query = "uid" }', method="GET", status="[200]"))
    ex = exchange("/login?a=1&uid=u%2010", method="GET")
    assert run(ctx, ex, 200)[1][0].user_key == ctx.keys.user_key("u 10")


def test_jwt_cookie_from_set_cookie_verified() -> None:
    toml = rule('{ jwt_cookie = "session", algorithm = "HS256", key = "env:JWT_KEY" }', status="[200]")
    settings = load_settings(None, text=_dedent(toml), environ={**ENV, "JWT_KEY": "k" * 32})
    ctx = _ctx(settings)
    token = hs256({"sub": "user-7", "exp": NOW + 600}, b"k" * 32)
    ex = exchange("/login", method="POST")
    headers = {"set-cookie": f"session={token}; Path=/; HttpOnly"}
    assert run(ctx, ex, 200, headers=headers)[1][0].user_key == ctx.keys.user_key("user-7")
    # tampered: signed with another key → nothing bound, counted
    ex = exchange("/login", method="POST")
    headers = {"set-cookie": f"session={hs256({'sub': 'admin'}, b'x' * 32)}"}
    assert run(ctx, ex, 200, headers=headers)[1] == []
    assert metric(ctx, "gateway_extraction_failures_total", {"rule": "r", "reason": "jwt_signature"}) == 1


def test_jwt_cookie_from_request_and_unverified() -> None:
    ctx = context(rule('{ jwt_cookie = "jwt", verify = false, claim = "uid" }', method="GET", status="[200]"))
    ex = exchange("/login", method="GET", cookies={"jwt": hs256({"uid": 5}, b"unknown")})
    assert run(ctx, ex, 200)[1][0].user_key == ctx.keys.user_key("5")


def test_jwt_cookie_a_response_deletes_is_not_read_the_request_s_is() -> None:
    """A sign-out (or a refresh) answers ``jwt=deleted; Max-Age=0``: the browser keeps no such
    cookie, so the token read is the one the request sent, not ``deleted`` (until 2026-12-05
    read, and counted ``jwt_malformed``)."""
    sent = hs256({"sub": "u-3", "exp": NOW + 600}, b"k")
    for deletion in ("jwt=deleted; Path=/; Max-Age=0", "jwt=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"):
        ctx = context(rule('{ jwt_cookie = "jwt", verify = false }', status="[200]"))
        ex = exchange("/login", method="POST", cookies={"jwt": sent})
        assert run(ctx, ex, 200, headers={"set-cookie": deletion})[1][0].user_key == ctx.keys.user_key("u-3")
        assert metric(ctx, "gateway_extraction_failures_total", {"rule": "r", "reason": "jwt_malformed"}) == 0
    # The same reading as a cookie source's: a name ending in * is a prefix.
    ctx = context(rule('{ jwt_cookie = "jwt*", verify = false }', status="[200]"))
    ex = exchange("/login", method="POST", cookies={"jwt_v2": sent})
    assert run(ctx, ex, 200)[1][0].user_key == ctx.keys.user_key("u-3")


def test_jwt_expired_is_not_read() -> None:
    ctx = context(rule('{ jwt_cookie = "jwt", verify = false }', status="[200]"))
    ex = exchange("/login", method="POST", cookies={"jwt": hs256({"sub": "u", "exp": NOW - 3600}, b"k")})
    assert run(ctx, ex, 200)[1] == []
    assert metric(ctx, "gateway_extraction_failures_total", {"rule": "r", "reason": "jwt_expired"}) == 1


def test_a_token_nested_too_deep_is_counted_and_the_other_rules_still_run() -> None:
    """A visitor's own bearer token whose claims nest deeper than json takes: until
    2026-12-05 a RecursionError, logged with a traceback, and the request's other rules
    skipped; now ``jwt_malformed``, as any token that does not parse."""
    toml = (
        rule("{ jwt_authorization = true, verify = false }", status="[200]")
        + """
        [[identity.rules]]
        name = "after"
        path = "/login"
        status = [200]
        user_id = { request_header = "X-Account" }
    """
    )
    ctx = context(toml)
    nested = base64.urlsafe_b64encode(b"[" * 4000 + b"]" * 4000).decode().rstrip("=")  # valid, too deep
    headers = {"authorization": f"Bearer e30.{nested}.c2ln", "x-account": "acct-1"}
    ex = exchange("/login", method="POST", headers=headers)
    bindings = run(ctx, ex, 200)[1]
    assert [b.rule for b in bindings] == ["after"]
    assert metric(ctx, "gateway_extraction_failures_total", {"rule": "r", "reason": "jwt_malformed"}) == 1


def test_a_body_read_for_another_rule_is_not_read_past_this_rule_s_max_body() -> None:
    """The host reads a body within the largest ``max_body`` of the rules a request matches;
    a rule with a smaller one counts ``body_not_read`` for a larger body, as it does alone
    (until 2026-12-05 it read the body the other rule's bound let in: its capture ran over
    64 KiB where its operator had bounded it to 100 bytes)."""
    toml = """
        [[identity.rules]]
        name = "small"
        path = "/login"
        status = [200]
        user_id = { response_text = true, capture = 'data-user="([^"]+)"' }
        max_body = 100
        [[identity.rules]]
        name = "large"
        path = "/login"
        status = [200]
        user_id = { response_text = true, capture = 'data-account="([^"]+)"' }
    """
    ctx = context(toml)
    ex = exchange("/login", method="POST")
    page = b'<p data-user="u1" data-account="a1">' + b"x" * 200
    bindings = run(ctx, ex, 200, response_body=page)[1]
    assert ex.want_response_body == 65536
    assert [b.rule for b in bindings] == ["large"]
    labels = {"rule": "small", "reason": "body_not_read"}
    assert metric(ctx, "gateway_extraction_failures_total", labels) == 1
    ex = exchange("/login", method="POST")  # a body within both: both read it
    assert [b.rule for b in run(ctx, ex, 200, response_body=page[:40])[1]] == ["small", "large"]


def test_jwt_authorization_es256(tmp_path: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "site.pem").write_bytes(pem(key))
    toml = rule(
        '{ jwt_authorization = true, algorithm = "ES256", key = "site.pem" }', method="GET", status="[200]"
    )
    config = tmp_path / "gw.toml"
    config.write_text(_dedent(toml))
    ctx = _ctx(load_settings(config, environ=ENV))  # the PEM path is relative to the config file
    ex = exchange("/login", method="GET", headers={"authorization": f"Bearer {es256({'sub': 'e1'}, key)}"})
    assert run(ctx, ex, 200)[1][0].user_key == ctx.keys.user_key("e1")
    other = ec.generate_private_key(ec.SECP256R1())
    ex = exchange("/login", method="GET", headers={"authorization": f"Bearer {es256({'sub': 'e1'}, other)}"})
    assert run(ctx, ex, 200)[1] == []


@pytest.mark.parametrize(
    ("body", "ctype", "reason"),
    [
        (b"other=1", FORM, "missing"),
        (None, FORM, "body_not_read"),
        (b"{}", "application/json", "not_a_form"),
        (b"username=" + b"x" * 300, FORM, "invalid_user_id"),
        (b"username=%0A", FORM, "invalid_user_id"),
        (b"username=" + b"x" * 300, "text/plain", "not_a_form"),
    ],
)
def test_extraction_failure_counted_never_raised(body: bytes | None, ctype: str, reason: str) -> None:
    ctx = context(rule('{ form = "username" }'))
    ex = exchange("/login", method="POST", headers={"content-type": ctype})
    assert run(ctx, ex, 302, request_body=body)[1] == []
    assert metric(ctx, "gateway_extraction_failures_total", {"rule": "r", "reason": reason}) == 1


def test_same_pair_bound_once_per_process_other_visitors_still_bound() -> None:
    ctx = context(rule('{ query = "uid" }', method="GET", status="[200]"))
    stitching = configured(Stitching, ctx=ctx)
    identity = configured(Identity, ctx=ctx)
    bindings: list[Binding] = []
    cookie = None
    for i in range(3):
        ex = exchange("/login?uid=u1", method="GET", cookies={"gw_vid": cookie} if cookie else None)
        identity.request(ex)
        stitching.request(ex)
        ex.response = ResponseView(200, {})
        stitching.response(ex)
        identity.response(ex)
        cookie = cookie or ex.set_cookies[0].value
        bindings += [e for e in ex.events if isinstance(e, Binding)]
        assert ex.user_key == ctx.keys.user_key("u1"), i
    ex = exchange("/login?uid=u1", method="GET")  # a second device: a new visitor, bound too
    identity.request(ex)
    ex.response = ResponseView(200, {})
    stitching.response(ex)
    bindings += [e for e in ex.events if isinstance(e, Binding)]
    assert len(bindings) == 2 and bindings[0].visitor_key != bindings[1].visitor_key


def test_an_erased_user_is_bound_again_others_are_still_remembered() -> None:
    ctx = context(rule('{ query = "uid" }', method="GET", status="[200]"))
    stitching, identity = configured(Stitching, ctx=ctx), configured(Identity, ctx=ctx)
    cookie = {"gw_vid": "v1.AAAAAAAAAAAAAAAAAAAAAA.x"}

    def sign_in(uid: str) -> int:
        ex = exchange(f"/login?uid={uid}", method="GET", cookies=cookie)
        identity.request(ex)
        ex.response = ResponseView(200, {})
        stitching.response(ex)
        identity.response(ex)
        if ex.set_cookies:
            cookie["gw_vid"] = ex.set_cookies[0].value
        return sum(isinstance(e, Binding) for e in ex.events)

    assert [sign_in("ada"), sign_in("bob"), sign_in("ada"), sign_in("bob")] == [1, 1, 0, 0]
    stitching.erased({ctx.keys.user_key("ada")})
    assert [sign_in("ada"), sign_in("bob"), sign_in("ada")] == [1, 0, 0]


def test_lowercase_user_id_and_when_conditions() -> None:
    ctx = context(
        rule('{ request_json = "/variables/email" }', path="/graphql", status="[200]")
        + 'lowercase = true\nwhen = [{ request_json = "/operationName", equals = "SignUp" }]\n'
    )
    found = []
    for op in ("SignIn", "SignUp"):
        body = json.dumps({"operationName": op, "variables": {"email": " Ada@Example.COM "}}).encode()
        ex = exchange("/graphql", method="POST", headers={"content-type": "application/json"})
        found += run(ctx, ex, 200, request_body=body)[1]
    assert [b.user_key for b in found] == [ctx.keys.user_key("ada@example.com")]
    ex = exchange("/graphql", method="POST")
    assert run(ctx, ex, 200, request_body=None)[1] == []  # too large to read: counted
    assert (
        metric(ctx, "gateway_extraction_failures_total", {"rule": "r", "reason": "when_body_not_read"}) == 1
    )


def test_no_rules_means_disabled() -> None:
    assert configured(Stitching).enabled is False
    assert configured(Stitching, rule('{ form = "u" }')).enabled is True


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{ form = "password" }', "identity.rules[0].user_id.form: 'password' may hold a credential"),
        ('{ form = "user[Password]" }', "identity.rules[0].user_id.form: 'user[Password]' may hold"),
        ('{ request_json = "/auth/token" }', "identity.rules[0].user_id.request_json: '/auth/token'"),
        ('{ header = "X-Secret" }', "identity.rules[0].user_id.header: 'X-Secret' may hold"),
        ('{ header = "Authorization" }', "identity.rules[0].user_id.header: 'Authorization' carries"),
        ('{ header = "set-cookie" }', "identity.rules[0].user_id.header: 'set-cookie' carries"),
        ('{ query = "cardnumber" }', "identity.rules[0].user_id.query: 'cardnumber' may hold"),
        ('{ jwt_cookie = "s", verify = false, claim = "api_token" }', "user_id.claim: 'api_token'"),
        ('{ jwt_cookie = "s", verify = false, claim = "" }', "identity.rules[0].user_id.claim: names the"),
        ('{ form = "u", query = "v" }', "identity.rules[0].user_id: set exactly one of"),
        ("{ }", "identity.rules[0].user_id: set exactly one of"),
        ('{ jwt_cookie = "s" }', "identity.rules[0].user_id.key: a JWT is verified with a key"),
        ('{ jwt_cookie = "s", key = "env:K" }', "identity.rules[0].user_id.algorithm: must be one of"),
        # Without a key nothing is verified: an algorithm there was silently ignored, and a token
        # of any alg (none included) read, where the rule seemed to ask for that one.
        (
            '{ jwt_cookie = "s", verify = false, algorithm = "RS256" }',
            "identity.rules[0].user_id.algorithm: applies only with a key: under verify = false every"
            " token is read, whatever its alg",
        ),
        (
            '{ jwt_cookie = "s", algorithm = "HS256", key = "inline-secret" }',
            "identity.rules[0].user_id.key: an HMAC secret is never written in the file",
        ),
        ('{ jwt_cookie = "s", algorithm = "RS256", key = "missing.pem" }', "user_id.key: cannot read"),
        ('{ form = "u", claim = "x" }', "identity.rules[0].user_id: claim, algorithm, key and verify apply"),
        ('{ request_json = "user" }', 'user_id.request_json: a JSON pointer starts with "/"'),
        ('{ bogus = "x" }', "identity.rules[0].user_id.bogus: unknown key"),
    ],
)
def test_config_rejects_bad_sources(source: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        context(rule(source))
    assert any(expected in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("algorithm", "content", "expected"),
    [
        ("ES256", "p384", "identity.rules[0].user_id.key: ES256 needs an EC public key on secp256r1"),
        ("RS256", "p256", "identity.rules[0].user_id.key: RS256 needs an RSA public key"),
        (
            "ES256",
            "garbage",
            "identity.rules[0].user_id.key: not a PEM public key or certificate, nor a JSON key set",
        ),
    ],
)
def test_config_checks_public_keys(tmp_path: Any, algorithm: str, content: str, expected: str) -> None:
    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}
    data = pem(ec.generate_private_key(curves[content])) if content in curves else b"garbage"
    (tmp_path / "k.pem").write_bytes(data)
    config = tmp_path / "gw.toml"
    source = f'{{ jwt_cookie = "s", algorithm = "{algorithm}", key = "k.pem" }}'
    config.write_text(_dedent(rule(source)))
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ=ENV)
    assert expected in info.value.problems


def test_config_needs_identity_before_the_rule_addons() -> None:
    with pytest.raises(ConfigError) as info:
        context(rule('{ form = "u" }') + "[proxy]\naddons = ['stitching', 'identity', 'conversions']\n")
    assert (
        'proxy.addons: "stitching" needs "identity" before it (rules bind a visitor)' in info.value.problems
    )


def test_config_errors_name_the_rule_key() -> None:
    toml = rule('{ form = "u" }') + rule('{ form = "u" }', path="(x", status="[99]")
    with pytest.raises(ConfigError) as info:
        context(toml + "[proxy]\naddons = ['identity', 'campaign']\n")
    found = info.value.problems
    assert any(p.startswith("identity.rules[1].path: not a valid regular expression (") for p in found)
    assert "identity.rules[1].status[0]: must be 100..599, got 99" in found
    assert (
        "identity.rules[1].name: 'r' is also the name of identity.rules[0]; give each rule its own"
        " (it names the rule's bindings and metrics)"
    ) in found
    assert 'identity.rules: rules are configured but "stitching" is not in proxy.addons' in found


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


def _ctx(settings: Any) -> Context:
    from gateway.keys import Keys
    from gateway.metrics import Metrics

    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    return Context(settings=settings, keys=keys, metrics=Metrics())


def test_a_binding_keeps_its_visitor_s_population() -> None:
    """A sink must tell a binding made in a session that did not consent from a consented one
    (it never sends the first): the binding carries the visitor's population, as a touchpoint."""
    consent = '[privacy]\nconsent_cookie = { name = "banner", yes = ["all"] }\n'
    ctx = context(consent + rule('{ form = "username" }'))
    declined = exchange("/login", method="POST", headers={"content-type": FORM}, cookies={"banner": "none"})
    _, bindings = run(ctx, declined, 302, request_body=b"username=ada")
    assert [b.consent for b in bindings] == ["no_consent"]
    agreed = exchange("/login", method="POST", headers={"content-type": FORM}, cookies={"banner": "all"})
    _, bindings = run(ctx, agreed, 302, request_body=b"username=ada")
    assert [b.consent for b in bindings] == ["cookie"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_config_refuses_a_body_source_on_a_method_that_sends_no_body(method: str) -> None:
    """A browser sends no body with a GET or a HEAD (``fetch`` refuses one): a ``form`` or
    ``request_json`` source on such a rule never had a value, and was accepted; the rule then
    counted ``not_a_form`` (or ``missing``) at each request and never bound anyone."""
    toml = rule('{ form = "email" }', method=method, status="[200]") + (
        '        when = [{ request_json = "/op", equals = "me" }]\n'
        "        [[conversions]]\n"
        '        name = "c"\n'
        f'        method = "{method}"\n'
        '        path = "/thanks"\n'
        "        status = [200]\n"
        '        order_id = { request_json = "/order/id" }\n'
    )
    with pytest.raises(ConfigError) as info:
        context(toml)
    assert info.value.problems == [
        f"identity.rules[0].when[0].request_json: a {method} request sends no body (method ="
        f' "{method}"): read the query (query = "name") or the answer (response_json = "/pointer")',
        f"identity.rules[0].user_id.form: a {method} request sends no body (method ="
        f' "{method}"): read the query (query = "email") or the answer (response_json = "/pointer")',
        f"conversions[0].order_id.request_json: a {method} request sends no body (method ="
        f' "{method}"): read the query (query = "name") or the answer (response_json = "/pointer")',
    ]
    context(rule('{ query = "email" }', method=method, status="[200]"))  # what to write instead


@pytest.mark.parametrize(
    ("method", "status", "said"),
    [
        ("HEAD", "[200]", 'the answer to a HEAD request has no body (method = "HEAD")'),
        ("POST", "[204]", "an answer of status 204 has no body (status = [204])"),
        ("GET", "[304, 204]", "an answer of status 304 or 204 has no body (status = [304, 204])"),
    ],
)
def test_config_refuses_an_answer_body_source_on_an_answer_that_has_none(
    method: str, status: str, said: str
) -> None:
    """The answer to a HEAD, and a 204 or 304 (RFC 9110 §9.3.2, §15.3.5, §15.4.5), has no
    body: a ``response_json`` or ``response_text`` source on a rule that fires only on one
    never had a value, and was accepted; the rule counted ``not_json`` at each request (a
    reason that sent the operator looking at the site's JSON) and never bound anyone."""
    toml = rule('{ response_json = "/user/id" }', method=method, status=status) + (
        "        when = [{ response_text = true, absent = true }]\n"
        "        [[conversions]]\n"
        '        name = "c"\n'
        f'        method = "{method}"\n'
        '        path = "/thanks"\n'
        f"        status = {status}\n"
        '        order_id = { response_json = "/order/id" }\n'
    )
    with pytest.raises(ConfigError) as info:
        context(toml)
    instead = 'read a header of the answer instead (header = "Name")'
    if method == "HEAD":
        instead += ', or match the GET (method = "GET")'
    assert info.value.problems == [
        f"identity.rules[0].when[0].response_text: {said}, so this never has a value: {instead}",
        f"identity.rules[0].user_id.response_json: {said}, so this never has a value: {instead}",
        f"conversions[0].order_id.response_json: {said}, so this never has a value: {instead}",
    ]
    # One status of the list with a body is enough: a JSON API answering 200 or 204.
    context(rule('{ response_json = "/user/id" }', method="POST", status="[200, 204]"))
    context(rule('{ header = "X-User-Id" }', method=method, status=status))  # what to write instead
