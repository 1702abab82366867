"""Kodisc's POST /api/v2/render body (seed kodisc-*.txt; api-research.md §1; DECISIONS.md "Kodisc"): the six
documented field messages in the documented order, after the body's own "JSON body required"."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.contracts.base import Contract, Field, Refused

QUALITIES = {"low": (854, 480, 15), "medium": (1280, 720, 30), "high": (1920, 1080, 30),
             "twok": (2560, 1440, 30), "fourk": (3840, 2160, 30)}  # width, height, fps
ASPECTS = ("16:9", "9:16")
MAX_FPS = 120  # DECISIONS.md: 1-120, else the documented fps message
BODY_MESSAGE = "JSON body required"
HTTPS_MESSAGE = "webhookUrl must be an https:// URL"


def _webhook_scheme(hook: str, options: Mapping[str, Any]) -> str:
    """https://, or http:// where the appliance allows it (option allow_http); the host is the URL policy's
    (delivery/netpolicy), checked by the handler."""
    if hook.startswith("https://") or (options.get("allow_http") and hook.startswith("http://")):
        return hook
    # the documented error, and in "message" the setting that would allow plain http
    raise Refused(HTTPS_MESSAGE, hint="plain http:// webhooks only with allow_http_webhooks = true "
                                      "(APPLIANCE_ALLOW_HTTP_WEBHOOKS=true)" if hook.startswith("http://") else None)


RENDER = Contract("KodiscRenderRequest", "POST /api/v2/render. Only code and className are required; the whole "
                  "body is at most 200 KB.", (
    Field("code", "string", "code is required", required=True, nonblank=True,
          description="Manim source with the Scene subclass"),
    Field("className", "string", "className must be a valid Python identifier", required=True,
          pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The Scene subclass to render"),
    Field("quality", "string", choices=tuple(QUALITIES), default="medium"),
    Field("aspectRatio", "string", choices=ASPECTS, default="16:9"),
    Field("fps", "integer", "fps must be a positive integer", nullable=True, minimum=1, maximum=MAX_FPS,
          over=f"fps must be at most {MAX_FPS}", description="Overrides the preset's frame rate"),
    Field("webhookUrl", "string", HTTPS_MESSAGE, nullable=True, check=_webhook_scheme, doc={"pattern": "^https://"},
          description="Overrides the key's default webhook URL; null sends no webhook. http:// only with "
                      "allow_http_webhooks; loopback and link-local hosts are refused"),
    Field("metadata", "any", nullable=True, description="Any JSON",
          unused="echoed as it is in the job object and its webhooks"),
))
# The seven documented 400 messages, in the documented order: a 400's "error" is always one of them.
MESSAGES = (BODY_MESSAGE, *RENDER.messages())
