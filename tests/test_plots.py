"""Curves per configuration (plots) and the standard figures (figures), on hand-made runs."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fedsim.metrics.figures import plot_all, plot_metric, plot_node_accuracy, write_figures
from fedsim.metrics.plots import (
    STRATEGY_COLOURS,
    configurations,
    curves,
    line_styles,
    strategy_colour,
)


def run_rows(
    run: str, overrides: str, metrics: dict[str, list[float]], **settings: object
) -> pd.DataFrame:
    """Tidy aggregate rows of one run, rounds 0, 1, ..., with its settings joined on."""
    rows = [
        (round_idx, metric, value)
        for metric, values in metrics.items()
        for round_idx, value in enumerate(values)
    ]
    frame = pd.DataFrame(rows, columns=["round", "metric", "value"])
    frame = frame.assign(run=run, node=pd.array([None] * len(frame), dtype="Int64"))
    return frame.assign(overrides=overrides, **settings)


def sweep(**extra: list[float]) -> pd.DataFrame:
    """FedAvg and D-PSGD with seeds 0 and 1 on a ring; the spectral gap varies with the seed."""
    accuracy = {
        ("fedavg", 0): [0.1, 0.5, 0.8],
        ("fedavg", 1): [0.1, 0.7, 0.8],
        ("dpsgd", 0): [0.1, 0.4, 0.6],
        ("dpsgd", 1): [0.1, 0.4, 0.7],
    }
    megabytes = {"fedavg": 1.0, "dpsgd": 3.0}
    frames = [
        run_rows(
            str(index),
            f"strategy={strategy} seed={seed} topology=ring progress=false",
            {
                "accuracy": curve,
                "bytes_sent_total": [r * megabytes[strategy] * 1e6 for r in range(3)],
                "consensus_distance": [1e-3, 1e-2, 1e-1],
                "node_accuracy_mean": [0.1, 0.3, 0.5],
                "node_accuracy_min": [0.0, 0.1, 0.2 + 0.1 * seed],
                "node_accuracy_max": [0.2, 0.5, 0.8],
                **extra,
            },
            strategy=strategy,
            seed=seed,
            **{"optimizer.lr": 0.1, "graph.spectral_gap": 0.1 * (seed + 1)},
        )
        for index, ((strategy, seed), curve) in enumerate(accuracy.items())
    ]
    return pd.concat(frames, ignore_index=True)


def test_runs_that_differ_only_in_seed_form_one_configuration() -> None:
    labels, shared = configurations(sweep())

    assert labels.to_dict() == {
        "0": "strategy=fedavg",
        "1": "strategy=fedavg",
        "2": "strategy=dpsgd",
        "3": "strategy=dpsgd",
    }
    assert shared == "topology=ring"  # seed and progress are not settings


def test_a_setting_no_override_names_still_splits_configurations() -> None:
    def run(name: str, overrides: str, strategy: str, lr: float) -> pd.DataFrame:
        settings = {"strategy": strategy, "optimizer.lr": lr}
        return run_rows(name, overrides, {"accuracy": [0.5]}, **settings)

    unnamed = pd.concat([run("a", "seed=0", "fedavg", 0.1), run("b", "seed=1", "fedavg", 0.2)])
    named = pd.concat(
        [
            run("a", "strategy=fedavg", "fedavg", 0.1),
            run("b", "strategy=fedavg", "fedavg", 0.2),
            run("c", "strategy=dpsgd", "dpsgd", 0.1),
        ]
    )

    assert configurations(unnamed)[0].to_dict() == {"a": "a", "b": "b"}  # run names
    assert configurations(named)[0].to_dict() == {
        "a": "strategy=fedavg [a]",
        "b": "strategy=fedavg [b]",
        "c": "strategy=dpsgd [c]",
    }


def test_curves_average_the_seeds_of_a_configuration_with_a_std_band() -> None:
    table = curves(sweep(), "accuracy").set_index(["configuration", "round"])

    fedavg = table.loc["strategy=fedavg"]
    assert fedavg["y"].tolist() == pytest.approx([0.1, 0.6, 0.8])
    assert fedavg["x"].tolist() == [0, 1, 2]
    assert fedavg["seeds"].tolist() == [2, 2, 2]
    half_width = 0.02**0.5  # std of (0.5, 0.7) with ddof=1
    assert fedavg.loc[1, "upper"] == pytest.approx(0.6 + half_width)
    assert fedavg.loc[1, "lower"] == pytest.approx(0.6 - half_width)
    assert fedavg.loc[2, "upper"] == pytest.approx(0.8)  # both seeds agree: no width


def test_curves_pair_a_metric_x_with_the_same_run_and_round() -> None:
    table = curves(sweep(), "accuracy", x="bytes_sent_total")

    dpsgd = table[table["configuration"] == "strategy=dpsgd"]
    assert dpsgd["x"].tolist() == [0.0, 3e6, 6e6]
    assert dpsgd["y"].tolist() == pytest.approx([0.1, 0.4, 0.65])


def test_curves_take_the_band_from_two_metrics_when_asked() -> None:
    band = ("node_accuracy_min", "node_accuracy_max")

    table = curves(sweep(), "node_accuracy_mean", band=band)

    last = table[table["round"] == 2].set_index("configuration")
    assert last["lower"].tolist() == pytest.approx([0.25, 0.25])  # mean of 0.2 and 0.3
    assert last["upper"].tolist() == [0.8, 0.8]


def test_a_single_run_is_a_line_without_band_labelled_by_its_strategy() -> None:
    runs = run_rows(
        ".", "strategy=fedavg seed=4 rounds=2", {"accuracy": [0.2, 0.4]}, seed=4, strategy="fedavg"
    )

    table = curves(runs, "accuracy")

    assert table["configuration"].unique().tolist() == ["fedavg"]
    assert configurations(runs)[1] == "strategy=fedavg rounds=2"  # into the title
    assert table[["lower", "upper"]].isna().all(axis=None)


def test_a_configuration_with_an_unfinished_run_says_so() -> None:
    runs = sweep()
    runs["status"] = runs["run"].map({"0": "completed", "1": "completed"}).fillna("completed")
    runs.loc[runs["run"] == "3", "status"] = "interrupted"

    labels, _ = configurations(runs)

    assert labels.to_dict() == {
        "0": "strategy=fedavg",
        "1": "strategy=fedavg",
        "2": "strategy=dpsgd (interrupted)",
        "3": "strategy=dpsgd (interrupted)",
    }


def inside(figure: Figure, artist: object) -> bool:
    """Whether ``artist`` is drawn wholly inside ``figure`` (nothing cut off)."""
    figure.canvas.draw()
    box, frame = artist.get_window_extent(), figure.bbox  # type: ignore[attr-defined]
    return box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1 and box.y0 >= frame.y0 - 1


def test_accuracy_per_byte_is_on_a_log_axis_without_the_zero_of_round_0() -> None:
    figure = plot_metric(sweep(), "accuracy", x="bytes")

    assert figure is not None
    axes = figure.axes[0]
    legend = axes.get_legend()
    assert legend is not None
    assert [text.get_text() for text in legend.get_texts()] == [
        "strategy=fedavg",
        "strategy=dpsgd",
    ]
    assert legend.get_title().get_text() == "mean ± std over 2 seeds"
    assert axes.get_xscale() == "log"
    assert axes.get_xlabel() == "bytes sent by all nodes (MB), log scale; 0 not drawn"
    assert axes.get_ylabel() == "test accuracy (fraction correct)"
    assert axes.get_title().splitlines() == ["accuracy per byte sent", "topology=ring"]
    assert np.asarray(axes.lines[1].get_xdata()).tolist() == [3.0, 6.0]  # MB; round 0 left out


def test_logx_turns_the_log_axis_off_for_bytes_and_on_for_rounds() -> None:
    linear = plot_metric(sweep(), "accuracy", x="bytes", logx=False)
    logarithmic = plot_metric(sweep(), "accuracy", x="round", logx=True)

    assert linear is not None and logarithmic is not None
    assert linear.axes[0].get_xscale() == "linear"
    assert np.asarray(linear.axes[0].lines[1].get_xdata()).tolist() == [0.0, 3.0, 6.0]
    assert logarithmic.axes[0].get_xscale() == "log"


def test_a_strategy_has_one_colour_in_every_figure_whatever_else_is_drawn() -> None:
    runs = sweep()
    dpsgd_alone = runs[runs["strategy"] == "dpsgd"]

    both = plot_metric(runs, "accuracy", "round")
    alone = plot_metric(dpsgd_alone, "accuracy", "bytes")

    assert both is not None and alone is not None
    colours = [line.get_color() for line in both.axes[0].lines]
    assert colours == [STRATEGY_COLOURS["fedavg"], STRATEGY_COLOURS["dpsgd"]]
    assert alone.axes[0].lines[0].get_color() == STRATEGY_COLOURS["dpsgd"]


def test_every_strategy_has_a_colour_of_its_own() -> None:
    strategies = {
        path.stem for path in (Path(__file__).parents[1] / "configs" / "strategy").glob("*.yaml")
    }

    assert set(STRATEGY_COLOURS) == strategies
    assert len(set(STRATEGY_COLOURS.values())) == len(STRATEGY_COLOURS)


def test_a_strategy_not_in_the_palette_gets_a_colour_from_its_name_alone() -> None:
    # CRC-32 of the name, not Python's hash(), which changes with PYTHONHASHSEED.
    assert strategy_colour("my_strategy") == strategy_colour("my_strategy", position=5)
    assert strategy_colour("my_strategy") == "#8c564b"  # CRC-32 mod the palette's 29
    assert strategy_colour(None, position=1) != strategy_colour(None, position=2)


def test_configurations_of_one_strategy_share_its_hue_in_lighter_shades_and_other_styles() -> None:
    def run(name: str, lr: float) -> pd.DataFrame:
        settings = {"strategy": "dpsgd", "optimizer.lr": lr}
        return run_rows(name, f"optimizer.lr={lr}", {"accuracy": [0.5]}, **settings)

    styles = line_styles(pd.concat([run("a", 0.1), run("b", 0.01)]))

    assert styles["optimizer.lr=0.1"] == (STRATEGY_COLOURS["dpsgd"], "-")
    colour, style = styles["optimizer.lr=0.01"]
    assert style == "--" and colour not in STRATEGY_COLOURS.values()


def test_consensus_distance_is_drawn_on_a_log_scale() -> None:
    figure = plot_metric(sweep(), "consensus_distance")

    assert figure is not None and figure.axes[0].get_yscale() == "log"


def test_zeros_are_left_out_of_a_log_scale_and_the_label_says_so() -> None:
    runs = sweep()
    runs.loc[(runs["metric"] == "consensus_distance") & (runs["round"] == 0), "value"] = 0.0
    figure = plot_metric(runs, "consensus_distance")

    assert figure is not None
    axes = figure.axes[0]
    assert axes.get_ylabel().endswith("; 0 not drawn")
    assert np.isnan(np.asarray(axes.lines[0].get_ydata(), dtype=float)[0])


def test_node_accuracy_has_one_panel_per_configuration_explaining_its_band() -> None:
    figure = plot_node_accuracy(sweep())

    assert figure is not None
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in panels] == ["strategy=fedavg", "strategy=dpsgd"]
    assert [len(axes.collections) for axes in panels] == [1, 1]  # one band each
    assert figure.get_suptitle().splitlines()[-1] == (
        "line: mean over nodes; band: min to max; mean over 2 seeds"
    )


def test_a_single_run_has_a_short_legend_the_settings_in_the_title_and_nothing_cut_off() -> None:
    overrides = "strategy=dpsgd topology=regular topology.degree=4 num_nodes=20 seed=0"
    runs = run_rows(
        ".",
        overrides,
        {"accuracy": [0.1, 0.5], "bytes_sent_total": [0.0, 1e6]},
        strategy="dpsgd",
        topology="regular",
        num_nodes=20,
        seed=0,
    )

    figure = plot_metric(runs, "accuracy", "bytes")

    assert figure is not None
    axes = figure.axes[0]
    legend = axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["dpsgd"]
    assert axes.get_title().splitlines()[1] == (
        "strategy=dpsgd topology=regular num_nodes=20 topology.degree=4"
    )
    assert inside(figure, legend)
    assert axes.get_position().width > 0.7  # the axes are not pushed aside


@pytest.mark.parametrize("long", [False, True])
def test_many_configurations_put_the_legend_below_the_axes_inside_the_figure(long: bool) -> None:
    def overrides(i: int) -> str:
        extra = f" model.hidden=[{i}12,{i}12,256] data.root=/data/sets/digits/copy_{i}" * long
        return f"optimizer.lr={i}{extra}"

    runs = pd.concat(
        [
            run_rows(str(i), overrides(i), {"accuracy": [0.1, 0.2]}, **{"optimizer.lr": i})
            for i in range(9)
        ]
    )

    figure = plot_metric(runs)

    assert figure is not None and figure.axes[0].get_legend() is None
    (legend,) = figure.legends
    assert len(legend.get_texts()) == 9
    assert inside(figure, legend)
    assert figure.axes[0].get_position().height > 0.3  # the axes keep their room


def test_plot_all_draws_the_metric_against_each_recorded_axis(tmp_path: Path) -> None:
    without = write_figures(sweep(), tmp_path / "without", dpi=60)
    with_time = plot_all(sweep(sim_time_s=[0.0, 10.0, 20.0]))
    loss = plot_all(sweep(loss=[2.0, 1.0, 0.5]), "loss", x="bytes")

    assert [path.stem for path in without] == [
        "accuracy_vs_round",
        "accuracy_vs_bytes",
        "consensus_distance_vs_round",
        "node_accuracy_vs_round",
    ]
    assert list(with_time)[2] == "accuracy_vs_sim_time"
    assert list(loss) == ["loss_vs_bytes", "consensus_distance_vs_bytes", "node_accuracy_vs_bytes"]
    for path in without:
        height, width, channels = matplotlib.image.imread(path).shape
        assert height > 200 and width > 300 and channels in (3, 4)


@pytest.mark.parametrize(
    ("metric", "x", "message"),
    [
        ("accurcy", None, "metric 'accurcy' is not recorded by these runs; recorded: accuracy, "),
        ("accuracy", "sim_time_s", "x 'sim_time_s': no run records sim_time_s; x can be round, "),
        ("accuracy", "local_steps", "x 'local_steps': no run records local_steps; x can be "),
        ("accuracy", "bytes_sent", "x must be one of round, local_steps, bytes, sim_time_s; got "),
    ],
)
def test_a_metric_or_x_axis_not_recorded_is_an_error_naming_what_is(
    metric: str, x: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        plot_all(sweep(), metric, x)


def test_lines_follow_the_natural_order_of_runs_not_their_string_order() -> None:
    runs = pd.concat(
        [
            run_rows("2", "strategy=dpsgd", {"accuracy": [0.1, 0.2]}, strategy="dpsgd"),
            run_rows("10", "strategy=fedavg", {"accuracy": [0.1, 0.3]}, strategy="fedavg"),
        ]
    )

    table = curves(runs, "accuracy")

    assert table["configuration"].unique().tolist() == ["strategy=dpsgd", "strategy=fedavg"]
