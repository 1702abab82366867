"""The conformance scenes: one or a few per Manim feature family, each short (about a second of animation).

``fast`` scenes are part of the default pytest run; the rest run under ``-m conformance``.
"""
from __future__ import annotations

from tests.conformance.harness import Case


def scene(name: str, body: str, *, base: str = "Scene", header: str = "", **flags: bool) -> Case:
    """A Case whose class is ``name`` in CamelCase plus "Demo" (never a Manim name: ``class Table(Scene)`` would
    shadow Manim's Table in its own construct()) with ``body`` as construct()."""
    cls = "".join(part.capitalize() for part in name.split("_")) + "Demo"
    lines = "\n".join("        " + line if line else "" for line in body.strip("\n").splitlines())
    code = f"from manim import *\n{header}\n\nclass {cls}({base}):\n    def construct(self):\n{lines}\n"
    return Case(name, cls, code, **flags)


SCENES: list[Case] = [
    # -- still diagrams (no play/wait: the CLI saves a PNG) ------------------------------------------------
    scene("still_diagram", """
square = Square(side_length=3, color=BLUE, fill_opacity=0.5)
circle = Circle(radius=1, color=RED).next_to(square, RIGHT)
arrow = Arrow(LEFT * 5, square.get_left(), color=YELLOW)
label = Text("a still", font_size=36).to_edge(UP)
self.add(square, circle, arrow, label, Dot(ORIGIN))
""", still=True, fast=True),
    scene("still_mathtex", r"""
self.add(MathTex(r"e^{i\pi} + 1 = 0", font_size=96))
self.add(Tex(r"Euler's identity").to_edge(DOWN))
""", still=True),
    scene("still_image_and_shapes", """
import numpy as np
gradient = np.linspace(0, 255, 64, dtype=np.uint8)[None, :].repeat(16, axis=0)
self.add(ImageMobject(gradient).scale_to_fit_width(8).to_edge(UP))
self.add(RegularPolygon(6, color=GREEN).shift(DOWN))
""", still=True, shim=True),
    scene("still_background_color", """
self.camera.background_color = WHITE
self.add(Star(color=BLACK, fill_opacity=1), Text("white page", color=BLACK).to_edge(DOWN))
""", still=True),
    # -- text --------------------------------------------------------------------------------------------
    scene("text_write", """
title = Text("Hello, Manim", font_size=64, gradient=(BLUE, GREEN))
self.play(Write(title), run_time=1)
self.play(title.animate.to_edge(UP).scale(0.6), run_time=0.5)
""", fast=True),
    scene("markup_text", """
text = MarkupText('<b>bold</b>, <i>italic</i> and <span fgcolor="#FC6255">red</span>', font_size=40)
self.play(FadeIn(text, shift=UP), run_time=0.8)
"""),
    scene("paragraph", """
para = Paragraph("First line of a paragraph,", "second line, centred,", "third.", alignment="center",
                 line_spacing=0.8)
self.play(AddTextLetterByLetter(para[0]), run_time=0.6)
self.add(para)
self.wait(0.3)
"""),
    scene("code_listing", '''
listing = Code(code_string="def square(x):\\n    return x * x\\n\\nprint(square(7))\\n", language="python",
               background="window")
self.play(FadeIn(listing), run_time=0.6)
self.play(listing.animate.scale(0.8).to_corner(UL), run_time=0.4)
'''),
    # -- LaTeX ---------------------------------------------------------------------------------------------
    scene("mathtex_write", r"""
formula = MathTex(r"\int_0^1 x^2\,dx = \frac{1}{3}", font_size=72)
self.play(Write(formula), run_time=1)
""", fast=True),
    scene("tex_and_colors", r"""
tex = Tex(r"The \textbf{derivative} of $x^2$ is $2x$", tex_to_color_map={"$2x$": YELLOW})
self.play(FadeIn(tex), run_time=0.5)
self.play(Indicate(tex), run_time=0.5)
"""),
    scene("transform_matching_tex", r"""
a = MathTex("a", "^2", "+", "b", "^2", "=", "c", "^2", font_size=72)
b = MathTex("c", "^2", "=", "a", "^2", "+", "b", "^2", font_size=72)
self.add(a)
self.play(TransformMatchingTex(a, b), run_time=1)
"""),
    scene("matrix", r"""
m = Matrix([[1, 2], [3, 4]])
det = MathTex(r"\det = -2").next_to(m, RIGHT)
self.play(Create(m), run_time=0.6)
self.play(Write(det), run_time=0.4)
"""),
    # -- coordinate systems and plots ------------------------------------------------------------------
    scene("axes_plot", """
axes = Axes(x_range=[-3, 3, 1], y_range=[-1, 9, 2], x_length=8, y_length=5, tips=False)
graph = axes.plot(lambda x: x ** 2, color=YELLOW)
self.add(axes)
self.play(Create(graph), run_time=1)
""", fast=True),
    scene("axes_labels_area", """
axes = Axes(x_range=[0, 4], y_range=[0, 4], x_length=6, y_length=4).add_coordinates()
curve = axes.plot(lambda x: 0.25 * x ** 2, color=BLUE)
area = axes.get_area(curve, x_range=[1, 3], color=GREEN, opacity=0.5)
labels = axes.get_axis_labels(x_label="x", y_label="f(x)")
self.add(axes, labels, curve)
self.play(FadeIn(area), run_time=0.6)
"""),
    scene("number_plane_apply", """
plane = NumberPlane(x_range=[-7, 7], y_range=[-4, 4])
self.add(plane)
self.play(plane.animate.apply_function(lambda p: p + np.array([0.2 * np.sin(p[1]), 0, 0])), run_time=1)
"""),
    scene("complex_polar_planes", """
left = ComplexPlane(x_range=[-2, 2], y_range=[-2, 2], x_length=5, y_length=5).shift(LEFT * 3.5)
right = PolarPlane(radius_max=2, size=5).shift(RIGHT * 3.5)
self.play(Create(left), Create(right), run_time=1)
"""),
    scene("bar_chart", """
chart = BarChart(values=[3, 5, 2, 7], bar_names=["a", "b", "c", "d"], y_range=[0, 8, 2], y_length=5)
self.add(chart)
self.play(chart.animate.change_bar_values([6, 2, 5, 4]), run_time=1)
"""),
    scene("number_line_decimal", """
line = NumberLine(x_range=[0, 10, 1], length=10, include_numbers=True)
number = DecimalNumber(0, num_decimal_places=1).next_to(line, UP)
self.add(line, number)
self.play(ChangeDecimalToValue(number, 7.5), run_time=1)
"""),
    scene("parametric_and_polar", """
curve = ParametricFunction(lambda t: np.array([np.sin(2 * t), np.sin(3 * t), 0]) * 3, t_range=[0, TAU],
                           color=PURPLE)
self.play(Create(curve), run_time=1)
"""),
    scene("vector_field", """
field = ArrowVectorField(lambda p: np.array([-p[1], p[0], 0]) * 0.3, x_range=[-6, 6, 1], y_range=[-3, 3, 1])
self.play(FadeIn(field), run_time=0.8)
"""),
    # -- tables and groups -------------------------------------------------------------------------------
    scene("table", """
table = Table([["1", "2"], ["3", "4"]], row_labels=[Text("r1"), Text("r2")],
              col_labels=[Text("c1"), Text("c2")], include_outer_lines=True).scale(0.7)
self.play(table.create(), run_time=1)
"""),
    scene("math_table", """
table = MathTable([[r"x", r"x^2"], [1, 1], [2, 4]], include_outer_lines=True)
self.play(FadeIn(table), run_time=0.6)
self.play(table.animate.set_row_colors(BLUE, GREEN, RED), run_time=0.4)
"""),
    scene("grid_arrange", """
dots = VGroup(*[Square(0.6, fill_opacity=1).set_color(interpolate_color(RED, BLUE, i / 15)) for i in range(16)])
self.play(dots.animate.arrange_in_grid(4, 4, buff=0.2), run_time=1)
"""),
    # -- geometry ----------------------------------------------------------------------------------------
    scene("boolean_ops", """
a = Circle(radius=1.5, fill_opacity=0.5, color=BLUE).shift(LEFT * 0.7)
b = Square(side_length=2.5, fill_opacity=0.5, color=RED).shift(RIGHT * 0.7)
ops = VGroup(Union(a, b), Intersection(a, b), Difference(a, b), Exclusion(a, b))
ops.arrange(RIGHT, buff=0.3).scale(0.6)
self.play(*[FadeIn(op) for op in ops], run_time=0.8)
"""),
    scene("arrows_braces", """
line = Line(LEFT * 3, RIGHT * 3)
brace = Brace(line, DOWN)
label = brace.get_text("six units")
self.play(Create(line), GrowArrow(Arrow(UP * 2, UP * 0.3)), GrowFromCenter(brace), run_time=0.8)
self.play(Write(label), Create(DashedLine(LEFT * 3 + UP, RIGHT * 3 + UP, color=RED)), run_time=0.4)
"""),
    scene("arcs_sectors", """
shapes = VGroup(Arc(radius=1, angle=PI, color=YELLOW), Sector(radius=1, angle=2, color=GREEN),
                AnnularSector(inner_radius=0.5, outer_radius=1, angle=3, color=BLUE),
                Annulus(inner_radius=0.4, outer_radius=1, color=RED)).arrange(RIGHT)
self.play(LaggedStart(*[DrawBorderThenFill(s) for s in shapes], lag_ratio=0.3), run_time=1)
"""),
    scene("graph_circular", """
graph = Graph([1, 2, 3, 4, 5], [(1, 2), (2, 3), (3, 4), (4, 5), (5, 1), (1, 3)], layout="circular",
              labels=True)
self.play(Create(graph), run_time=1)
"""),
    # -- images and vector files ----------------------------------------------------------------------------
    scene("image_array", """
image = ImageMobject(np.uint8([[0, 100, 30, 200], [255, 0, 5, 33]]))
image.set_resampling_algorithm(RESAMPLING_ALGORITHMS["nearest"])
image.height = 4
self.add(image)
self.play(image.animate.shift(RIGHT), run_time=0.6)
""", fast=True, shim=True),
    scene("image_file_written_by_scene", """
from PIL import Image as PILImage
pixels = np.zeros((24, 32, 3), dtype=np.uint8)
pixels[:, :16] = (240, 80, 40)
pixels[8:16, :, 2] = 255
PILImage.fromarray(pixels).save("made_by_scene.png")
image = ImageMobject("made_by_scene.png").scale_to_fit_height(5)
self.play(FadeIn(image), run_time=0.5)
self.play(Rotate(image, PI / 6), run_time=0.5)
""", fast=True, shim=True),
    scene("image_rgba_float", """
alpha = np.linspace(0, 255, 48)[None, :].repeat(12, axis=0)
rgba = np.stack([alpha, 255 - alpha, np.full_like(alpha, 128), np.full_like(alpha, 255)], axis=2)
image = ImageMobject(rgba).scale_to_fit_width(10)
self.add(Square(3, color=WHITE, fill_opacity=1), image)
self.play(image.animate.set_opacity(0.3), run_time=0.5)
""", shim=True),
    scene("svg_written_by_scene", """
svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
       '<circle cx="50" cy="50" r="40" fill="#58C4DD"/><rect x="30" y="30" width="40" height="40" fill="#FC6255"/>'
       '<path d="M10 90 L50 10 L90 90 Z" fill="none" stroke="#FFFF00" stroke-width="4"/></svg>')
with open("drawing.svg", "w") as handle:
    handle.write(svg)
drawing = SVGMobject("drawing.svg").scale(2.5)
self.play(DrawBorderThenFill(drawing), run_time=1)
"""),
    # -- cameras -----------------------------------------------------------------------------------------
    scene("three_d_surface", """
self.set_camera_orientation(phi=70 * DEGREES, theta=-45 * DEGREES)
axes = ThreeDAxes(x_range=[-3, 3], y_range=[-3, 3], z_range=[-1, 1])
surface = Surface(lambda u, v: axes.c2p(u, v, 0.5 * np.sin(u) * np.cos(v)), u_range=[-3, 3], v_range=[-3, 3],
                  resolution=(12, 12), fill_opacity=0.8)
self.add(axes)
self.play(Create(surface), run_time=0.6)
self.move_camera(phi=50 * DEGREES, theta=-20 * DEGREES, run_time=0.6)
""", base="ThreeDScene"),
    scene("three_d_ambient_rotation", """
self.set_camera_orientation(phi=60 * DEGREES, theta=30 * DEGREES)
self.add(ThreeDAxes(), Cube(side_length=2, fill_opacity=0.7, fill_color=BLUE), Sphere(radius=0.5).shift(UP * 2))
self.begin_ambient_camera_rotation(rate=0.6)
self.wait(1)
self.stop_ambient_camera_rotation()
""", base="ThreeDScene"),
    scene("three_d_fixed_in_frame", r"""
self.set_camera_orientation(phi=75 * DEGREES, theta=-60 * DEGREES)
title = MathTex(r"z = x^2 - y^2").to_corner(UL)
self.add_fixed_in_frame_mobjects(title)
self.play(Create(Prism(dimensions=[2, 1, 3])), run_time=0.8)
""", base="ThreeDScene"),
    scene("moving_camera", """
squares = VGroup(*[Square(0.8).shift(RIGHT * i * 1.5) for i in range(-3, 4)])
self.add(squares, Dot(color=RED).move_to(squares[5]))
self.camera.frame.save_state()
self.play(self.camera.frame.animate.scale(0.4).move_to(squares[5]), run_time=0.8)
self.play(Restore(self.camera.frame), run_time=0.4)
""", base="MovingCameraScene"),
    scene("zoomed_scene", """
dot = Dot(color=YELLOW).shift(UL)
self.add(NumberPlane(), dot, Text("zoom", font_size=24).next_to(dot, DOWN))
self.zoomed_camera.frame.move_to(dot)
self.activate_zooming(animate=False)
self.play(self.zoomed_camera.frame.animate.shift(RIGHT * 0.5), run_time=0.8)
""", base="ZoomedScene", shim=True),  # the zoomed display is an ImageMobjectFromCamera
    # -- time: updaters, trackers, composition -------------------------------------------------------------
    scene("updater_dt", """
dot = Dot(LEFT * 4, color=GREEN)
dot.add_updater(lambda m, dt: m.shift(RIGHT * 4 * dt))
trail = TracedPath(dot.get_center, stroke_color=GREEN)
self.add(dot, trail)
self.wait(1)
""", fast=True),
    scene("value_tracker_redraw", """
t = ValueTracker(0.5)
axes = Axes(x_range=[0, 4], y_range=[0, 2], x_length=6, y_length=3)
line = always_redraw(lambda: axes.get_vertical_line(axes.i2gp(t.get_value(), axes.plot(lambda x: 2 - x / 2))))
number = always_redraw(lambda: DecimalNumber(t.get_value()).to_corner(UR))
self.add(axes, line, number)
self.play(t.animate.set_value(3.5), run_time=1, rate_func=linear)
"""),
    scene("lagged_start_succession", """
dots = VGroup(*[Dot() for _ in range(6)]).arrange(RIGHT, buff=0.6)
self.play(LaggedStart(*[FadeIn(d, scale=3) for d in dots], lag_ratio=0.2), run_time=0.7)
self.play(Succession(*[d.animate.shift(UP) for d in dots[:3]]), run_time=0.6)
self.play(AnimationGroup(*[d.animate.set_color(RED) for d in dots[3:]]), run_time=0.3)
"""),
    scene("transforms", """
shape = Square(color=BLUE)
self.play(Transform(shape, Circle(color=RED)), run_time=0.4)
self.play(ReplacementTransform(shape, Triangle(color=GREEN)), run_time=0.4)
self.play(FadeTransform(self.mobjects[0], Star(color=YELLOW)), run_time=0.4)
"""),
    scene("indications", """
text = Text("look here")
self.add(text)
self.play(Circumscribe(text), run_time=0.5)
self.play(Flash(text.get_right()), Wiggle(text), run_time=0.5)
self.play(ApplyWave(text), run_time=0.4)
"""),
    scene("move_along_path_rotate", """
path = Circle(radius=2.5, color=GREY)
mover = Square(0.5, color=YELLOW, fill_opacity=1).move_to(path.point_from_proportion(0))
self.add(path, mover)
self.play(MoveAlongPath(mover, path), Rotate(mover, TAU), run_time=1, rate_func=linear)
"""),
    scene("creation_family", """
shapes = VGroup(Square(), Circle(), Triangle(), Star()).arrange(RIGHT)
self.play(SpinInFromNothing(shapes[0]), GrowFromEdge(shapes[1], DOWN), Create(shapes[2]),
          DrawBorderThenFill(shapes[3]), run_time=0.6)
self.play(Uncreate(shapes[0]), ShrinkToCenter(shapes[1]), FadeOut(shapes[2], shift=DOWN), run_time=0.5)
"""),
    scene("homotopy_complex", """
plane = ComplexPlane(x_range=[-3, 3], y_range=[-2, 2]).add_coordinates()
self.add(plane)
self.play(plane.animate.apply_complex_function(lambda z: z ** 2 / 3), run_time=1)
"""),
    scene("gradients_opacity", """
rings = VGroup(*[Circle(radius=0.3 + 0.3 * i, stroke_width=8) for i in range(8)])
rings.set_color_by_gradient(BLUE, PURPLE, RED)
self.play(Create(rings), run_time=0.6)
self.play(rings.animate.set_opacity(0.3).scale(0.8), run_time=0.4)
"""),
    scene("subcaptions_and_wait", """
self.add_subcaption("a caption", duration=0.5)
self.play(Write(Text("captions")), run_time=0.6, subcaption="writing")
self.wait(0.4)
"""),
    # -- randomness with a seed ------------------------------------------------------------------------------
    scene("random_seed", """
random.seed(7)
np.random.seed(7)
dots = VGroup(*[Dot(np.array([np.random.uniform(-6, 6), np.random.uniform(-3, 3), 0]), color=random_color())
                for _ in range(40)])
self.play(LaggedStart(*[GrowFromCenter(d) for d in dots], lag_ratio=0.05), run_time=1)
""", header="import random"),
    Case("random_seed_argument", "Seeded", """from manim import *

class Seeded(Scene):
    def __init__(self, **kwargs):
        super().__init__(random_seed=5, **kwargs)  # Manim seeds random and numpy.random with it

    def construct(self):
        dots = VGroup(*[Dot(np.random.uniform(-3, 3, 3) * [2, 1, 0], color=random_bright_color())
                        for _ in range(30)])
        self.play(FadeIn(dots), run_time=0.6)
"""),
    Case("config_seed", "ConfigSeed", """from manim import *

config.seed = 11  # module level, before the scene exists

class ConfigSeed(Scene):
    def construct(self):
        self.play(*[FadeIn(Square(0.4, color=random_color(), fill_opacity=1).shift(np.random.uniform(-3, 3, 3)
                                                                                  * [2, 1, 0]))
                    for _ in range(12)], run_time=0.5)
"""),
    # -- the renderer's own paths: split ranges, sections, stop conditions, module-level config -------------
    scene("split_many_animations", """
square = Square(1, color=TEAL, fill_opacity=0.6).shift(LEFT * 5)
self.add(square)
for i in range(14):  # 14 animations >= manim_split_min_animations: planned as parallel ranges, joined
    self.play(square.animate.shift(RIGHT * 0.7).rotate(0.3), run_time=0.2)
""", split=True),
    scene("sections_skipped", """
self.next_section("intro", skip_animations=True)
self.play(FadeIn(Text("never shown")), run_time=0.5)
self.next_section("main")
circle = Circle(color=ORANGE)
self.play(Create(circle), run_time=0.6)
self.play(circle.animate.scale(0.5), run_time=0.3)
"""),
    scene("wait_until_condition", """
t = ValueTracker(0)
dot = Dot().add_updater(lambda m, dt: t.increment_value(dt))
dot.add_updater(lambda m: m.move_to(RIGHT * t.get_value() * 3))
self.add(dot)
self.wait_until(lambda: t.get_value() >= 0.6, max_time=2)
"""),
    scene("change_speed", """
dot = Dot(LEFT * 4)
self.add(dot)
self.play(ChangeSpeed(dot.animate.shift(RIGHT * 8), speedinfo={0.3: 1, 0.4: 0.2, 0.6: 0.2, 1: 1}),
          run_time=1)
"""),
    Case("module_config_background", "TintedDemo", """from manim import *

config.background_color = "#202840"  # module level: the scene's own choice, kept

class TintedDemo(Scene):
    def construct(self):
        self.play(GrowFromCenter(RoundedRectangle(corner_radius=0.4, width=5, height=3, color=YELLOW)),
                  run_time=0.6)
"""),
    scene("pause_and_short_plays", """
self.play(FadeIn(Dot()), run_time=1 / 15)  # a single frame
self.pause(0.3)
self.play(Create(Line(LEFT, RIGHT)), run_time=0.27)  # not a whole number of frames
"""),
    # -- Kodisc's plugin --------------------------------------------------------------------------------------
    Case("kodisc_plugin_pie", "Pie", """from manim_kodisc import *

class Pie(Scene):
    def construct(self):
        chart = PiChart({"A": 3, "B": 2, "C": 1}, [RED, BLUE, GREEN]).scale(1.5)
        self.play(FadeIn(chart), run_time=0.6)
        self.wait(0.4)
"""),
]

FAST = [case for case in SCENES if case.fast]
