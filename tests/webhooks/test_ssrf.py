"""SSRF checks on webhook URLs. Names resolve through a stub: no real DNS, no connection."""

from __future__ import annotations

import ipaddress

import pytest

from conveyor.webhooks.ssrf import AllowList, Target, UnsafeUrl, check_address, check_url

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

ZONE = {
    "public.test": [PUBLIC_V4],
    "dual.test": [PUBLIC_V4, PUBLIC_V6],
    "internal.test": ["10.0.0.1"],
    "mixed.test": [PUBLIC_V4, "10.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "loopback6.test": ["::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "empty.test": [],
    "garbage.test": ["not-an-address"],
    "xn--bcher-kva.test": [PUBLIC_V4],
}


class StubResolver:
    """Answers from :data:`ZONE` and records every question."""

    def __init__(self, zone: dict[str, list[str]] | None = None) -> None:
        self.zone = ZONE if zone is None else zone
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.zone:
            raise OSError(f"stub resolver: no such name {host!r}")
        return list(self.zone[host])


def refused(url: str, allow: AllowList | None = None) -> UnsafeUrl:
    resolver = StubResolver()
    with pytest.raises(UnsafeUrl) as info:
        check_url(url, allow=allow or AllowList(), resolve=resolver)
    return info.value


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://[::1]/", "::1"),
        ("http://0.0.0.0/", "0.0.0.0"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
        ("http://100.64.0.1/", "100.64.0.1"),
        ("http://0x7F.1/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://127.0.0.1./", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),
        ("http://10.1/", "10.0.0.1"),
        ("http://192.168.1.1:8080/", "192.168.1.1"),
        ("http://172.16.0.1/", "172.16.0.1"),
        ("http://[fd00::1]/", "fd00::1"),
        ("http://[fe80::1]/", "fe80::1"),
        ("http://[::]/", "::"),
        ("http://224.0.0.1/", "224.0.0.1"),
        ("http://[ff02::1]/", "ff02::1"),
        ("http://255.255.255.255/", "255.255.255.255"),
        ("http://240.0.0.1/", "240.0.0.1"),
        ("http://198.18.0.1/", "198.18.0.1"),
        ("http://192.0.2.1/", "192.0.2.1"),
    ],
)
def test_non_global_ip_literals_are_refused(url: str, address: str) -> None:
    error = refused(url)
    assert error.reason == "address"
    assert address in str(error)
    assert "CONVEYOR_WEBHOOK_ALLOW_PRIVATE" in str(error)


@pytest.mark.parametrize(
    ("url", "embedded"),
    [
        ("http://[::ffff:7f00:1]/", "127.0.0.1"),  # mapped, hex spelling
        ("http://[::127.0.0.1]/", "127.0.0.1"),  # IPv4-compatible (deprecated)
        ("http://[2002:a00:1::1]/", "10.0.0.1"),  # 6to4
        ("http://[64:ff9b::a9fe:a9fe]/", "169.254.169.254"),  # NAT64
    ],
)
def test_ipv6_addresses_embedding_a_private_ipv4_are_refused(url: str, embedded: str) -> None:
    error = refused(url)
    assert error.reason == "address"
    assert embedded in str(error)


def test_userinfo_is_refused() -> None:
    assert refused("http://user@127.0.0.1/").reason == "userinfo"
    assert refused("http://user:pw@public.test/").reason == "userinfo"
    assert refused("http://public.test@127.0.0.1/").reason == "userinfo"


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://x", "ftp://public.test/", "javascript:alert(1)", "//x/"],
)
def test_other_schemes_are_refused(url: str) -> None:
    assert refused(url).reason == "scheme"


@pytest.mark.parametrize(
    "url",
    ["http://", "http:///path", "http://:80/", "https://?x"],
)
def test_a_url_without_host_is_refused(url: str) -> None:
    assert refused(url).reason == "host"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://1.2.3.4.5/", "host"),
        ("http://256.0.0.1/", "host"),
        ("http://08.0.0.1/", "host"),
        ("http://public.test.123/", "host"),
        ("http://a..b/", "host"),
        ("http://-bad-.test/", "host"),
        ("http://%31%32%37.0.0.1/", "host"),
        ("http://[fe80::1%25eth0]/", "host"),
        ("http://[::1]x/", "host"),
        ("http://public.test:0/", "port"),
        ("http://public.test:65536/", "port"),
        ("http://public.test:8o/", "port"),
        ("http://public.test\\@127.0.0.1/", "syntax"),
        ("http://127.0.0.1\\.public.test/", "syntax"),
        ("http://public.test/a b", "syntax"),
        ("http://public.test/\r\nHost: x", "syntax"),
        ("http://[::1/", "syntax"),
    ],
)
def test_malformed_urls_are_refused(url: str, reason: str) -> None:
    assert refused(url).reason == reason


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    error = refused("http://internal.test/hook")
    assert error.reason == "address"
    assert "10.0.0.1" in str(error)


def test_one_private_answer_among_public_ones_refuses_the_url() -> None:
    error = refused("https://mixed.test/hook")
    assert error.reason == "address"
    assert "10.0.0.1" in str(error)


@pytest.mark.parametrize("name", ["metadata.test", "loopback6.test", "mapped.test"])
def test_resolved_special_addresses_are_refused(name: str) -> None:
    assert refused(f"http://{name}/").reason == "address"


@pytest.mark.parametrize(
    "url", ["http://nowhere.test/", "http://empty.test/", "http://garbage.test/"]
)
def test_resolution_failures_are_refused(url: str) -> None:
    assert refused(url).reason == "resolve"


def test_a_public_name_is_accepted_without_connecting() -> None:
    resolver = StubResolver()
    target = check_url("https://Public.Test./hooks/in?token=abc#frag", resolve=resolver)
    assert resolver.asked == [("public.test", 443)]
    assert target == Target(
        scheme="https",
        host="public.test",
        port=443,
        path="/hooks/in?token=abc",
        addresses=(ipaddress.ip_address(PUBLIC_V4),),
    )
    assert target.host_header == "public.test"
    assert not target.is_ip_literal


def test_every_answer_is_kept_in_order_and_deduplicated() -> None:
    resolver = StubResolver({"dual.test": [PUBLIC_V6, PUBLIC_V4, PUBLIC_V6]})
    target = check_url("http://dual.test:8080", resolve=resolver)
    assert target.addresses == (
        ipaddress.ip_address(PUBLIC_V6),
        ipaddress.ip_address(PUBLIC_V4),
    )
    assert target.path == "/"
    assert target.host_header == "dual.test:8080"


def test_a_public_ip_literal_is_accepted_without_resolving() -> None:
    resolver = StubResolver()
    target = check_url(f"http://[{PUBLIC_V6}]:8443/x", resolve=resolver)
    assert resolver.asked == []
    assert target.addresses == (ipaddress.ip_address(PUBLIC_V6),)
    assert target.host_header == f"[{PUBLIC_V6}]:8443"
    assert target.is_ip_literal


def test_an_encoded_public_literal_is_normalised() -> None:
    target = check_url("http://1572395042/", resolve=StubResolver())
    assert target.host == PUBLIC_V4
    assert target.addresses == (ipaddress.ip_address(PUBLIC_V4),)


def test_an_international_name_is_idna_encoded_before_resolving() -> None:
    resolver = StubResolver()
    target = check_url("https://bücher.test/ä?q=ü", resolve=resolver)
    assert resolver.asked == [("xn--bcher-kva.test", 443)]
    assert target.host == "xn--bcher-kva.test"
    assert target.path == "/%C3%A4?q=%C3%BC"


def test_allow_list_of_loopback_admits_loopback_only() -> None:
    allow = AllowList.parse("127.0.0.0/8")
    target = check_url("http://127.0.0.1:8000/hook", allow=allow, resolve=StubResolver())
    assert target.addresses == (ipaddress.ip_address("127.0.0.1"),)
    # Encoded forms and mapped addresses of allowed networks are admitted too.
    assert check_url("http://0x7f000001/", allow=allow, resolve=StubResolver()).host == (
        "127.0.0.1"
    )
    mapped = check_url("http://[::ffff:127.0.0.1]/", allow=allow, resolve=StubResolver())
    assert mapped.addresses == (ipaddress.ip_address("127.0.0.1"),)
    assert refused("http://10.0.0.1/", allow).reason == "address"
    assert refused("http://internal.test/", allow).reason == "address"
    assert refused("http://[::1]/", allow).reason == "address"


def test_allow_list_true_admits_every_non_global_address() -> None:
    allow = AllowList.parse("true")
    for url in ("http://127.0.0.1/", "http://10.0.0.1/", "http://internal.test/", "http://[::1]/"):
        assert check_url(url, allow=allow, resolve=StubResolver()).addresses
    # The other rules still hold.
    assert refused("http://user@127.0.0.1/", allow).reason == "userinfo"
    assert refused("file:///etc/passwd", allow).reason == "scheme"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, AllowList()),
        (False, AllowList()),
        ("", AllowList()),
        ("  ", AllowList()),
        ("false", AllowList()),
        ("FALSE", AllowList()),
        (True, AllowList(allow_all=True)),
        ("true", AllowList(allow_all=True)),
        (" True ", AllowList(allow_all=True)),
        (
            "10.0.0.0/8, fd00::/8,192.168.1.5",
            AllowList(
                networks=(
                    ipaddress.ip_network("10.0.0.0/8"),
                    ipaddress.ip_network("fd00::/8"),
                    ipaddress.ip_network("192.168.1.5/32"),
                )
            ),
        ),
        ("10.1.2.3/8,", AllowList(networks=(ipaddress.ip_network("10.0.0.0/8"),))),
    ],
)
def test_allow_list_parse(setting: str | bool | None, expected: AllowList) -> None:
    assert AllowList.parse(setting) == expected


@pytest.mark.parametrize("setting", ["yes", "10.0.0.0/33", "10.0.0.0/8,nope"])
def test_allow_list_parse_rejects_nonsense(setting: str) -> None:
    with pytest.raises(ValueError, match="CONVEYOR_WEBHOOK_ALLOW_PRIVATE"):
        AllowList.parse(setting)


def test_allow_list_for_an_embedded_address_needs_the_embedded_network() -> None:
    six_to_four = ipaddress.ip_address("2002:a00:1::1")  # embeds 10.0.0.1
    with pytest.raises(UnsafeUrl):
        check_address(six_to_four, AllowList.parse("127.0.0.0/8"))
    assert check_address(six_to_four, AllowList.parse("10.0.0.0/8")) == six_to_four


def test_unsafe_url_is_a_value_error_with_a_reason() -> None:
    error = refused("gopher://x")
    assert isinstance(error, ValueError)
    assert error.reason == "scheme"
    assert "http and https" in error.message


@pytest.mark.parametrize("address", ["192.88.99.1", "3fff::1", "64:ff9b:1::a00:1", "5f00::1"])
def test_special_ranges_are_refused_whatever_ipaddress_thinks(address: str) -> None:
    # Some Python releases call these global; conveyor's own table refuses them regardless.
    with pytest.raises(UnsafeUrl) as info:
        check_address(ipaddress.ip_address(address))
    assert info.value.reason == "address"
