"""create_job's `references`: background and material objects for the image pipeline.

The seed documents only that references are "reference objects" of `type` background or material
(`asset_kind: "texture"` for the texture library), that remote asset URLs are copied at once and that local
files come back as upload slots. The appliance reads each object so:

- `{"type": "background"|"material", "asset_id": "<id>"}` names an asset of the library
  (api_discovery.php?action=backgrounds|textures);
- `{"type": …, "url": "<one of this user's RenderCAD asset URLs>"}` (or `asset_url`) copies that image into
  the job now (never a fetch: another user's asset is a 404, any other URL a 400);
- any other object (e.g. `{"type": "material", "file_name": "oak.jpg"}`) asks for an upload slot, returned in
  required_uploads as `{"slot": "reference", "index": i}` and filled through presign_upload with that index.

At most one background and six references in all (the pro model's max_references; the classic model takes
none: 422)."""
from __future__ import annotations

import json
from pathlib import Path

from appliance.api.rendercad import library, uploads
from appliance.api.rendercad.common import RCError
from appliance.services.jobs import JobService

TYPES = ("background", "material")
KINDS = {"background": ("backgrounds", (None, "background")), "material": ("textures", (None, "texture"))}
MAX_REFERENCES = 6


def _list(value: object) -> list:
    if isinstance(value, str):  # a form field or a client that sends the array as a JSON string
        try:
            value = json.loads(value)
        except ValueError:
            raise RCError(400, "references must be a JSON array of objects") from None
    if not isinstance(value, list):
        raise RCError(400, "references must be a JSON array of objects")
    return value


def parse(service: JobService, user_id: str, model: str, value: object) -> tuple[list[dict], dict[str, Path]]:
    """(the references as stored with the job, {upload slot: asset file to copy in}). It reads the database:
    call it on the event loop, after the library listings were read once off it (they are cached)."""
    if value is None or value == []:
        return [], {}
    items = _list(value)
    if len(items) > MAX_REFERENCES:
        raise RCError(400, f"references: at most {MAX_REFERENCES}")
    if model != "pro":
        raise RCError(422, "References require the pro model")
    refs: list[dict] = []
    copies: dict[str, Path] = {}
    for i, item in enumerate(items):
        where = f"references[{i}]"
        if not isinstance(item, dict):
            raise RCError(400, f"{where} must be an object")
        kind = item.get("type")
        if kind not in TYPES:
            raise RCError(400, f"{where}.type must be one of: background, material")
        folder, asset_kinds = KINDS[kind]
        if item.get("asset_kind") not in asset_kinds:
            raise RCError(400, f"{where}.asset_kind must be {asset_kinds[1]!r} for a {kind} reference")
        asset_id, url = item.get("asset_id"), item.get("url") or item.get("asset_url")
        slot = f"reference_{i}"
        if asset_id is not None:
            if not isinstance(asset_id, str) or library.find(service.settings, folder, asset_id) is None:
                raise RCError(400, f"{where}.asset_id is not in the {folder} library "
                                   f"(api_discovery.php?action={folder})")
            refs.append({"type": kind, "source": "library", "asset_id": asset_id})
        elif url is not None:
            copies[slot] = uploads.asset_file(service, user_id, url, f"{where}.url")
            refs.append({"type": kind, "source": "copy", "slot": slot})
        else:
            refs.append({"type": kind, "source": "upload", "slot": slot})
    if sum(r["type"] == "background" for r in refs) > 1:
        raise RCError(400, "references: at most one background")
    return refs, copies
