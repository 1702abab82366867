"""ViralSync movies: Movie → Scene[] → Layer[] rendered scene by scene, then concatenated.

Stages (STYLE.md: spec → validate → normalize → render):
- ``spec``: validate a movie, fill every default, scene cache keys;
- media fetching is the server's (``appliance/services/pipelines/media.py``): renderers have no network;
- ``layers``: per-layer-type drawing (text and images with Pillow, video/audio filter chains);
- ``decode``: one decode per distinct media source per scene, fanned out to its layers (split/asplit), libvpx for
  VP8/VP9 with alpha, animated WebP through PNG frames, decoder threads shared out of the task's budget;
- ``layered``: the filter graph of a scene with video layers, every layer on the scene clock (presentation time);
  ``atlas``: its text/image sprites packed into a few PNG pages (one input each, not one per layer);
- ``compose``: ``render_scene`` (one ``scene.mp4`` per scene task); its stills path sends pictures to ffmpeg
  through a FIFO (``feed``) and joins the encoded blocks in-process with PyAV (``mux``);
- ``assemble``: ``render_assemble`` (stream-copy concat of the scene files).
"""
