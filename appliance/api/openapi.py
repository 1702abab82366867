"""The OpenAPI document at /schema/openapi.json and its Swagger UI at /schema, served without network access.

The dialect handlers read raw bodies and query strings themselves (to give the documented messages in the
documented order), so Litestar cannot see what they accept. Each handler instead names an ``operation(...)``:
an Operation subclass that fills in the request body, parameters, responses and security from the Structs in
schemas.py, which ``install`` adds to the document's components.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec
from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
    Tag,
)
from litestar.static_files import create_static_files_router

from appliance.api import openapi_rendercad, schemas, schemas_rendercad
from appliance.contracts.base import CONTRACT

REF = "#/components/schemas/{name}"


def _components() -> dict[str, Any]:
    """The documented bodies' JSON Schemas; a request generated from a contract gets its cross-field rules
    (if/then: msgspec has no place for them)."""
    structs = (*schemas.DOCUMENTED, *schemas_rendercad.DOCUMENTED)
    components: dict[str, Any] = msgspec.json.schema_components(structs, ref_template=REF)[1]
    for struct in structs:
        contract = getattr(struct, CONTRACT, None)
        if contract is not None:
            components[struct.__name__].update(contract.schema_extra())
    return components


COMPONENT_SCHEMAS = _components()

ASSETS_URL = "/schema/static"
ASSETS_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "kodiscBearer": SecurityScheme(type="http", scheme="bearer", bearer_format="kdsc_live_<48 hex>",
                                   description="Kodisc: Authorization: Bearer kdsc_live_…"),
    "viralsyncApiKey": SecurityScheme(type="apiKey", name="x-api-key", security_scheme_in="header",
                                      description="ViralSync: x-api-key: vs_prod_…"),
    "viralsyncBearer": SecurityScheme(type="http", scheme="bearer", bearer_format="vs_prod_<32 alphanumerics>",
                                      description="ViralSync: Authorization: Bearer vs_prod_… (same as x-api-key)"),
    "viralsyncQueryKey": SecurityScheme(type="apiKey", name="api_key", security_scheme_in="query",
                                        description="ViralSync progress stream only: browsers' EventSource "
                                                    "cannot send headers"),
    **openapi_rendercad.SECURITY_SCHEMES,
}
KODISC_AUTH: list[SecurityRequirement] = [{"kodiscBearer": []}]
VIRALSYNC_AUTH: list[SecurityRequirement] = [{"viralsyncApiKey": []}, {"viralsyncBearer": []}]
TAGS = [Tag(name="Kodisc", description="Manim renders: the public Kodisc v2 API under /api/v2"),
        Tag(name="ViralSync", description="Movie JSON renders: the public ViralSync v1 API under /v1"),
        Tag(name="RenderCAD", description="Image and video jobs: the RenderCAD API under /backend (one path per "
                                          "?action=) and its asset URLs")]


def ref(struct: type) -> dict:
    return {"$ref": REF.format(name=struct.__name__)}


def raw(schema: dict) -> Schema:
    """A JSON Schema as a plain dict where Litestar's spec objects expect a Schema: they write a dict out as it
    is, and the schemas here are msgspec's dicts (or small literals)."""
    return cast(Schema, schema)


def json_body(schema: dict, description: str, headers: dict[str, str] | None = None) -> OpenAPIResponse:
    """A response with a JSON body; ``headers``: name -> description (string-valued)."""
    return OpenAPIResponse(
        description=description, content={"application/json": OpenAPIMediaType(schema=raw(schema))},
        headers={name: OpenAPIHeader(schema=raw({"type": "string"}), description=text, required=True)
                 for name, text in (headers or {}).items()} or None)


def error_body(struct: type, field: str, values: Sequence[str], description: str,
               headers: dict[str, str] | None = None) -> OpenAPIResponse:
    """An error response: the dialect's error object whose ``field`` is one of ``values``."""
    schema = {"allOf": [ref(struct), {"properties": {field: {"type": "string", "enum": list(values)}}}]}
    return json_body(schema, description, headers)


def query(name: str, schema: dict, description: str) -> Parameter:
    return Parameter(name=name, param_in="query", schema=raw(schema), description=description, required=False)


def header(name: str, schema: dict, description: str) -> Parameter:
    return Parameter(name=name, param_in="header", schema=raw(schema), description=description, required=False)


def operation(*, tag: str, summary: str, security: list[SecurityRequirement], responses: dict[int, OpenAPIResponse],
              body: type | None = None, example: dict | None = None, params: Sequence[Parameter] = (),
              description: str | None = None, path_params: dict[str, str] | None = None) -> type[Operation]:
    """An Operation class for one handler (``operation_class=``): Litestar builds it with what it derived from
    the signature (operation id, path parameters), and ``__post_init__`` replaces the rest with the contract."""

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            self.tags, self.summary, self.security = [tag], summary, security
            self.description = description
            if body is not None:
                self.request_body = RequestBody(required=True, content={
                    "application/json": OpenAPIMediaType(schema=raw(ref(body)), example=example)})
            for param in self.parameters or []:
                if isinstance(param, Parameter) and param.name in (path_params or {}):
                    param.description = (path_params or {})[param.name]
            self.parameters = [*(self.parameters or []), *params] or None
            self.responses = {str(status): response for status, response in sorted(responses.items())}

    return Documented


def config(version: str) -> OpenAPIConfig:
    """Swagger UI only (at /schema and /schema/swagger), its scripts and styles served by the appliance."""
    swagger = SwaggerRenderPlugin(
        js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", css_url=f"{ASSETS_URL}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_URL}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_URL}/favicon-32x32.png'>", path="/swagger")
    return OpenAPIConfig(
        title="Render appliance", version=version, path="/schema", render_plugins=[swagger], tags=TAGS,
        description="The Kodisc (/api/v2), ViralSync (/v1) and RenderCAD (/backend) APIs of a self-hosted render "
                    "appliance. Errors keep each dialect's shape: Kodisc {error, message?}, ViralSync {error, "
                    "code}, RenderCAD {error}.",
        components=Components(security_schemes=SECURITY_SCHEMES))


def assets_router() -> Router:
    return create_static_files_router(path=ASSETS_URL, directories=[ASSETS_DIR], name="openapi-assets",
                                      include_in_schema=False)


def install(app: Litestar) -> None:
    """Add the documented bodies to the built document. Litestar sets components.schemas to the models it
    derived from handler signatures (the dialect handlers return plain Responses), dropping any given in the
    config, so they are added once the document exists; it is built once and cached, so every request serves
    this one."""
    app.openapi_schema.components.schemas.update(COMPONENT_SCHEMAS)
    app.openapi_schema.paths = {**(app.openapi_schema.paths or {}), **openapi_rendercad.paths()}
