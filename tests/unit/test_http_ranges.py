import pytest

from appliance.delivery.httpfiles import _parse_range


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)), ("bytes=-10", (990, 999)),
    ("bytes=900-5000", (900, 999)), ("bytes=1000-", None), ("bytes=5-1", None), ("items=0-1", None),
])
def test_range_parsing(header, expected):
    assert _parse_range(header, 1000) == expected
