import hashlib
import hmac
import json
import time

import pytest

from appliance.api import kodisc
from appliance.delivery.webhooks import sign_kodisc


def message(body) -> str:
    with pytest.raises(kodisc.BadRequest) as err:
        kodisc.validate(body if isinstance(body, bytes) else json.dumps(body).encode(), allow_http=False)
    return err.value.message


GOOD = {"code": "from manim import *", "className": "Hello"}


@pytest.mark.parametrize("body, expected", [
    (b"not json", "JSON body required"),
    (b"[1, 2]", "JSON body required"),
    ({"className": "X"}, "code is required"),
    ({"code": "   ", "className": "X"}, "code is required"),
    ({"code": "x", "className": "1abc"}, "className must be a valid Python identifier"),
    ({"code": "x", "className": "a-b"}, "className must be a valid Python identifier"),
    ({**GOOD, "quality": "ultra"}, "quality must be one of: low, medium, high, twok, fourk"),
    ({**GOOD, "aspectRatio": "4:3"}, "aspectRatio must be one of: 16:9, 9:16"),
    ({**GOOD, "fps": 0}, "fps must be a positive integer"),
    ({**GOOD, "fps": 29.97}, "fps must be a positive integer"),
    ({**GOOD, "fps": True}, "fps must be a positive integer"),
    ({**GOOD, "webhookUrl": "http://example.com/h"}, "webhookUrl must be an https:// URL"),
])
def test_each_documented_400_message(body, expected):
    assert message(body) == expected


def test_messages_come_in_the_documented_order():
    # everything wrong at once: the first check in the documented order wins
    assert message({"className": "1", "quality": "x", "aspectRatio": "x", "fps": -1}) == "code is required"
    assert message({"code": "x", "quality": "x", "aspectRatio": "x"}) == \
        "className must be a valid Python identifier"
    assert message({**GOOD, "aspectRatio": "x", "fps": -1, "webhookUrl": "ftp://x"}) == \
        "aspectRatio must be one of: 16:9, 9:16"


def test_null_webhook_url_opts_out_and_defaults_apply():
    data = kodisc.validate(json.dumps({**GOOD, "webhookUrl": None}).encode(), allow_http=False)
    assert data["webhookUrl"] is None
    assert kodisc.frame(data) == (1280, 720, 30)
    assert kodisc.frame({"quality": "low", "aspectRatio": "9:16"}) == (480, 854, 15)
    assert kodisc.frame({"quality": "high", "fps": 60}) == (1920, 1080, 60)


def _verify(secret: str, raw: bytes, header: str, tolerance: int = 300) -> bool:
    """An independent verifier written from the public docs' steps (split on the first '=')."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    t, v1 = int(parts["t"]), parts["v1"]
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


def test_webhook_signature_verifies_with_the_documented_scheme():
    body = b'{"jobId":"c1","status":"completed"}'
    headers = sign_kodisc("whsec_abc", body, {"event": "completed"})
    assert headers["kodisc-event"] == "completed"
    assert _verify("whsec_abc", body, headers["kodisc-signature"])
    assert not _verify("whsec_other", body, headers["kodisc-signature"])
    assert not _verify("whsec_abc", body + b" ", headers["kodisc-signature"])
