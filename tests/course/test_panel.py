"""The panel: a click runs inference and shows the summary and chart; a mistake shows one red line, no traceback."""

import ipywidgets as widgets
import pytest

from mgpu_lab.course.panel import panel, run_from_panel

PROMPTS = ["It was a bright cold day in April,", "Call me", "The King is dead."]


def parts(box: widgets.VBox) -> dict:
    """The panel's widgets by description (the output area under the key "output")."""
    found = {"output": box.children[-1]}
    for child in box.children[:-1]:
        for widget in getattr(child, "children", [child]):
            found["progress" if isinstance(widget, widgets.IntProgress) else widget.description] = widget
    return found


def click(box: widgets.VBox) -> tuple[dict, ...]:
    """Press Run and return what the output area shows."""
    panel_parts = parts(box)
    panel_parts["Run"].click()
    assert not panel_parts["Run"].disabled
    return panel_parts["output"].outputs


@pytest.mark.multiprocess
def test_run_shows_summary_completions_and_a_chart_kept_across_clicks():
    box = panel(prompts=PROMPTS, max_new_tokens=4, batch_size=2, num_processes=2)
    text, chart = click(box)
    assert "tokens/s:" in text["text"] and "processes: 2 x cpu" in text["text"]
    assert "[0] It was a bright cold day in April," in text["text"]
    assert chart["data"]["image/png"] and chart["data"]["text/plain"] == "<bar chart: tokens/s of 1 run(s)>"
    assert parts(box)["progress"].bar_style == "success"
    parts(box)["processes"].value = 1
    _, chart = click(box)
    assert chart["data"]["text/plain"] == "<bar chart: tokens/s of 2 run(s)>"


@pytest.mark.parametrize("setting, value, message", [
    ("model", "/no/such/checkpoint", "Error: Model '/no/such/checkpoint' was not found"),  # before any launch
    ("max new tokens", 300, "raised ValueError: Prompt"),  # in the processes: 300 > the tiny model's 256 positions
])
@pytest.mark.multiprocess
def test_a_mistake_is_one_red_error_line(setting, value, message):
    box = panel(prompts=PROMPTS, max_new_tokens=4)
    parts(box)[setting].value = value
    (shown,) = click(box)
    line = shown["data"]["text/plain"]
    assert line.startswith("Error: ") and message in line and "\n" not in line and "Traceback" not in line
    assert "color: #c00" in shown["data"]["text/html"] and parts(box)["progress"].bar_style == "danger"


def test_run_from_panel_rejects_batch_size_zero():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        run_from_panel({"mode": "batched", "model": "tiny", "prompts": PROMPTS, "num_processes": 2,
                        "max_new_tokens": 4, "batch_size": 0}, [])


def test_the_tp_size_is_offered_only_where_several_processes_run():
    found = parts(panel(num_processes=2))
    assert found["TP size"].layout.display is None and found["TP size"].value == 1
    found["TP size"].value = 2
    found["processes"].value = 1
    assert found["TP size"].layout.display == "none" and found["TP size"].value == 1


def test_a_tp_size_that_does_not_divide_the_processes_is_one_red_line():
    box = panel(prompts=PROMPTS, max_new_tokens=4, num_processes=3)
    parts(box)["TP size"].value = 2
    (shown,) = click(box)
    assert shown["data"]["text/plain"].startswith("Error: 3 process(es) cannot form replicas of tp_size=2 ranks.")


def test_process_choices_are_one_to_four_on_cpu():
    assert parts(panel())["processes"].options == (1, 2, 3, 4)
