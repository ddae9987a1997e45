"""Decide whether a webhook URL may be contacted, and which checked addresses to connect to.

The sender connects to :attr:`Target.addresses` only (never re-resolving the name), so a DNS
answer that changes between check and connect cannot steer a delivery inside the network.
Pure apart from the injectable ``resolve`` callable.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HEX = re.compile(r"0x[0-9a-f]*")
# Kept for the sake of path+query; anything else (non-ASCII, spaces) is percent-encoded.
_PATH_SAFE = "/?#[]@!$&'()*+,;=:%-._~"

# Not globally reachable per the IANA special-purpose registries. `ip.is_global` covers most of
# this, but its tables differ between Python releases (cpython #113171), so we check both.
_BLOCKED: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")


class UnsafeUrl(ValueError):
    """A webhook URL that conveyor refuses to contact.

    ``reason`` is a short stable code: ``syntax``, ``scheme``, ``userinfo``, ``host``,
    ``port``, ``resolve`` or ``address``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class AllowList:
    """Non-global networks that webhooks may reach anyway (``CONVEYOR_WEBHOOK_ALLOW_PRIVATE``)."""

    allow_all: bool = False
    networks: tuple[IPNetwork, ...] = ()
    #: The setting that widens this list, named in refusals.
    setting: str = "CONVEYOR_WEBHOOK_ALLOW_PRIVATE"

    @classmethod
    def parse(cls, setting: str | bool | None,
              name: str = "CONVEYOR_WEBHOOK_ALLOW_PRIVATE") -> AllowList:
        """``true`` admits every address; ``"10.0.0.0/8,fd00::/8"`` admits those networks;
        ``None``, ``""``, ``false`` admit none. Raises :class:`ValueError` on a bad CIDR.
        ``name`` is the setting's name, for messages."""
        if setting is None or setting is False:
            return cls(setting=name)
        if setting is True:
            return cls(allow_all=True, setting=name)
        text = setting.strip()
        if text.lower() in ("", "false"):
            return cls(setting=name)
        if text.lower() == "true":
            return cls(allow_all=True, setting=name)
        networks: list[IPNetwork] = []
        for part in text.split(","):
            cidr = part.strip()
            if not cidr:
                continue
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError as exc:
                raise ValueError(
                    f"{name}: {cidr!r} is not a CIDR "
                    "(use true, false or a comma-separated list such as 10.0.0.0/8)"
                ) from exc
        return cls(networks=tuple(networks), setting=name)

    def admits(self, ip: IPAddress) -> bool:
        return self.allow_all or any(
            ip.version == net.version and ip in net for net in self.networks
        )


NO_PRIVATE: Final = AllowList()


@dataclass(frozen=True, slots=True)
class Target:
    """A checked webhook destination."""

    scheme: str
    #: ASCII host as written (IDNA-encoded, lower case, no trailing dot, no brackets).
    host: str
    port: int
    #: Path and query, percent-encoded, at least ``/``.
    path: str
    #: Every address the host resolved to, each checked; connect to these only.
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: bracketed IPv6, port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"

    @property
    def is_ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def default_resolve(host: str, port: int) -> list[str]:
    """A and AAAA answers from the system resolver (``getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _parse_ipv4_part(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if not part.isdigit() or not part.isascii():
        return None
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part)


def _ends_in_number(host: str) -> bool:
    last = host.split(".")[-1]
    return (last.isascii() and last.isdigit()) or bool(_HEX.fullmatch(last))


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The WHATWG URL IPv4 parser: ``127.1``, ``0177.0.0.1``, ``0x7f000001``, ``2130706433``."""
    parts = host.split(".")
    if len(parts) > 4 or "" in parts:
        return None
    numbers = [_parse_ipv4_part(part) for part in parts]
    values = [n for n in numbers if n is not None]
    if len(values) != len(parts):
        return None
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    address = last + sum(n << (8 * (3 - i)) for i, n in enumerate(head))
    return ipaddress.IPv4Address(address)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to: IPv4-compatible, 6to4, Teredo, NAT64."""
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _non_global(ip: IPAddress) -> bool:
    return (
        not ip.is_global
        or ip.is_multicast
        or any(ip.version == net.version and ip in net for net in _BLOCKED)
    )


def check_address(ip: IPAddress, allow: AllowList = NO_PRIVATE) -> IPAddress:
    """Return the address to connect to, or raise ``UnsafeUrl("address")``.

    IPv4-mapped IPv6 addresses are replaced by their IPv4 address; other IPv6 addresses that
    embed an IPv4 address are refused if either part is non-global and not allowed.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return check_address(ip.ipv4_mapped, allow)
        if ip.scope_id:
            raise UnsafeUrl("address", f"{ip} carries a zone id")
    forms: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        forms.extend(_embedded_ipv4(ip))
    for form in forms:
        if _non_global(form) and not allow.admits(form):
            detail = "" if form == ip else f" (embeds {form})"
            raise UnsafeUrl(
                "address",
                f"{ip}{detail} is not a public address; set {allow.setting} to allow it",
            )
    return ip


def _split_netloc(netloc: str) -> tuple[str, str | None, bool]:
    """``(host, port text or None, bracketed)``."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            raise UnsafeUrl("host", "unterminated [IPv6] host")
        rest = netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UnsafeUrl("host", f"unexpected text after ]: {rest!r}")
        return netloc[1:end], (rest[1:] if rest else None), True
    host, sep, port = netloc.partition(":")
    if ":" in port:
        raise UnsafeUrl("host", f"too many ':' in {netloc!r}")
    return host, (port if sep else None), False


def _normalise_hostname(host: str) -> str:
    if host.endswith("."):
        host = host[:-1]
    try:
        ascii_host = host.lower() if host.isascii() else idna.encode(host, uts46=True).decode()
    except idna.IDNAError as exc:
        raise UnsafeUrl("host", f"invalid host name {host!r}: {exc}") from exc
    labels = ascii_host.split(".")
    if not ascii_host or len(ascii_host) > 253 or not all(map(_LABEL.fullmatch, labels)):
        raise UnsafeUrl("host", f"invalid host name {host!r}")
    return ascii_host


def _unique(addresses: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(dict.fromkeys(addresses))


def check_url(
    url: str,
    *,
    allow: AllowList = NO_PRIVATE,
    resolve: Resolver = default_resolve,
) -> Target:
    """Parse ``url``, resolve its host and check every address; raise :class:`UnsafeUrl`.

    Only ``http`` and ``https``, no userinfo. IP literals are read the way browsers read them
    (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]``); host
    names are resolved with ``resolve(host, port)`` and refused if any answer is non-global
    and not in ``allow``. ``resolve`` blocks; call from a thread in async code.
    """
    if any(c == "\\" or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeUrl("syntax", "URL contains a backslash, whitespace or a control character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeUrl("syntax", f"not a URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeUrl("scheme", f"only http and https URLs are allowed, not {scheme!r}")
    if "@" in parts.netloc:
        raise UnsafeUrl("userinfo", "credentials in the URL (user@host) are not allowed")

    raw_host, raw_port, bracketed = _split_netloc(parts.netloc)
    if not raw_host:
        raise UnsafeUrl("host", "URL has no host")
    if raw_port:
        if not (raw_port.isascii() and raw_port.isdigit()) or not 0 < int(raw_port) < 65536:
            raise UnsafeUrl("port", f"invalid port {raw_port!r}")
        port = int(raw_port)
    else:
        port = _DEFAULT_PORTS[scheme]

    literal: IPAddress | None
    if bracketed:
        if "%" in raw_host:
            raise UnsafeUrl("host", "IPv6 zone ids are not allowed")
        try:
            literal = ipaddress.IPv6Address(raw_host)
        except ValueError as exc:
            raise UnsafeUrl("host", f"invalid IPv6 address {raw_host!r}") from exc
        host = literal.compressed
    else:
        if "%" in raw_host:
            raise UnsafeUrl("host", f"percent-encoded host {raw_host!r}")
        host = _normalise_hostname(raw_host)
        literal = None
        if _ends_in_number(host):
            literal = _parse_ipv4(host)
            if literal is None:
                raise UnsafeUrl("host", f"invalid IPv4 address {raw_host!r}")
            host = str(literal)

    if literal is not None:
        answers: list[IPAddress] = [literal]
    else:
        try:
            resolved = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeUrl("resolve", f"cannot resolve {host!r}: {exc}") from exc
        try:
            answers = [ipaddress.ip_address(address) for address in resolved]
        except ValueError as exc:
            raise UnsafeUrl("resolve", f"{host!r} resolved to a non-address: {exc}") from exc
        if not answers:
            raise UnsafeUrl("resolve", f"{host!r} has no addresses")

    addresses = _unique(check_address(ip, allow) for ip in answers)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=addresses)
