"""The report's figures read right: t on its true scale with ticks at exactly the measured t, signed maps on
a diverging colour scale centred on 0 whose caption names the colours, labelled axes and reference lines,
markers where a series has one point, and sample images upscaled without smoothing."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.image import AxesImage

from pipeline.analysis import load_stage_outputs
from pipeline.analysis.figures import build_figures
from pipeline.analysis.plotting import cell_edges as _cell_edges
from pipeline.analysis.plotting import use_log_t
from pipeline.analysis.scoring import analyse
from pipeline.analysis.synthetic import write_synthetic_run
from pipeline.analysis.tables.t3_suppression import fig_suppression
from pipeline.analysis.tables.t8_pc_slack import fig_slack


@pytest.fixture(scope="module", params=["learned", "gaussian_oracle"])
def figures(request, tmp_path_factory):
    run = write_synthetic_run(tmp_path_factory.mktemp(request.param), request.param)
    inp = load_stage_outputs(run.covariance_dir, run.trajectories_dir, run.jacobian_dir)
    ctx, tables, _, _, _ = analyse(inp)
    return inp, {f.name: f for f in build_figures(tables, ctx, inp)}


def _main_axes(fig):
    """The plotting axes (colour bars excluded)."""
    return [ax for ax in fig.figure.axes if ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("name", ["suppression_heatmap", "pc_slack_heatmap"])
def test_heatmap_columns_sit_at_the_measured_t(figures, name):
    inp, figs = figures
    measured = np.unique(inp.patches["t"]).astype(float)
    (ax,) = _main_axes(figs[name])
    np.testing.assert_array_equal(ax.get_xticks(), measured)  # one tick per measured t, at that t
    assert not ax.xaxis.get_minorticklocs().size
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels[0] == f"{measured[0]:g}" and labels[-1] == f"{measured[-1]:g}"
    # each column of the mesh contains its own t and no other (true scale, not equal-width slots)
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    edges = mesh.get_coordinates()[0, :, 0]
    assert len(edges) == len(measured) + 1
    assert np.all((edges[:-1] < measured) & (measured < edges[1:]))
    assert ax.get_xscale() == ("log" if use_log_t(measured) else "linear")
    assert ax.get_xlabel().startswith("paper timestep t") and ax.get_ylabel()


def test_unevenly_measured_t_get_a_log_axis_with_columns_at_each_t(tmp_path):
    # the learned companion's points.steps: 7 unevenly spaced t. Formerly drawn as 7 equal-width columns on a
    # linear axis, which put t = 500 near 790; now each column is centred on its t on a log axis.
    run = write_synthetic_run(tmp_path, "learned")
    inp = load_stage_outputs(run.covariance_dir, run.trajectories_dir, run.jacobian_dir)
    keep = np.isin(inp.patches["t"], [1000, 500, 200, 100, 60, 40, 20])
    inp.patches = {k: np.asarray(v)[keep] for k, v in inp.patches.items()}
    ctx, tables, _, _, _ = analyse(inp)
    for f in (fig_slack(tables, ctx, inp), fig_suppression(tables, ctx, inp)):
        (ax,) = _main_axes(f)
        assert ax.get_xscale() == "log"
        np.testing.assert_array_equal(ax.get_xticks(), [20, 40, 60, 100, 200, 500, 1000])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["20", "40", "60", "100", "200", "500", "1000"]
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        edges = mesh.get_coordinates()[0, :, 0]
        # t = 500's column is centred on 500 in log space: between sqrt(200*500) and sqrt(500*1000)
        np.testing.assert_allclose(edges[5:7], [np.sqrt(200 * 500), np.sqrt(500 * 1000)])
        assert "7 measured t on a log scale" in f.caption


def test_even_steps_stay_linear():
    assert not use_log_t(np.arange(20, 1001, 20.0)) and use_log_t(
        np.array([20, 40, 60, 100, 200, 500, 1000.0])
    )


def test_cell_edges_centre_columns_on_their_t():
    # t = 20, 100, 500, 1000 on a log axis: inner edges are geometric means of neighbours
    e = _cell_edges(np.array([20.0, 100.0, 500.0, 1000.0]), log=True)
    np.testing.assert_allclose(e[1:4], [np.sqrt(20 * 100), np.sqrt(100 * 500), np.sqrt(500 * 1000)])
    np.testing.assert_allclose(e[0], 20 / np.sqrt(5)) and np.testing.assert_allclose(e[-1], 1000 * np.sqrt(2))
    np.testing.assert_allclose(_cell_edges(np.array([10.0, 20.0, 40.0]), log=False), [5, 15, 30, 50])


def test_signed_maps_are_diverging_and_centred_on_zero_with_a_matching_caption(figures):
    _, figs = figures
    for name, cmap, words in (
        ("pc_slack_heatmap", "RdBu", ("blue = satisfied", "red = violated", "white = 0")),
        ("suppression_heatmap", "RdBu_r", ("red = S > 0", "blue = S < 0", "white = 0")),
    ):
        (ax,) = _main_axes(figs[name])
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        assert mesh.get_cmap().name == cmap
        assert mesh.norm.vmin == -mesh.norm.vmax > -np.inf  # 0 is the map's centre (white)
        for w in words:
            assert w in figs[name].caption, (name, w)
        assert "diverging" in figs[name].caption and "viridis" not in figs[name].caption


def test_every_plot_has_labelled_axes_and_labelled_reference_lines(figures):
    _, figs = figures
    for name, f in figs.items():
        for ax in _main_axes(f):
            if name == "samples":
                continue  # images, axes off
            assert ax.get_xlabel().strip(), (name, "x label")
            assert ax.get_ylabel().strip(), (name, "y label")
            for line in ax.get_lines():
                x, y = line.get_xdata(), line.get_ydata()
                flat = len(np.unique(np.asarray(y, dtype=float))) == 1 and len(y) == 2
                if flat and float(y[0]) == 1.0:
                    assert not line.get_label().startswith("_"), (name, "the y = 1 line needs a label")
                if len(np.atleast_1d(x)) == 1:
                    assert line.get_marker() not in (None, "None", ""), (
                        name,
                        "single point without a marker",
                    )


def test_block_figure_draws_points_with_markers(figures):
    _, figs = figures
    for ax in _main_axes(figs["block_decomposition"]):
        drawn = [
            ln for ln in ax.get_lines() if len(np.atleast_1d(ln.get_xdata())) and ln.get_marker() != "None"
        ]
        assert drawn, "no marked series"
        assert any(
            ln.get_label().startswith("1: contraction") for ln in ax.get_lines()
        ) or ax.get_ylabel().startswith("$\\hat\\delta")


def test_sample_images_are_nearest_neighbour(figures):
    _, figs = figures
    images = [im for ax in figs["samples"].figure.axes for im in ax.get_images() if isinstance(im, AxesImage)]
    assert images and all(im.get_interpolation() == "nearest" for im in images)
