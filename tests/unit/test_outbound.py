"""The outbound policy: which URLs a user or an operator may point a service's requests at."""

from ipaddress import ip_address

import pytest

from shared.outbound import Allowlist, HostUnresolved, OutboundPolicy, OutboundRefused, internal_kind, system_resolver

PUBLIC = ip_address("93.184.215.14")


def resolving(*addresses: str):
    return lambda host, port: [ip_address(address) for address in addresses]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.0.0.0", "an unspecified address"),
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("169.254.169.254", "a link-local address"),  # AWS, GCP and Azure metadata
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("100.100.100.200", "a not globally routable address"),  # Alibaba metadata, shared address space
        ("::", "an unspecified address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a private address"),  # AWS metadata over IPv6
        ("ff02::1", "a multicast address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "a link-local address"),
        ("64:ff9b::a9fe:a9fe", "a link-local address"),  # NAT64 of 169.254.169.254
    ],
)
def test_internal_addresses_are_named_by_their_kind(address, kind):
    assert internal_kind(ip_address(address)) == kind


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"])
def test_public_addresses_are_not_internal(address):
    assert internal_kind(ip_address(address)) is None


def test_the_metadata_address_is_refused_with_the_reason_and_the_way_to_permit_it():
    with pytest.raises(OutboundRefused) as refused:
        OutboundPolicy().check("http://169.254.169.254/latest", "webhook_url")

    assert str(refused.value) == (
        "webhook_url host 169.254.169.254 is a link-local address; set OUTBOUND_URL_ALLOWLIST to permit it"
    )


@pytest.mark.parametrize("url", ["http://[::1]:8080/hook", "http://[::ffff:a9fe:a9fe]/", "https://[fe80::1]/"])
def test_ipv6_literals_are_judged_too(url):
    with pytest.raises(OutboundRefused):
        OutboundPolicy().check(url)


def test_localhost_is_refused_because_it_resolves_to_loopback():
    with pytest.raises(OutboundRefused, match="host localhost resolves to (127.0.0.1|::1), a loopback address"):
        OutboundPolicy(resolve=system_resolver).check("http://localhost:8080/hook")


def test_a_name_with_one_internal_address_among_public_ones_is_refused():
    policy = OutboundPolicy(resolve=resolving("93.184.215.14", "10.0.0.7"))

    with pytest.raises(OutboundRefused, match="hooks.example resolves to 10.0.0.7, a private address"):
        policy.check("https://hooks.example/x")


def test_a_public_url_goes_to_the_address_checked_under_its_own_name():
    destination = OutboundPolicy(resolve=resolving("93.184.215.14")).check("https://user:pw@Hooks.Example:8443/a?b=1")

    assert destination.url == "https://user:pw@93.184.215.14:8443/a?b=1"
    assert destination.headers == {"Host": "Hooks.Example:8443"}
    assert destination.extensions == {"sni_hostname": "hooks.example"}


def test_an_ipv6_destination_is_bracketed():
    destination = OutboundPolicy(resolve=resolving("2606:2800:220:1:248:1893:25c8:1946")).check("http://hooks.example/")

    assert destination.url == "http://[2606:2800:220:1:248:1893:25c8:1946]:80/"


@pytest.mark.parametrize(
    ("allowlist", "url", "resolves_to"),
    [
        ("127.0.0.1", "http://127.0.0.1:9000/hook", "127.0.0.1"),
        ("127.0.0.1", "http://localhost:9000/hook", "127.0.0.1"),  # the address is permitted, by any name
        ("127.0.0.1", "http://[::ffff:127.0.0.1]:9000/", "127.0.0.1"),
        ("hooks.internal", "http://hooks.internal/x", "10.0.0.7"),
        ("hooks.internal:8080", "http://HOOKS.internal:8080/x", "10.0.0.7"),
        ("10.0.0.0/8", "http://hooks.internal/x", "10.20.30.40"),
        ("fd00::/8, 10.0.0.0/8", "http://[fd00::5]/x", "fd00::5"),
        ("[fd00::5]:443", "https://[fd00::5]/x", "fd00::5"),
    ],
)
def test_the_allowlist_permits_internal_targets_by_host_port_or_cidr(allowlist, url, resolves_to):
    OutboundPolicy(Allowlist.parse(allowlist), resolve=resolving(resolves_to)).check(url)


@pytest.mark.parametrize(
    ("allowlist", "url", "resolves_to"),
    [
        ("hooks.internal:8080", "http://hooks.internal:9090/x", "10.0.0.7"),  # another port
        ("10.0.0.0/8", "http://169.254.169.254/", "169.254.169.254"),
        ("hooks.internal", "http://other.internal/x", "10.0.0.7"),
    ],
)
def test_the_allowlist_permits_nothing_else(allowlist, url, resolves_to):
    with pytest.raises(OutboundRefused):
        OutboundPolicy(Allowlist.parse(allowlist), resolve=resolving(resolves_to)).check(url)


@pytest.mark.parametrize(
    ("allowlist", "problem"),
    [("10.0.0.0/33", "'10.0.0.0/33' is not a CIDR"), ("hooks:http", "'hooks:http' has an invalid port"),
     ("[fd00::1]x", "is not [IPv6]:port"), ("hooks:70000", "invalid port")],
)
def test_a_malformed_allowlist_is_refused_naming_the_entry(allowlist, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        Allowlist.parse(allowlist)


@pytest.mark.parametrize("url", ["ftp://hooks.example/", "http:///path", "file:///etc/passwd", "http://hooks.example:99999/"])
def test_urls_that_are_not_http_with_a_host_are_refused(url):
    with pytest.raises(OutboundRefused, match="webhook_url"):
        OutboundPolicy(resolve=resolving("93.184.215.14")).check(url, "webhook_url")


def test_a_host_that_does_not_resolve_says_so():
    with pytest.raises(HostUnresolved, match="host nothing.invalid does not resolve"):
        OutboundPolicy(resolve=system_resolver).check("http://nothing.invalid/")
