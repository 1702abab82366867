"""RenderCAD's job settings (seed rendercad-*.txt; DECISIONS.md "RenderCAD"): an image job's (render.php
create_job and the legacy render) and a video job's (video.php create_job). Their messages have no documented
order; this is the order the appliance has always checked them in.

The fields other code validates are not here: source_url, references (api/rendercad/references.py), the legacy
image or r2_input_url, and a video's image and frame URLs (they name this user's assets: a database lookup).
The pipelines (services/pipelines/image.py, image_video.py) read the vocabulary below."""
from __future__ import annotations

from appliance.contracts.base import FALSY, Contract, Field, Forbid, Requires
from renderers.image.conditions import CATALOG

# ---- image: render.php ---------------------------------------------------------------------------------------
MODELS = ("classic", "pro")
QUALITIES = {"standard": 1024, "4k": 4096}  # the square output's side
RENDER_MODES = ("preserve", "creative", "freeform")
BACKGROUNDS = ("auto", "white", "grey", "black", "gradient")
BACKGROUND_PATTERN = rf"^({'|'.join(BACKGROUNDS)}|custom:#[0-9A-Fa-f]{{6}})$"
CONDITIONS = tuple(str(c["value"]) for c in CATALOG)  # every value is a name (only categories may be None)
MAX_INSTRUCTIONS = 1500
UNSET = (None, "")  # a form field left empty, or null: the default

IMAGE = Contract("RenderCADCreateJob", "render.php?action=create_job. References need the pro model (422).", (
    Field("model", "string", choices=MODELS, default="classic", blank=UNSET,
          description="Also the installed studio model's name, where one is (api_discovery.php?action=models)"),
    Field("quality", "string", choices=tuple(QUALITIES), default="standard", blank=UNSET),
    Field("render_mode", "string", choices=RENDER_MODES, default="preserve", blank=UNSET),
    Field("background_style", "string", "background_style must be one of: auto, white, grey, black, gradient, "
          "custom:#RRGGBB", default="auto", blank=FALSY, pattern=BACKGROUND_PATTERN,
          description="A preset, or custom:#RRGGBB"),
    Field("condition", "string", choices=CONDITIONS, default="auto", blank=UNSET),
    Field("custom_instructions", "string", f"custom_instructions must be a string of at most {MAX_INSTRUCTIONS} "
          "characters", nullable=True, max_length=MAX_INSTRUCTIONS,
          description="Read for a fixed vocabulary of photographic words (README); the rest is ignored. The "
                      "studio's img2img model takes it as its prompt"),
), rules=(Requires("quality", "4k", "model", "pro", "4K quality requires the pro model"),))

# ---- video: video.php ----------------------------------------------------------------------------------------
MODES = ("single", "transition", "loop")
CAMERAS = ("auto", "orbit", "zoom-in", "zoom-out", "pan-left", "pan-right", "dolly")
MOTIONS = ("auto", "hero-spin", "float", "none")
STYLES = ("preserve", "creative")
DURATIONS = (4, 6, 8)
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
MAX_CROSSFADE = 2.0
DEFAULT_CROSSFADE = 0.5
MAX_PROMPT = 1500

VIDEO = Contract("RenderCADVideoCreate", "video.php?action=create_job: image_url (single, loop) or first_frame_url "
                 "+ last_frame_url (transition); without them the job asks for upload slots. Cost: duration, plus "
                 "1 at 1080p.", (
    Field("prompt", "string", f"prompt must be a string of at most {MAX_PROMPT} characters", nullable=True,
          max_length=MAX_PROMPT,
          description="Kept with the job's settings and shown in its history. With the studio's img2img model "
                      "installed (api_discovery.php?action=models) and style creative, it is the model's prompt: "
                      "the first frame is redrawn by the model before the camera move; otherwise unused"),
    Field("video_mode", "string", choices=MODES, default="single", blank=UNSET),
    Field("crossfade_duration", "number", "crossfade_duration must be a number from 0.0 to 2.0",
          default=DEFAULT_CROSSFADE, blank=UNSET, minimum=0, maximum=MAX_CROSSFADE,
          description="Seconds; checked in every mode, used by video_mode loop only"),
    Field("camera", "string", choices=CAMERAS, default="auto", blank=UNSET),
    Field("motion", "string", choices=MOTIONS, default="auto", blank=UNSET),
    Field("style", "string", choices=STYLES, default="preserve", blank=UNSET),
    Field("duration", "integer", choices=DURATIONS, default=8, blank=UNSET, digits=True,
          description="Seconds (a string of digits is taken too)"),
    Field("resolution", "string", choices=tuple(RESOLUTIONS), default="720p", blank=UNSET),
), first=(Forbid("style", ("exact", "enhance"),
                 "style exact and enhance are not supported for video: use preserve or creative"),))
