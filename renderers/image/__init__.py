"""RenderCAD's image "render": a deterministic photographic finishing pipeline (no generative model).

matte: the subject cut out from its border-estimated background; backgrounds: the new backdrop and the
shadows; conditions: the 43 condition presets as procedural treatments; pipeline: the renderer entry point."""
