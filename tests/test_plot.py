"""nbutils.plotting: the Animator in place and readable from its first point, silent without a
frontend; my_utils' plot helpers; widgets that fall back to one static view."""
import ipywidgets
import matplotlib
import numpy as np
import pytest
import torch

import nbutils as nb
from nbutils import plotting as nbplot


def test_no_frontend_in_tests():
    assert not nb.has_frontend()


@pytest.fixture
def displays(monkeypatch):
    """What the Animator and browse() show: ("display" | "update", format) per call."""
    calls = []

    class Handle:
        def update(self, obj):
            calls.append(("update", obj.format))

    def fake_display(obj, display_id=False):
        calls.append(("display", obj.format))
        return Handle()

    monkeypatch.setattr(nbplot, "display", fake_display)
    return calls


def test_headless_animator_draws_nothing_and_saves_png(tmp_path, displays):
    animator = nb.Animator(xlabel="epoch", legend=["a", "b"], xlim=[1, 3])
    for x in (1, 2, 3):
        animator.add(x, (x * 0.1, x * 0.2))
    animator.finish()
    assert animator.save(tmp_path / "curve.png") is None
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert animator.Y == [[0.1, 0.2, pytest.approx(0.3)], [0.2, 0.4, pytest.approx(0.6)]]
    assert displays == []


def test_live_animator_updates_one_display_in_place(displays):
    animator = nb.Animator(live=True, min_interval=0)
    for x in range(4):
        animator.add(x, x)
    animator.finish()
    assert displays == [("display", "png")] + [("update", "png")] * 4  # 3 more adds, the last frame


def test_live_animator_throttles(monkeypatch):
    shown = []
    monkeypatch.setattr(nbplot.Animator, "show", lambda self: shown.append(1) or
                        setattr(self, "_last_draw", nbplot.time.monotonic()))
    animator = nb.Animator(live=True, min_interval=60)
    for x in range(10):
        animator.add(x, x)
    assert len(shown) == 1


def test_one_epoch_shows_with_markers_and_integer_ticks():
    animator = nb.training_animator(1, live=False)
    animator.add(1, (2.05, 0.3, 0.35, 1e-3))
    fig = animator.finish()
    loss_panel, lr_panel = fig.axes
    assert [len(line.get_xdata()) for line in loss_panel.get_lines()] == [1, 1, 1]
    assert all(line.get_marker() == "o" for line in loss_panel.get_lines() + lr_panel.get_lines())
    ticks = loss_panel.get_xticks()
    assert all(float(t).is_integer() for t in ticks) and 1 in ticks


def test_no_point_leaves_the_axes_and_the_loss_panel_is_labelled():
    animator = nb.training_animator(3, live=False)
    for epoch, loss in ((1, 2.05), (2, 1.5), (3, 1.12)):
        animator.add(epoch, (loss, 0.4 + 0.1 * epoch, 0.5, 1e-3))
    loss_panel, lr_panel = animator.finish().axes
    low, high = loss_panel.get_ylim()
    assert low <= 0 and high >= 2.05 and loss_panel.get_ylabel() == "loss / accuracy"
    assert lr_panel.get_ylabel() == "learning rate" and lr_panel.get_yscale() == "log"
    assert loss_panel.get_ylim() == (0, 1) or high < 2.5  # grown to the data, not to anything else


def test_panels_move_together():
    """One add() per epoch feeds both panels, so a frame never shows an epoch in one and not the
    other (the learning rate used to lag one epoch behind)."""
    frames = []
    animator = nb.training_animator(3, live=True)
    animator.min_interval = 0
    animator.show = lambda: frames.append([len(ax.get_lines()[0].get_xdata()) if ax.get_lines()
                                           else 0 for ax in (animator.draw() or animator.axes)])
    for epoch in (1, 2, 3):
        animator.add(epoch, (1.0, 0.5, 0.5, 1e-3))
    assert frames == [[1, 1], [2, 2], [3, 3]]


def test_plot_and_set_axes():
    ax = nb.plot(list(range(5)), [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]], "x", "y", legend=["up", "down"])
    assert ax.get_xlabel() == "x" and len(ax.get_lines()) == 2


def test_show_images_grid_hides_unused_axes():
    axes = nb.show_images(torch.zeros(5, 28, 28), 2, 3, titles=list("abcde"))
    assert [ax.get_visible() for ax in axes] == [True] * 5 + [False]
    assert axes[0].get_title() == "a"


def test_two_line_titles_do_not_overlap_the_images_above():
    titles = ["ankle boot\n→ sneaker"] * 18
    axes = nb.show_images(torch.rand(18, 28, 28), 2, 9, titles=titles)
    fig = axes[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for top, bottom in zip(axes[:9], axes[9:]):
        title = bottom.title.get_window_extent(renderer)
        assert title.y1 < top.get_window_extent(renderer).y0, "a title covers the image above it"
    matplotlib.pyplot.close(fig)


def test_save_figure_prints_nothing(tmp_path):
    """A notebook cell that ends with save_figure must not show a PosixPath as its Out[]."""
    fig = matplotlib.figure.Figure()
    assert nb.save_figure(fig, tmp_path / "f.png") is None
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def draw_square(size=3, colour="gray"):
    fig = matplotlib.figure.Figure(figsize=(1, 1))
    fig.subplots().imshow(np.ones((size, size)), cmap=colour)
    return fig


def test_browse_without_a_frontend_draws_one_static_view_from_the_defaults(tmp_path, displays):
    seen = []

    def draw(size=3, colour="gray"):
        seen.append((size, colour))
        return draw_square(size, colour)

    assert nb.browse(draw, save=tmp_path / "view.png", size=(1, 10), colour=["gray", "hot"]) is None
    assert seen == [(3, "gray")] and displays == [("display", "png")]
    assert (tmp_path / "view.png").read_bytes()[:4] == b"\x89PNG"


def test_browse_with_a_frontend_is_ipywidgets_interact(monkeypatch, tmp_path, displays):
    monkeypatch.setattr(nbplot, "has_frontend", lambda: True)
    made = {}

    def interact(view, **controls):
        made.update(controls)
        widget = ipywidgets.interactive(view, **controls)  # what interact builds and shows
        made["widget"] = widget
        return view

    monkeypatch.setattr(nbplot.ipywidgets, "interact", interact)
    nb.browse(draw_square, save=tmp_path / "first.png", size=(1, 10), colour=["gray", "hot"])
    slider, dropdown = made["widget"].children[:2]
    assert isinstance(slider, ipywidgets.IntSlider) and slider.value == 3  # draw's default
    assert isinstance(dropdown, ipywidgets.Dropdown) and dropdown.value == "gray"
    first = (tmp_path / "first.png").read_bytes()
    slider.value = 7  # a student moves the slider: a new view, and the saved file stays the first
    assert len(displays) == 2 and (tmp_path / "first.png").read_bytes() == first


@pytest.mark.parametrize("frontend, formats", [(True, [("svg",)]), (False, [])])
def test_use_svg_display_asks_the_inline_backend_for_svg_only_with_a_frontend(monkeypatch, frontend,
                                                                               formats):
    # my_utils called IPython's set_matplotlib_formats, which current IPython no longer has.
    asked = []
    monkeypatch.setattr(nbplot, "set_matplotlib_formats", lambda *f: asked.append(f))
    monkeypatch.setattr(nbplot, "has_frontend", lambda: frontend)
    nb.use_svg_display()
    assert asked == formats
