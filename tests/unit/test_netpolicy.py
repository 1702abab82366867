"""The one network policy (appliance.delivery.netpolicy) that webhooks and media sources share."""
import socket

import pytest

from appliance.delivery import netpolicy

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:8000/h", "https://localhost/h", "http://app.localhost/h", "http://169.254.169.254/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]:9/", "http://[::ffff:7f00:1]/", "http://2130706433/",
    "http://0177.0.0.1/", "http://0x7f.1/", "http://127.1/", "http://0.0.0.0/", "http://[::]/",
    "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
    "http://[fe80::1]/",
]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_loopback_and_link_local_are_refused_in_every_spelling(url):
    with pytest.raises(netpolicy.RefusedURL, match="loopback"):
        netpolicy.parse(url)
    netpolicy.parse(url, allow_loopback=True)


@pytest.mark.parametrize("url, reason", [
    ("https://[x", "malformed"), ("http://exa\u0001mple.com/", "control characters"),
    ("http://example.com/a b", "control characters"), ("ftp://example.com/x", "http"),
    ("https://example.com:99999/", "malformed"), ("https:///nohost", "no host"), (42, "string"), ("", "string"),
])
def test_malformed_urls_are_refused_with_a_reason(url, reason):
    with pytest.raises(netpolicy.RefusedURL, match=reason):
        netpolicy.parse(url, allow_loopback=True)


def test_lan_receivers_are_fine_and_http_can_be_refused():
    netpolicy.parse("http://192.168.1.20/hook")
    netpolicy.parse("http://10.0.0.5:9000/hook")
    with pytest.raises(netpolicy.RefusedURL, match="https"):
        netpolicy.parse("http://192.168.1.20/hook", allow_http=False)


def test_resolve_checks_what_a_name_resolves_to_and_pins_it(monkeypatch):
    answers = {"evil.example": "127.0.0.1", "good.example": "192.168.1.9"}

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(netpolicy.RefusedURL, match="loopback"):
        netpolicy.resolve("https://evil.example/hook")
    target = netpolicy.resolve("https://user@good.example:8443/hook?x=1")
    url, headers, extensions = target.pinned()
    assert url == "https://user@192.168.1.9:8443/hook?x=1" or url == "https://192.168.1.9:8443/hook?x=1"
    assert headers == {"Host": "good.example:8443"} and extensions == {"sni_hostname": "good.example"}
