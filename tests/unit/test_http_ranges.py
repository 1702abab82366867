import pytest

from appliance.delivery.httpfiles import _parse_range
from appliance.delivery.webhooks import TargetRefused, check_target


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)), ("bytes=-10", (990, 999)),
    ("bytes=900-5000", (900, 999)), ("bytes=1000-", None), ("bytes=5-1", None), ("items=0-1", None),
])
def test_range_parsing(header, expected):
    assert _parse_range(header, 1000) == expected


def test_loopback_and_link_local_targets_are_refused_unless_allowed():
    for url in ("http://127.0.0.1:8000/h", "https://localhost/h", "http://169.254.169.254/", "http://[::1]/"):
        with pytest.raises(TargetRefused):
            check_target(url, allow_loopback=False)
        check_target(url, allow_loopback=True)
    check_target("http://192.168.1.20/hook", allow_loopback=False)  # LAN receivers are fine
    with pytest.raises(TargetRefused):
        check_target("ftp://example.com/x", allow_loopback=True)
