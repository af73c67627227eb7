"""nbutils.plot: Animator in place, silent without a frontend; my_utils' plot helpers."""
import pytest
import torch

import nbutils as nb
from nbutils import plotting as nbplot


def test_no_frontend_in_tests():
    assert not nb.has_frontend()


def test_headless_animator_draws_nothing_and_saves_png(tmp_path, monkeypatch):
    import IPython.display
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: pytest.fail("displayed"))
    animator = nb.Animator(xlabel="epoch", legend=["a", "b"], xlim=[1, 3])
    for x in (1, 2, 3):
        animator.add(x, (x * 0.1, x * 0.2))
    path = animator.finish(tmp_path / "curve.png") and tmp_path / "curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert animator.data[0][1] == [[0.1, 0.2, 0.30000000000000004], [0.2, 0.4, 0.6000000000000001]]


def test_live_animator_updates_one_display_in_place(monkeypatch):
    calls = []

    class Handle:
        def update(self, obj):
            calls.append(("update", obj.format))

    def fake_display(obj, display_id=False):
        calls.append(("display", obj.format))
        return Handle()

    import IPython.display
    monkeypatch.setattr(IPython.display, "display", fake_display)
    animator = nb.Animator(live=True, min_interval=0)
    for x in range(4):
        animator.add(x, x)
    animator.finish()
    assert calls[0] == ("display", "png")
    assert calls[1:] == [("update", "png")] * 4  # three more adds and the final frame


def test_live_animator_throttles(monkeypatch):
    shown = []
    monkeypatch.setattr(nbplot.Animator, "show", lambda self: shown.append(1) or
                        setattr(self, "_last_draw", nbplot.time.monotonic()))
    animator = nb.Animator(live=True, min_interval=60)
    for x in range(10):
        animator.add(x, x)
    assert len(shown) == 1


def test_training_animator_has_lr_panel():
    animator = nb.training_animator(5, live=False)
    animator.add(1, (1.0, 0.5, 0.6))
    animator.add(1, 1e-3, axis=1)
    fig = animator.finish()
    assert len(fig.axes) == 2 and fig.axes[1].get_yscale() == "log"


def test_plot_and_set_axes():
    ax = nb.plot(list(range(5)), [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]], "x", "y", legend=["up", "down"])
    assert ax.get_xlabel() == "x" and len(ax.get_lines()) == 2


def test_show_images_grid_hides_unused_axes():
    axes = nb.show_images(torch.zeros(5, 28, 28), 2, 3, titles=list("abcde"))
    assert [ax.get_visible() for ax in axes] == [True] * 5 + [False]
    assert axes[0].get_title() == "a"


@pytest.mark.parametrize("frontend, formats", [(True, [("svg",)]), (False, [])])
def test_use_svg_display_asks_the_inline_backend_for_svg_only_with_a_frontend(monkeypatch, frontend,
                                                                               formats):
    # my_utils called IPython's set_matplotlib_formats, which current IPython no longer has.
    from matplotlib_inline import backend_inline
    asked = []
    monkeypatch.setattr(backend_inline, "set_matplotlib_formats", lambda *f: asked.append(f))
    monkeypatch.setattr(nbplot, "has_frontend", lambda: frontend)
    nb.use_svg_display()
    assert asked == formats
