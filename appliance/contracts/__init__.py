"""Each dialect's request contracts, declared once (issue #20): per request, its fields in the documented message
order (type, allowed values or range, default, required, the exact message, whether the renderers use it) and its
cross-field rules. The dialects' validators run these declarations (``Contract.validate``) and the OpenAPI document
describes requests with the Structs generated from them (``Contract.struct``), so the two cannot drift apart.

``base`` is the field-spec type and what runs it; ``kodisc``, ``rendercad`` and ``viralsync`` are the declarations.
The package sits beside ``services/`` rather than under ``api/``: the RenderCAD pipelines validate their settings
with it and ``services/`` never imports ``api/``.
"""
