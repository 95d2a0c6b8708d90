"""Who may use the server: the Host, Origin, method and token checks, as pure functions.

No I/O and no asyncio: each check takes the settings and the request's header values and
returns None (go on) or a `Refusal` that the HTTP layer turns into a JSON error response.
The threat model and where each check applies are in docs/security.md.

- **Host** (every HTTP request and WebSocket upgrade): a page on an attacker's domain whose
  DNS name is rebound to 127.0.0.1 (DNS rebinding) reaches the server with its own name in
  `Host`. Only names the server is really reached by pass: loopback names and addresses, the
  bind address, the machine's host names when serving the network, and `[server]
  server_names`.
- **Origin** (WebSocket upgrades): a browser page may connect when it is the server's own
  page (same origin, under an allowed name) or its origin is in `[server] allowed_origins`.
  Clients that send no Origin are not browsers (CLIs, devices) and pass.
- **Token** (WebSocket upgrades, when `[server] token` is set): `Authorization: Bearer
  <token>` (the scheme in any case) or `?token=<token>`.
- **Method** (plain HTTP): GET and HEAD only; anything else is 405 with `Allow: GET, HEAD`.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from server.config import ServerSettings
from server.errors import ErrorCode

# Names every resolver maps to the loopback interface (RFC 6761: "localhost" and names under
# it; browsers resolve *.localhost to loopback themselves, so no DNS answer can rebind them).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
HTTP_METHODS = ("GET", "HEAD")
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class HeaderSource(Protocol):
    """What the checks read from a request's headers (websockets' `Headers` is one)."""

    def get_all(self, key: str) -> list[str]: ...


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status, the error code and a message for people."""

    status: HTTPStatus
    code: ErrorCode
    message: str
    headers: tuple[tuple[str, str], ...] = ()


# --- parsing --------------------------------------------------------------------------------


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header value (or an authority) as (lower-case host, port), or None if malformed.

    "[::1]:8765" -> ("::1", 8765); "LocalHost.:80" -> ("localhost", 80); "example" -> (.., None).
    """
    value = value.strip()
    if not value or any(c.isspace() or c in "/?#@\\" for c in value):
        return None
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = _port(rest[1:])
            if port is None:
                return None
        if _ip(host) is None:
            return None
    elif value.count(":") == 1:
        host, _, digits = value.partition(":")
        port = _port(digits)
        if port is None:
            return None
    elif ":" in value:
        host = value  # a bare IPv6 address (not valid in Host, but unambiguous)
        if _ip(host) is None:
            return None
    else:
        host = value
    host = host.lower()
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # the absolute form of a name is the same name
    if not host:
        return None
    return host, port


def _port(digits: str) -> int | None:
    if not digits.isascii() or not digits.isdigit() or len(digits) > 5:
        return None
    port = int(digits)
    return port if port <= 65535 else None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """A loopback name or address: localhost (and names under it), 127.0.0.0/8, ::1."""
    address = _ip(host)
    if address is None:
        return host in LOOPBACK_NAMES or host.endswith(".localhost")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# --- Host -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def machine_names() -> frozenset[str]:
    """This machine's host name, its first label and its mDNS name (no lookup: uname only)."""
    name = socket.gethostname().lower().rstrip(".")
    if not name:
        return frozenset()
    short = name.split(".", 1)[0]
    return frozenset({name, short, f"{short}.local"})


@dataclass(frozen=True)
class HostPolicy:
    """The names (and addresses) the server accepts in the Host header."""

    names: frozenset[str]
    # The server is bound to all interfaces: any IP address literal is a way to reach it.
    any_address: bool = False
    # `server_names` holds "*": the check is off.
    any_host: bool = False
    # Suffixes from `server_names` entries like "*.example.lan" (stored as ".example.lan").
    suffixes: tuple[str, ...] = ()

    @classmethod
    def build(cls, server: ServerSettings, hostnames: Iterable[str] | None = None) -> HostPolicy:
        """The policy for these settings; `hostnames` defaults to this machine's names."""
        bind = server.host.strip().lower()
        names: set[str] = set()
        suffixes: list[str] = []
        any_host = False
        for entry in server.server_names:
            entry = entry.strip().lower()
            if entry == "*":
                any_host = True
            elif entry.startswith("*."):
                suffixes.append(entry[1:])
            elif (parsed := split_host(entry)) is not None:
                names.add(parsed[0])
        wildcard = bind in WILDCARD_BINDS
        if not wildcard:
            address = _ip(bind.strip("[]"))
            names.add(str(address) if address is not None else bind.rstrip("."))
        if not is_loopback(bind) or wildcard:
            # Serving the network: the machine's own names reach it.
            names.update(machine_names() if hostnames is None else hostnames)
        return cls(frozenset(names), wildcard, any_host, tuple(suffixes))

    def allows(self, host: str) -> bool:
        """Whether a host (lower case, without port, as from split_host) is one of ours."""
        if self.any_host or is_loopback(host) or host in self.names:
            return True
        address = _ip(host)
        if address is not None:
            # An address literal cannot be rebound: the page that sent it is on that address.
            return self.any_address or str(address) in self.names
        return any(host.endswith(suffix) for suffix in self.suffixes)


def check_host(policy: HostPolicy, hosts: list[str]) -> Refusal | None:
    """The DNS rebinding check, for every HTTP request and WebSocket upgrade.

    No Host header at all (HTTP/1.0 tools, raw sockets) passes: browsers always send one,
    so its absence cannot come from a rebinding page. Two Host headers are refused.
    """
    if not hosts:
        return None
    if len(hosts) > 1:
        return _host_refusal("more than one Host header")
    parsed = split_host(hosts[0])
    if parsed is None:
        return _host_refusal("malformed Host header")
    if policy.allows(parsed[0]):
        return None
    return _host_refusal(
        f"this server is not reached by the name {parsed[0]!r}; add it to [server] server_names"
    )


def _host_refusal(message: str) -> Refusal:
    return Refusal(HTTPStatus.FORBIDDEN, ErrorCode.HOST_NOT_ALLOWED, message)


# --- request target -------------------------------------------------------------------------

# Longest request target (path and query) answered; websockets refuses lines over 8 kB itself.
MAX_TARGET_CHARS = 2048
_HTTP_ERROR_CODES = {
    HTTPStatus.BAD_REQUEST: ErrorCode.BAD_REQUEST,
    HTTPStatus.REQUEST_URI_TOO_LONG: ErrorCode.URI_TOO_LONG,
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: ErrorCode.HEADERS_TOO_LARGE,
    HTTPStatus.NOT_FOUND: ErrorCode.NOT_FOUND,
    HTTPStatus.INTERNAL_SERVER_ERROR: ErrorCode.INTERNAL_ERROR,
}


def check_target(target: str) -> Refusal | None:
    """The request target (path and query) as received: no control characters (a NUL cannot
    name a file), at most MAX_TARGET_CHARS."""
    if len(target) > MAX_TARGET_CHARS:
        return Refusal(
            HTTPStatus.REQUEST_URI_TOO_LONG,
            ErrorCode.URI_TOO_LONG,
            f"the request target is {len(target)} characters; the limit is {MAX_TARGET_CHARS}",
        )
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return Refusal(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.BAD_REQUEST,
            "the request target holds a control character; percent-encode it",
        )
    return None


def http_error_code(status: int) -> str:
    """The `code` of a JSON error body for an HTTP status (for websockets' own refusals:
    a request line or headers too long, a malformed upgrade, shutting down)."""
    try:
        known = HTTPStatus(status)
    except ValueError:
        return "http_error"
    code = _HTTP_ERROR_CODES.get(known)
    if code is not None:
        return code.value
    return known.phrase.lower().replace(" ", "_").replace("-", "_")


# --- method ---------------------------------------------------------------------------------


def check_method(method: str, allowed: tuple[str, ...] = HTTP_METHODS) -> Refusal | None:
    """Plain HTTP answers GET and HEAD (a WebSocket upgrade is a GET); anything else is 405
    with an Allow header."""
    if method in allowed:
        return None
    return Refusal(
        HTTPStatus.METHOD_NOT_ALLOWED,
        ErrorCode.METHOD_NOT_ALLOWED,
        f"method {method[:20]!r} is not allowed here; use {' or '.join(allowed)}",
        (("Allow", ", ".join(allowed)),),
    )


# --- Origin ---------------------------------------------------------------------------------


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin header value, the port made explicit."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme]


def same_origin(origin: str, host: str | None, policy: HostPolicy) -> bool:
    """Whether a page at `origin` is the server's own: the origin names the host and port the
    request came to (the Host header) and that host is one of the server's allowed names."""
    if host is None:
        return False
    page, target = _origin_parts(origin), split_host(host)
    if page is None or target is None:
        return False
    scheme, page_host, page_port = page
    target_host, target_port = target
    return (
        page_host == target_host
        and page_port == (target_port or DEFAULT_PORTS[scheme])
        and policy.allows(page_host)
    )


def check_origin(
    server: ServerSettings, headers: HeaderSource, policy: HostPolicy | None = None
) -> Refusal | None:
    """The browser check for WebSocket upgrades (browsers let any page open one)."""
    origins = headers.get_all("Origin")
    if not origins:
        return None  # not a browser page: a CLI, a device, a server
    hosts = headers.get_all("Host")
    origin = origins[0]
    allowed = {o.strip().rstrip("/") for o in server.allowed_origins}
    if len(origins) == 1 and (
        "*" in allowed
        or origin.strip().rstrip("/") in allowed
        or same_origin(
            origin, hosts[0] if len(hosts) == 1 else None, policy or HostPolicy.build(server)
        )
    ):
        return None
    return Refusal(
        HTTPStatus.FORBIDDEN,
        ErrorCode.ORIGIN_NOT_ALLOWED,
        "this page's origin is not in [server] allowed_origins",
    )


# --- token ----------------------------------------------------------------------------------


def offered_token(headers: HeaderSource, target: str) -> bytes | None:
    """The token a client offers, as bytes: `Authorization: Bearer <token>` (the scheme in any
    case), else the `token` query parameter of the request target (UTF-8, percent-decoded).

    websockets decodes header values as ISO-8859-1, so encoding them back gives the bytes the
    client sent: a UTF-8 token matches either way.
    """
    for value in headers.get_all("Authorization"):
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip().encode("latin-1", "replace")
    tokens = parse_qs(urlsplit(target).query).get("token")
    return tokens[0].encode("utf-8", "replace") if tokens else None


def check_token(server: ServerSettings, headers: HeaderSource, target: str) -> Refusal | None:
    """When `[server] token` is set, WebSocket upgrades must offer it (compared in constant
    time)."""
    expected = server.token
    if not expected:
        return None
    offered = offered_token(headers, target)
    if offered is not None and hmac.compare_digest(offered, expected.encode("utf-8")):
        return None
    return Refusal(HTTPStatus.UNAUTHORIZED, ErrorCode.UNAUTHORIZED, "a valid token is required")


def check_upgrade(server: ServerSettings, headers: HeaderSource, target: str) -> Refusal | None:
    """Origin, then token, for a WebSocket upgrade (after check_request)."""
    return check_origin(server, headers) or check_token(server, headers, target)


def check_request(
    server: ServerSettings, method: str, headers: HeaderSource, upgrade: bool
) -> Refusal | None:
    """What applies to every request before routing: the method and the Host."""
    if refusal := check_method(method, ("GET",) if upgrade else HTTP_METHODS):
        return refusal
    return check_host(HostPolicy.build(server), headers.get_all("Host"))
