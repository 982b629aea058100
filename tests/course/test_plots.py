"""The scaling figure draws one line per batch size, never one zig-zag line through all the records."""

import matplotlib

matplotlib.use("Agg")

from mgpu_lab.course.plots import plot_scaling  # noqa: E402


def record(processes, batch, wall):
    return {"mode": "batched", "num_processes": processes, "batch_size": batch, "wall_s": wall,
            "tokens_per_s": 1000 / wall, "prompts": 100}


def test_one_line_per_batch_size():
    records = [record(1, 8, 4.0), record(1, 16, 3.0), record(2, 8, 2.5), record(2, 16, 2.0)]
    figure = plot_scaling(records)
    left, right = figure.axes
    assert [line.get_label() for line in right.lines] == ["batch 8", "batch 16"]
    assert all(list(line.get_xdata()) == [1, 2] for line in right.lines)
    assert not right.patches  # no bars to overlap
    measured = [line for line in left.lines if line.get_label().startswith("this machine")]
    assert [line.get_label() for line in measured] == [
        "this machine, batch 8, measured", "this machine, batch 8, batch-count model",
        "this machine, batch 16, measured", "this machine, batch 16, batch-count model"]
    assert list(measured[0].get_ydata()) == [1.0, 4.0 / 2.5]
    assert [line.get_color() for line in right.lines] == [measured[0].get_color(), measured[2].get_color()]


def test_lesson_5s_figure_takes_summaries_by_prompt_set():
    from mgpu_lab.course.plots import plot_modes
    from mgpu_lab.engine.results import RunSummary

    summary = RunSummary.from_record({"mode": "batched", "tokens_per_s": 100.0, "padding_ratio": 0.5})
    figure = plot_modes({"article": [summary], "varied": [summary]})
    assert [axis.get_title() for axis in figure.axes] == ["article prompts", "varied prompts"]
