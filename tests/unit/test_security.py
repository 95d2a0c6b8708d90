"""server.security: the Host, Origin, method and token checks, bytes in, verdicts out."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from websockets.datastructures import Headers

from server.config import ServerSettings, load_settings
from server.errors import ErrorCode
from server.security import (
    HostPolicy,
    check_host,
    check_method,
    check_origin,
    check_request,
    check_token,
    check_upgrade,
    is_loopback,
    offered_token,
    same_origin,
    split_host,
)

MACHINE = ["kitchen", "kitchen.local"]


def settings(**values: object) -> ServerSettings:
    return ServerSettings.model_validate(values)


def policy(**values: object) -> HostPolicy:
    return HostPolicy.build(settings(**values), hostnames=MACHINE)


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers(list(pairs))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8765", ("localhost", 8765)),
        ("localhost.:80", ("localhost", 80)),
        ("127.0.0.1:8765", ("127.0.0.1", 8765)),
        ("[::1]:8765", ("::1", 8765)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("rebind.example:8765", ("rebind.example", 8765)),
        ("", None),
        ("a b", None),
        ("host:port", None),
        ("host:99999", None),
        ("host:", None),
        ("[::1", None),
        ("[nothost]:80", None),
        ("[::1]x", None),
        ("user@host", None),
        ("host/path", None),
        (":80", None),
        ("a:b:c", None),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost.localdomain", "app.localhost", "127.0.0.1", "127.1.2.3", "::1",
     "::ffff:127.0.0.1", "ip6-localhost"],
)  # fmt: skip
def test_loopback_names_and_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["localhost.example", "rebind.example", "10.0.0.1", "0.0.0.0", "::", "128.0.0.1", ""]
)
def test_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_default_policy_allows_loopback_only() -> None:
    p = policy()
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765", "LOCALHOST", "127.0.0.1"):
        assert check_host(p, [host]) is None, host
    # The machine's own names are for a server bound to the network.
    for host in ("rebind.example:8765", "kitchen:8765", "192.168.1.20:8765", "evil.localhost.com"):
        refusal = check_host(p, [host])
        assert refusal is not None, host
        assert refusal.status == HTTPStatus.FORBIDDEN
        assert refusal.code == ErrorCode.HOST_NOT_ALLOWED
        assert "server_names" in refusal.message


def test_bound_to_all_interfaces_allows_machine_names_and_addresses() -> None:
    for bind in ("0.0.0.0", "::"):
        p = policy(host=bind)
        for host in ("kitchen:8765", "kitchen.local", "192.168.1.20:8765", "[fe80::1]:8765"):
            assert check_host(p, [host]) is None, (bind, host)
        assert check_host(p, ["rebind.example:8765"]) is not None


def test_bound_to_an_address_allows_it_and_the_machine_names() -> None:
    p = policy(host="192.168.1.20")
    assert check_host(p, ["192.168.1.20:8765"]) is None
    assert check_host(p, ["kitchen.local:8765"]) is None
    assert check_host(p, ["192.168.1.21:8765"]) is not None
    assert check_host(p, ["rebind.example"]) is not None
    named = policy(host="speaker.lan")
    assert check_host(named, ["speaker.lan:8765"]) is None
    assert check_host(named, ["Speaker.LAN."]) is None
    assert check_host(policy(host="fd00::5"), ["[fd00::5]:8765"]) is None


def test_configured_server_names() -> None:
    p = policy(server_names=["kiosk.local", "*.home.lan", "Assistant.Example:443"])
    for host in ("kiosk.local:8765", "KIOSK.LOCAL", "tv.home.lan", "a.b.home.lan:1",
                 "assistant.example"):  # fmt: skip
        assert check_host(p, [host]) is None, host
    for host in ("home.lan", "evilhome.lan", "kiosk.local.evil.example", "rebind.example"):
        assert check_host(p, [host]) is not None, host
    assert check_host(policy(server_names=["*"]), ["rebind.example:8765"]) is None


def test_host_header_absent_twice_or_malformed() -> None:
    p = policy()
    assert check_host(p, []) is None  # no browser omits Host: not a rebinding page
    assert check_host(p, ["localhost", "localhost"]) is not None
    assert check_host(p, ["local host"]) is not None
    assert check_host(p, ["localhost:http"]) is not None


def test_methods() -> None:
    assert check_method("GET") is None and check_method("HEAD") is None
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "X" * 100):
        refusal = check_method(method)
        assert refusal is not None
        assert refusal.status == HTTPStatus.METHOD_NOT_ALLOWED
        assert refusal.code == ErrorCode.METHOD_NOT_ALLOWED
        assert dict(refusal.headers) == {"Allow": "GET, HEAD"}
        assert len(refusal.message) < 80


def test_check_request_applies_method_to_plain_http_and_host_to_all() -> None:
    server = settings()
    local = headers(("Host", "127.0.0.1:8765"))
    rebound = headers(("Host", "rebind.example:8765"))
    assert check_request(server, "GET", local, upgrade=False) is None
    assert check_request(server, "GET", local, upgrade=True) is None
    refused = check_request(server, "POST", local, upgrade=False)
    assert refused is not None and refused.code == ErrorCode.METHOD_NOT_ALLOWED
    refused = check_request(server, "HEAD", local, upgrade=True)
    assert refused is not None and dict(refused.headers) == {"Allow": "GET"}
    for upgrade in (False, True):
        refused = check_request(server, "GET", rebound, upgrade=upgrade)
        assert refused is not None and refused.code == ErrorCode.HOST_NOT_ALLOWED


def test_same_origin_needs_an_allowed_name() -> None:
    p = policy()
    assert same_origin("http://127.0.0.1:8765", "127.0.0.1:8765", p)
    assert same_origin("http://localhost:8765", "LOCALHOST:8765", p)
    assert same_origin("http://[::1]:8765", "[::1]:8765", p)
    assert same_origin("http://localhost", "localhost:80", p)
    assert same_origin("https://localhost", "localhost", p)
    # The rebinding case: the page's origin equals the Host it sent, but the name is not ours.
    assert not same_origin("http://rebind.example:8765", "rebind.example:8765", p)
    assert not same_origin("http://localhost:8766", "localhost:8765", p)
    assert not same_origin("http://localhost:8765", None, p)
    assert not same_origin("null", "localhost:8765", p)
    assert not same_origin("ftp://localhost:8765", "localhost:8765", p)
    assert not same_origin("http://localhost:99999", "localhost:8765", p)
    anything = policy(server_names=["*"])
    assert same_origin("http://rebind.example:8765", "rebind.example:8765", anything)


def test_origin_check() -> None:
    server = settings(allowed_origins=["https://intranet.example/"])
    local = ("Host", "127.0.0.1:8765")
    assert check_origin(server, headers(local)) is None  # no Origin: not a browser
    assert check_origin(server, headers(local, ("Origin", "http://127.0.0.1:8765"))) is None
    assert check_origin(server, headers(local, ("Origin", "https://intranet.example"))) is None
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "garbage"):
        refusal = check_origin(server, headers(local, ("Origin", origin)))
        assert refusal is not None and refusal.code == ErrorCode.ORIGIN_NOT_ALLOWED, origin
        assert refusal.status == HTTPStatus.FORBIDDEN
    rebound = headers(("Host", "rebind.example:8765"), ("Origin", "http://rebind.example:8765"))
    assert check_origin(server, rebound) is not None
    two = headers(local, ("Origin", "http://127.0.0.1:8765"), ("Origin", "http://evil.example"))
    assert check_origin(server, two) is not None
    anyone = settings(allowed_origins=["*"])
    assert check_origin(anyone, headers(local, ("Origin", "http://evil.example"))) is None


@pytest.mark.parametrize(
    "authorization", ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "  Bearer   s3cret  "]
)
def test_bearer_scheme_is_case_insensitive(authorization: str) -> None:
    server = settings(token="s3cret")
    assert offered_token(headers(("Authorization", authorization)), "/") == b"s3cret"
    assert check_token(server, headers(("Authorization", authorization)), "/") is None


def test_token_check() -> None:
    server = settings(token="s3cret")
    assert check_token(settings(), headers(), "/") is None  # no token configured
    assert check_token(server, headers(), "/?token=s3cret") is None
    assert check_token(server, headers(), "/v1/realtime?model=x&token=s3cret") is None
    for offered, target in [
        (None, "/"),
        ("Bearer wrong", "/"),
        ("Basic czNjcmV0", "/"),
        ("Bearer", "/"),
        ("Bearer s3cret2", "/"),
        ("Bearer wrong", "/?token=wrong"),
        # Any byte may arrive in a header (websockets decodes it as ISO-8859-1): no crash.
        ("Bearer \xff\xfe", "/"),
    ]:
        h = headers(("Authorization", offered)) if offered is not None else headers()
        refusal = check_token(server, h, target)
        assert refusal is not None, (offered, target)
        assert refusal.status == HTTPStatus.UNAUTHORIZED and refusal.code == ErrorCode.UNAUTHORIZED
    # A non-Bearer Authorization header (a proxy's Basic) leaves the query token in use.
    assert check_token(server, headers(("Authorization", "Basic eDp5")), "/?token=s3cret") is None
    unicode_token = settings(token="clé")
    assert check_token(unicode_token, headers(), "/?token=cl%C3%A9") is None
    # The UTF-8 bytes of "clé" in a header, as websockets decodes them.
    sent = "Bearer " + "clé".encode().decode("latin-1")
    assert check_token(unicode_token, headers(("Authorization", sent)), "/") is None
    assert check_token(unicode_token, headers(("Authorization", "Bearer cle")), "/") is not None


def test_check_upgrade_is_origin_then_token() -> None:
    server = settings(token="s3cret")
    local = ("Host", "localhost:8765")
    refused = check_upgrade(server, headers(local, ("Origin", "http://evil.example")), "/")
    assert refused is not None and refused.code == ErrorCode.ORIGIN_NOT_ALLOWED
    refused = check_upgrade(server, headers(local), "/")
    assert refused is not None and refused.code == ErrorCode.UNAUTHORIZED
    assert check_upgrade(server, headers(local, ("Authorization", "bearer s3cret")), "/") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["https://a.example", "https://b.example"]', ["https://a.example", "https://b.example"]),
        ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
        ("https://a.example", ["https://a.example"]),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_lists_from_the_environment(value: str, expected: list[str]) -> None:
    environ = {"CHINWAG_SERVER__ALLOWED_ORIGINS": value, "CHINWAG_SERVER__SERVER_NAMES": value}
    loaded = load_settings(environ=environ)
    assert loaded.server.allowed_origins == expected
    assert loaded.server.server_names == expected


def test_a_broken_json_list_in_the_environment_is_a_config_error() -> None:
    from server.config import ConfigError

    with pytest.raises(ConfigError, match="allowed_origins"):
        load_settings(environ={"CHINWAG_SERVER__ALLOWED_ORIGINS": '["https://a.example"'})
    with pytest.raises(ConfigError, match="server_names"):
        load_settings(environ={"CHINWAG_SERVER__SERVER_NAMES": "[1, 2]"})
