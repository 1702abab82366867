"""ViralSync movies: Movie → Scene[] → Layer[] rendered scene by scene, then concatenated.

Stages (STYLE.md: spec → validate → normalize → render):
- ``spec``: validate a movie, fill every default, scene cache keys;
- ``sources``: server-side media fetching (the renderers themselves never touch the network);
- ``layers``: per-layer-type drawing (text and images with Pillow, video/audio filter chains);
- ``compose``: ``render_scene`` (one ``scene.mp4`` per scene task);
- ``assemble``: ``render_assemble`` (stream-copy concat of the scene files).
"""
