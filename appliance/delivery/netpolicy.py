"""The one rule for every outbound URL: webhooks, media sources, later RenderCAD source URLs.

Two steps, so that no DNS lookup ever runs on the event loop:
- ``parse(url)`` at every entry (API and CLI): syntax only — http(s), a host, a valid port, no control
  characters, and a literal address that is refused outright (loopback, link-local, …).
- ``resolve(url)`` just before connecting (in a worker thread): every address the name resolves to is
  checked, alternate spellings unwrapped (IPv4-mapped IPv6, 6to4, Teredo, and the decimal/octal/hex IPv4
  forms getaddrinfo accepts), and the caller connects to the address that was checked (``pinned``), so a
  DNS answer that changes between the check and the connection (rebinding) cannot redirect it.
LAN ranges (10/8, 172.16/12, 192.168/16) are allowed: the appliance serves a studio's LAN.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedURL(ValueError):
    """A URL the appliance will not connect to; the message is safe to show to a user."""


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    address: str  # the checked address to connect to

    def pinned(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """(URL with the address in place of the name, extra headers, httpx extensions) for one request."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = literal + (f":{parts.port}" if parts.port else "")
        url = urlunsplit(parts._replace(netloc=netloc))
        host = parts.netloc.rpartition("@")[2]
        return url, {"Host": host}, {"sni_hostname": self.host}


def parse(url: object, *, allow_http: bool = True, allow_loopback: bool = False) -> SplitResult:
    """Syntax and literal-address checks, no network: RefusedURL with a one-line reason."""
    if not isinstance(url, str) or not url:
        raise RefusedURL("URL must be a non-empty string")
    if len(url) > 2048 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise RefusedURL("URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise RefusedURL(f"URL is malformed ({exc})") from None
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_http):
        raise RefusedURL("URL must be https:// (plain http:// only with allow_http_webhooks = true, "
                         "APPLIANCE_ALLOW_HTTP_WEBHOOKS=true)" if not allow_http else "URL must be http(s)://")
    if not parts.hostname:
        raise RefusedURL("URL has no host")
    literal = _literal(parts.hostname)
    if literal is not None and not allow_loopback:
        _check_address(literal, parts.hostname)
    if parts.hostname == "localhost" or parts.hostname.endswith(".localhost"):
        if not allow_loopback:
            raise RefusedURL(_loopback_message(parts.hostname))
    return parts


def resolve(url: str, *, allow_http: bool = True, allow_loopback: bool = False) -> Target:
    """Parse, resolve and check every address; blocking (DNS), so call it from a worker thread."""
    parts = parse(url, allow_http=allow_http, allow_loopback=allow_loopback)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise RefusedURL(f"cannot resolve host {host!r}") from None
    addresses = [_unwrap(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos]
    if not allow_loopback:
        for address in addresses:
            _check_address(address, host)
    if not addresses:
        raise RefusedURL(f"cannot resolve host {host!r}")
    return Target(url=url, host=host, address=str(addresses[0]))


def _literal(host: str) -> IPAddress | None:
    try:
        return _unwrap(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:  # the legacy IPv4 spellings: 2130706433, 0177.0.0.1, 0x7f.1 (inet_aton accepts them all)
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 spelling stands for (mapped, 6to4, Teredo client), else ip itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip.sixtofour:
            return ip.sixtofour
        if ip.teredo:
            return ip.teredo[1]
        if ip in ipaddress.IPv6Network("::/96") and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
            return ipaddress.IPv4Address(int(ip))
    return ip


def _check_address(ip: IPAddress, host: str) -> None:
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        raise RefusedURL(_loopback_message(host))


def _loopback_message(host: str) -> str:
    return (f"URL host {host} is a loopback, link-local or reserved address (allowed only with "
            "APPLIANCE_ALLOW_LOOPBACK_TARGETS=true)")
