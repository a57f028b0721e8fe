"""The outbound guard on its own: the address table, the allow-list, and the request it builds.

No test here opens a connection: names are answered by a resolver double, requests are built
and never sent, and cloud-metadata and other addresses are judged on the address alone.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from pydantic import ValidationError

from openi2v.config import Settings
from openi2v.errors import MediaUnavailable
from openi2v.outbound import AllowList, OutboundGuard, refusal

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


class Resolver:
    """Answers from a dict, one answer list per call in turn for a name given several; counts calls."""

    def __init__(self, answers: dict[str, list[list[str]] | list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):
            return answer[min(len(self.calls), len(answer)) - 1]
        return answer


def guard(answers=None, allow: str = "", allow_all: bool = False) -> OutboundGuard:
    return OutboundGuard(AllowList.parse(allow), allow_all, Resolver(answers or {}))


def build(g: OutboundGuard, url: str, field: str = "image") -> httpx.Request:
    with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(500))) as client:
        return g.request(client, "GET", field, url)


def refused(g: OutboundGuard, url: str, field: str = "image") -> str:
    with pytest.raises(MediaUnavailable) as err:
        build(g, url, field)
    assert err.value.task_code == 1402
    return err.value.message


# --- the table ------------------------------------------------------------------------------

NOT_PUBLIC = [
    "0.0.0.0", "0.255.255.255", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.255",
    "100.100.100.200",  # Alibaba Cloud metadata
    "127.0.0.1", "127.255.255.254", "169.254.0.1", "169.254.169.254",  # AWS/GCP/Azure metadata
    "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.0.1", "192.168.255.255",
    "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255",
    "::", "::1", "fc00::1", "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::1", "fe80::1%2", "fec0::1", "ff02::1", "ff0e::1", "2001:db8::1", "3fff::1", "100::1", "5f00::1",
    "2001:2::1", "4000::1", "::2:3:4:5",
    # IPv6 forms that carry a non-public IPv4 address
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:0:127.0.0.1",
    "::7f00:1", "::a9fe:a9fe", "::a00:1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::6464:64c8",
    "64:ff9b:1::808:808",  # local-use NAT64: refused whatever it carries
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::1",
    "2001:0:808:808::80ff:fffe",  # Teredo, public server 8.8.8.8, client 127.0.0.1 (stored inverted)
    "2001:0:a00:1::f7f7:f7f7",  # Teredo, server 10.0.0.1, public client 8.8.8.8
]
PUBLIC = [
    "8.8.8.8", "1.1.1.1", PUBLIC_V4, "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
    "126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0", "172.15.255.255", "172.32.0.0",
    "192.0.1.255", "192.0.3.0", "192.167.255.255", "192.169.0.0", "198.17.255.255", "198.20.0.0",
    "223.255.255.255",
    "2001:4860:4860::8888", "2606:4700:4700::1111", PUBLIC_V6, "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2001:0:808:808::f7f7:f7f7",
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address):
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass_even_next_to_a_refused_range(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_a_wrapped_address_is_judged_by_the_ipv4_it_carries():
    assert "loopback" in refusal(ipaddress.ip_address("64:ff9b::7f00:1"))
    assert "link-local" in refusal(ipaddress.ip_address("2002:a9fe:a9fe::"))


# --- the allow-list and the settings ----------------------------------------------------------

def test_allow_list_parses_names_ips_and_cidrs():
    allow = AllowList.parse(" MinIO ,10.1.2.3, 192.168.0.0/16,,fd00::/8, svc_a.internal. ")
    assert allow.hosts == {"minio", "svc_a.internal"}
    assert [str(n) for n in allow.networks] == ["10.1.2.3/32", "192.168.0.0/16", "fd00::/8"]
    assert allow.admits("minio", ipaddress.ip_address("127.0.0.1"))
    assert allow.admits("x", ipaddress.ip_address("192.168.7.7"))
    assert not allow.admits("x", ipaddress.ip_address("10.1.2.4"))
    assert not allow.admits("minio.evil", ipaddress.ip_address("10.9.9.9"))


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "0x7f.1", "2130706433", "0177.0.0.1", "[::1]", "a b",
                                   "*.example.com", "host:8080", "http://x", "-lead.example", "bücher.de",
                                   "a" * 64 + ".com", "10.0.0.0/33"])
def test_a_malformed_allow_entry_stops_the_settings_naming_it(entry):
    with pytest.raises(ValueError, match="OPENI2V_FETCH_ALLOW"):
        AllowList.parse(f"ok.example, {entry}")
    with pytest.raises(ValidationError) as err:
        Settings(fetch_allow=f"ok.example,{entry}")
    assert repr(entry) in str(err.value)


def test_fetch_allow_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENI2V_FETCH_ALLOW", "minio,10.0.0.0/8")
    assert OutboundGuard.from_settings(Settings()).allow == AllowList.parse("minio,10.0.0.0/8")
    monkeypatch.setenv("OPENI2V_FETCH_ALLOW", "minio,10.0.0.1/8")
    with pytest.raises(ValidationError, match="10.0.0.1/8"):
        Settings()


def test_webhook_retry_delays_from_the_environment(monkeypatch):
    assert Settings().webhook_retry_delays == (5, 15, 60, 300, 900, 1800)
    monkeypatch.setenv("OPENI2V_WEBHOOK_RETRY_DELAYS", " 0, 2.5 ,60")
    assert Settings().webhook_retry_delays == (0, 2.5, 60)
    monkeypatch.setenv("OPENI2V_WEBHOOK_RETRY_DELAYS", "")
    assert Settings().webhook_retry_delays == ()


@pytest.mark.parametrize("value", ["5,x", "5,,15", "-1", "inf", "nan"])
def test_a_malformed_retry_schedule_stops_the_settings(value, monkeypatch):
    monkeypatch.setenv("OPENI2V_WEBHOOK_RETRY_DELAYS", value)
    with pytest.raises(ValidationError, match="webhook_retry_delays"):
        Settings()


# --- the request it builds --------------------------------------------------------------------

def test_the_request_goes_to_the_checked_address_with_the_name_kept():
    g = guard({"media.example.com": [PUBLIC_V4]})
    req = build(g, "HTTPS://user:pw@Media.Example.COM:8443/a/b.png?x=1")
    assert str(req.url) == f"https://user:pw@{PUBLIC_V4}:8443/a/b.png?x=1"
    assert req.headers["host"] == "media.example.com:8443"
    assert req.extensions["sni_hostname"] == "media.example.com"
    assert g.resolve.calls == ["media.example.com"]


def test_an_ipv6_answer_is_pinned_in_brackets_and_the_default_port_stays_implicit():
    req = build(guard({"v6.example": [PUBLIC_V6]}), "http://v6.example/x")
    assert str(req.url) == f"http://[{PUBLIC_V6}]/x"
    assert req.headers["host"] == "v6.example"


def test_each_request_resolves_once_and_a_later_answer_is_judged_afresh():
    g = guard({"rebind.example": [[PUBLIC_V4], ["127.0.0.1"]]})
    assert build(g, "http://rebind.example/a").url.host == PUBLIC_V4
    message = refused(g, "http://rebind.example/a")
    assert g.resolve.calls == ["rebind.example", "rebind.example"]
    assert message == "image: the host rebind.example is not a public address (set OPENI2V_FETCH_ALLOW to allow it)"


def test_one_private_answer_among_public_ones_refuses_the_host():
    refused(guard({"mixed.example": [PUBLIC_V4, "10.0.0.7"]}), "http://mixed.example/")


def test_the_refusal_names_the_host_but_never_the_address_it_resolved_to(caplog):
    with caplog.at_level(logging.INFO, logger="openi2v.outbound"):
        message = refused(guard({"intranet.example": ["10.9.8.7"]}), "http://intranet.example/x", "webhook")
    assert message == "webhook: the host intranet.example is not a public address (set OPENI2V_FETCH_ALLOW to allow it)"
    assert "10.9.8.7" in caplog.text  # the operator's log has the detail


@pytest.mark.parametrize("url,why", [
    ("http://169.254.169.254/latest/meta-data/", "not a public address"),
    ("http://[fd00:ec2::254]/latest/", "not a public address"),
    ("http://100.100.100.200/", "not a public address"),
    ("http://[::ffff:169.254.169.254]/", "not a public address"),
    ("http://[64:ff9b::a9fe:a9fe]/", "not a public address"),
    ("http://[2002:a9fe:a9fe::]/", "not a public address"),
    ("http://[::a9fe:a9fe]/", "not a public address"),
    ("http://2852039166/", "not a public address"),  # 169.254.169.254 as one number
    ("http://0xa9.0xfe.0xa9.0xfe/", "not a public address"),
    ("http://0251.0376.0251.0376/", "not a valid URL"),  # octal: httpx refuses it before we resolve
])
def test_cloud_metadata_is_refused_in_every_spelling(url, why):
    g = OutboundGuard()  # the real resolver: getaddrinfo parses numeric spellings without a name server
    assert why in refused(g, url)


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://0x7f000001/", "http://127.1/",
                                 "http://0.0.0.0/", "http://localhost/"])
def test_numeric_spellings_are_judged_by_the_address_they_mean(url):
    g = OutboundGuard()  # the real resolver: getaddrinfo parses these without a name server
    host = httpx.URL(url).host
    assert refused(g, url) == f"image: the host {host} is not a public address (set OPENI2V_FETCH_ALLOW to allow it)"


@pytest.mark.parametrize("url,message", [
    ("http://[::1:9911/x", "image: is not a valid URL"),
    ("http://0177.0.0.1/", "image: is not a valid URL"),
    ("http://example.com:99999/x", "image: is not a valid URL (the port must be between 1 and 65535)"),
    ("http://example.com:0/x", "image: is not a valid URL (the port must be between 1 and 65535)"),
    ("ftp://example.com/x", "image: must be an http(s) URL"),
    ("file:///etc/passwd", "image: must be an http(s) URL"),
    ("http:///x", "image: must be an http(s) URL"),
    ("javascript:alert(1)", "image: must be an http(s) URL"),
    ("", "image: must be an http(s) URL"),
    ("http://nowhere.example/x", "image: could not resolve host nowhere.example"),
])
def test_malformed_urls_are_our_error(url, message):
    assert refused(guard(), url).startswith(message)


def test_a_resolver_that_chokes_is_a_resolution_failure():
    def choke(host: str, port: int) -> list[str]:
        raise UnicodeError("label too long")

    g = OutboundGuard(resolve=choke)
    assert refused(g, "http://x.example/") == "image: could not resolve host x.example"


@pytest.mark.parametrize("allow,admitted", [
    ("minio", True), ("MinIO.", True), ("10.0.0.5", True), ("10.0.0.0/24", True),
    ("other", False), ("10.0.1.0/24", False), ("", False),
])
def test_the_allow_list_admits_by_name_ip_or_cidr(allow, admitted):
    g = guard({"minio": ["10.0.0.5"]}, allow)
    if admitted:
        assert build(g, "http://minio:9000/b/k").url.host == "10.0.0.5"
    else:
        refused(g, "http://minio:9000/b/k")


def test_allow_private_admits_everything_and_still_pins():
    g = guard({"anything.internal": ["192.168.1.9"]}, allow_all=True)
    assert build(g, "http://anything.internal/").url.host == "192.168.1.9"
    assert build(g, "http://[::1]:8/").url.host == "::1"


@examples(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.builds("{}://{}{}".format, st.sampled_from(["http", "HTTPS", "hTtP", "ftp", ""]),
                                      st.text(), st.text())))
def test_any_text_as_a_url_is_pinned_or_refused_with_our_error(url):
    g = OutboundGuard(resolve=lambda host, port: [PUBLIC_V4])
    try:
        req = build(g, url)
    except MediaUnavailable:
        return
    assert req.url.host == PUBLIC_V4 or refusal(ipaddress.ip_address(req.url.host)) is None
