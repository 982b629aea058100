"""The ipywidgets panel: pick a model, mode, processes and sizes, press Run, read the summary and a tokens/s chart."""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Callable

import ipywidgets as widgets
from matplotlib.figure import Figure

from .. import defaults
from ..engine.runner import run
from ..launcher.launch import LaunchError, count_gpus
from ..engine.models import presets
from ..engine.modes import mode_names
from ..engine.prompts import default_prompts, varied_prompts
from .report import format_completions, format_split, format_summary

CPU_PROCESSES = 4  # without a GPU each process is a CPU process; more than 4 only slows a laptop down
PROMPT_SETS: dict[str, Callable[[], list[str]]] = {
    "article: 100 first lines": default_prompts,
    "varied: 200 prompts, up to 1045 tokens (use model small)": varied_prompts,
}


def process_choices() -> list[int]:
    """Process counts to offer: one per GPU at most, or 1..CPU_PROCESSES without a GPU."""
    return list(range(1, (count_gpus() or CPU_PROCESSES) + 1))


def run_from_panel(values: dict, history: list[dict]) -> tuple[dict, ...]:
    """Run once with the panel's values (run()'s arguments), add it to `history`, return the outputs to show."""
    result = run(**values, verbose=False)
    summary = result.summary
    split = f" TP {summary.tp_size}" if summary.tp_size > 1 else ""
    history.append({"label": f"#{len(history) + 1} {summary.mode}\n{summary.num_processes} proc{split}, "
                             f"{summary.batching()}", "tokens_per_s": summary.tokens_per_s})
    text = "\n\n".join([format_summary(summary), format_split(result.per_process),
                        format_completions(result.results)])
    return {"output_type": "stream", "name": "stdout", "text": text + "\n"}, chart_output(history)


def error_output(message: str) -> dict:
    """One red "Error: ..." line, with a plain-text twin for tests and text-only front ends."""
    line = f"Error: {message}"
    html = f'<pre style="color: #c00; white-space: pre-wrap">{escape(line)}</pre>'
    return {"output_type": "display_data", "metadata": {}, "data": {"text/plain": line, "text/html": html}}


def chart_output(history: list[dict]) -> dict:
    """A bar chart of tokens/s for every run in this panel so far, as a PNG display output."""
    figure = Figure(figsize=(1.2 + 1.1 * len(history), 2.6))
    axis = figure.subplots()
    axis.bar([h["label"] for h in history], [h["tokens_per_s"] for h in history], color="tab:blue")
    axis.set(ylabel="tokens/s", title="Runs in this panel")
    axis.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=80)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(png.getvalue()).decode("ascii"),
                     "text/plain": f"<bar chart: tokens/s of {len(history)} run(s)>"}}


def settings(model: str, prompts: list[str] | None, max_new_tokens: int, batch_size: int,
             num_processes: int) -> dict[str, widgets.ValueWidget]:
    """One input widget per argument of run(); the prompt set's value is a function returning the prompts."""
    sets = {**PROMPT_SETS, **({"your prompts": lambda: prompts} if prompts is not None else {})}
    choices = process_choices()
    style = {"description_width": "9em"}
    return {
        "model": widgets.Combobox(value=model, options=presets(), ensure_option=False, description="model",
                                  placeholder="a preset or a checkpoint folder", style=style),
        "mode": widgets.Dropdown(options=mode_names(), value="batched", description="mode", style=style),
        "num_processes": widgets.Dropdown(options=choices, value=min(num_processes, choices[-1]),
                                          description="processes", style=style),
        "tp_size": widgets.Dropdown(options=choices, value=1, description="TP size", style=style,
                                    tooltip="processes that split one copy of the model (lesson 6)"),
        "batch_size": widgets.BoundedIntText(value=batch_size, min=1, max=1024, description="batch size",
                                             style=style),
        "max_new_tokens": widgets.BoundedIntText(value=max_new_tokens, min=1, max=4096,
                                                 description="max new tokens", style=style),
        "prompts": widgets.Dropdown(options=list(sets.items()), value=sets.get("your prompts", default_prompts),
                                    description="prompt set", style=style),
    }


def offer_tp_size(fields: dict[str, widgets.ValueWidget]) -> None:
    """Show the TP size only where more than one process runs (one process has nothing to split with)."""
    def follow(_change=None) -> None:
        several = fields["num_processes"].value > 1
        fields["tp_size"].layout.display = None if several else "none"
        if not several:
            fields["tp_size"].value = 1

    fields["num_processes"].observe(follow, names="value")
    follow()


def panel(model: str = defaults.MODEL, prompts: list[str] | None = None,
          max_new_tokens: int = defaults.MAX_NEW_TOKENS, batch_size: int = defaults.BATCH_SIZE,
          num_processes: int = 2) -> widgets.VBox:
    """The panel: settings, a Run button, a running indicator, and an output with the summary and chart."""
    fields = settings(model, prompts, max_new_tokens, batch_size, num_processes)
    button = widgets.Button(description="Run", button_style="primary")
    progress = widgets.IntProgress(value=0, max=1, description="idle", style={"description_width": "9em"})
    output = widgets.Output(layout={"border": "1px solid #ddd", "padding": "4px"})
    history: list[dict] = []

    def on_click(_button: widgets.Button) -> None:
        """Run with the current settings and show the result; the button is off while the run lasts."""
        values = {name: field.value for name, field in fields.items()}
        values["prompts"] = values["prompts"]()
        button.disabled, progress.value, progress.bar_style, progress.description = True, 1, "info", "running..."
        try:
            output.outputs, state = run_from_panel(values, history), ("success", "done")
        except LaunchError as error:
            output.outputs, state = (error_output(error.message),), ("danger", "failed")
        except ValueError as error:  # ModelNotFoundError and PromptFileError are ValueErrors too
            output.outputs, state = (error_output(str(error)),), ("danger", "failed")
        finally:
            button.disabled = False
        progress.bar_style, progress.description = state

    button.on_click(on_click)
    offer_tp_size(fields)
    return widgets.VBox([*fields.values(), widgets.HBox([button, progress]), output])
