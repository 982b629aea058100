"""Long runs: a live bar over every process, completions saved as they come, and a killed run resumed."""

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest

from mgpu_lab.launcher import bar as progress
from mgpu_lab.engine.runner import run
from mgpu_lab.launcher.launch import LaunchError, launch
from mgpu_lab.launcher.bar import Progress, tell
from mgpu_lab.engine.prompts import default_prompts


def tell_twice(seen: str) -> None:
    """Each rank finishes one prompt, waits until the parent's bar has shown some progress, then finishes one more."""
    tell(1, 5)
    deadline = time.monotonic() + 120
    while not Path(seen).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    tell(1, 5)


@pytest.mark.multiprocess
def test_the_bar_counts_every_process_while_they_run(tmp_path, monkeypatch):
    shown = []
    seen = tmp_path / "seen"
    refresh = progress.Bar.refresh

    def recording(bar):
        refresh(bar)
        shown.append((bar.bar.n, bar.bar.postfix))
        if 0 < bar.bar.n < 4:
            seen.touch()

    monkeypatch.setattr(progress.Bar, "refresh", recording)
    launch(tell_twice, (str(seen),), num_processes=2, verbose=False, progress=Progress(total=4))
    assert any(0 < n < 4 for n, _ in shown)  # seen while the processes were still running
    assert shown[-1] == (4, "20 tokens generated")


@pytest.mark.multiprocess
def test_terminal_bar_goes_to_stderr_and_json_stdout_stays_one_object():
    controller, terminal = pty.openpty()  # stderr is a terminal, as in a shell; stdout is piped
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns wide
    cli = subprocess.Popen([sys.executable, "-m", "mgpu_lab", "naive", "--json", "--max-new-tokens", "2"],
                           stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    out, _ = cli.communicate(timeout=300)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert cli.returncode == 0
    assert len(json.loads(out)["results"]) == 100
    assert b"prompts:" in seen and b"/100" in seen


PROMPTS = default_prompts(repeat=3)  # 30 prompts


def read_lines(path: Path) -> list[dict]:
    """The completions of an output file (its header line set aside, once there is one)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert not lines or lines[0]["mgpu_lab"] == "completions"
    return lines[1:]


@pytest.mark.multiprocess
def test_output_file_gets_every_completion_and_refuses_to_mix_runs(tmp_path):
    path = tmp_path / "out.jsonl"
    result = run("batched", "tiny", PROMPTS[:6], num_processes=2, max_new_tokens=3, batch_size=2, verbose=False,
                 output=str(path))
    lines = read_lines(path)
    assert sorted(r["index"] for r in lines) == list(range(6))
    assert {"index", "prompt", "text", "prompt_tokens", "generated_tokens", "stop_reason"} <= lines[0].keys()
    assert [c.text for c in result.results] == [r["text"] for r in sorted(lines, key=lambda r: r["index"])]
    try:
        run("batched", "tiny", PROMPTS[:6], num_processes=2, max_new_tokens=3, verbose=False, output=str(path))
    except ValueError as error:
        assert "pass --resume" in str(error)
    else:
        raise AssertionError("a second run into the same file must ask for --resume")


@pytest.mark.multiprocess
def test_a_killed_run_resumed_gives_every_prompt_exactly_once(tmp_path):
    path, prompts = tmp_path / "out.jsonl", tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    args = [sys.executable, "-m", "mgpu_lab", "batched", "--prompts", str(prompts), "--max-new-tokens", "30",
            "--batch-size", "1", "--output", str(path), "--quiet"]
    cli = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not path.exists() or len(path.read_text().splitlines()) < 4:  # killed part-way through
        assert cli.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    children = psutil.Process(cli.pid).children()
    os.killpg(cli.pid, signal.SIGKILL)
    cli.wait()
    psutil.wait_procs(children, timeout=30)
    before = {r["index"] for r in read_lines(path)}
    assert 0 < len(before) < len(PROMPTS)
    done = subprocess.run(args[:-1] + ["--resume", "--json"], capture_output=True, text=True, timeout=300, check=True)
    record = json.loads(done.stdout)
    assert [r["prompt"] for r in record["results"]] == PROMPTS
    assert record["summary"]["reused"] == len(before) and record["summary"]["prompts"] == len(PROMPTS)
    assert sorted(r["index"] for r in read_lines(path)) == list(range(len(PROMPTS)))  # each exactly once


# A resume that checks what it reuses: the header names what made the completions; nothing is changed before the
# whole file is read and checked, and a refused command leaves the user's file byte for byte as it was.

SIX = PROMPTS[:6]


def tiny_run(path, prompts=SIX, **settings):
    options = {"num_processes": 1, "max_new_tokens": 3, "batch_size": 2, "verbose": False, "progress": False,
               **settings}
    return run("batched", "tiny", prompts, output=str(path) if path else None, **options)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A complete output file of six prompts and the run that wrote it."""
    path = tmp_path_factory.mktemp("fresh") / "out.jsonl"
    return path, tiny_run(path)


def copy_of(fresh, tmp_path, lines=None, tail=b""):
    """The fresh file's header and its first `lines` completions (all when None), then `tail` bytes."""
    header, *rest = fresh[0].read_bytes().splitlines(keepends=True)
    path = tmp_path / "out.jsonl"
    path.write_bytes(header + b"".join(rest[:lines]) + tail)
    return path


def refused(path, match, error=ValueError, **settings):
    """Run a resume that must be refused, and check it changed no byte of the file."""
    before = path.read_bytes()
    with pytest.raises(error, match=match):
        tiny_run(path, resume=True, **settings)
    assert path.read_bytes() == before


def same_results(result, expected):
    """Equal completions; padded_tokens aside: it counts the padding of the batch a prompt was in, which differs."""
    def made(r):
        return [{**vars(c), "padded_tokens": None} for c in r.results]
    return made(result) == made(expected)


@pytest.mark.multiprocess
def test_the_header_records_what_made_the_completions(fresh):
    header = json.loads(fresh[0].read_text().splitlines()[0])
    assert header["mgpu_lab"] == "completions" and header["format"] == 1
    assert header["made_by"]["model"].startswith("tiny-")
    assert {k: header["made_by"][k] for k in ("max_new_tokens", "decoding", "dtype")} == {
        "max_new_tokens": 3, "decoding": "greedy", "dtype": "float32"}


@pytest.mark.multiprocess
def test_a_resume_with_other_settings_is_refused_untouched(fresh, tmp_path):
    path = copy_of(fresh, tmp_path, lines=3)
    refused(path, "was made with max_new_tokens 3 \\(this run: 4\\).*Fix: resume with the file's settings",
            max_new_tokens=4)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="was made with model 'tiny-.*', that is --model tiny \\(this run: 'small-.*'\\)"):
        run("batched", "small", SIX, num_processes=1, max_new_tokens=3, verbose=False, output=str(path), resume=True)
    assert path.read_bytes() == before


@pytest.mark.multiprocess
def test_a_dtype_other_than_the_files_is_refused_by_the_processes_untouched(fresh, tmp_path):
    header, *rest = fresh[0].read_text().splitlines(keepends=True)
    path = tmp_path / "out.jsonl"
    path.write_text(header.replace('"float32"', '"bfloat16"') + rest[0] + rest[1][:20])  # and a partial line
    refused(path, "Process 0 raised OutputFileError: .* was made with dtype 'bfloat16' \\(this run: 'float32'\\)",
            error=LaunchError)


@pytest.mark.parametrize("content", [b"my notes\nsecond line without newline", b"[1, 2]\n", b"\n"])
def test_a_file_that_is_not_the_kits_is_refused_untouched(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    refused(path, "is not an output file of this kit.*Fix: pass a new --output file")


def test_a_file_that_is_not_the_kits_is_named_so_without_resume_too(tmp_path):
    # Before: "already holds completions. Fix: pass --resume", and following that gave "not an output file of this kit".
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"mode": "batched", "tokens_per_s": 12.5}\n')
    with pytest.raises(ValueError, match="is not an output file of this kit.*Fix: pass a new --output file") as error:
        tiny_run(path)
    assert "--resume" not in str(error.value) and path.read_bytes() == b'{"mode": "batched", "tokens_per_s": 12.5}\n'


def test_the_bundled_tiny_named_by_its_folder_resumes_a_file_made_with_tiny(fresh, tmp_path):
    # Before: refused, naming model 'tiny-<digest>', a value --model does not accept.
    from mgpu_lab.paths import TINY

    path = copy_of(fresh, tmp_path, lines=3)
    result = run("batched", str(TINY), SIX, num_processes=1, max_new_tokens=3, batch_size=2, verbose=False,
                 progress=False, output=str(path), resume=True)
    assert result.summary.reused == 3 and same_results(result, fresh[1])


def test_completions_that_their_header_cannot_have_made_are_refused(fresh, tmp_path):
    # Before: max_new_tokens edited 3 -> 4 in the header, then a resume with 4 mixed 3- and 4-token completions,
    # all marked stop_reason "length", rc 0.
    path = copy_of(fresh, tmp_path, lines=6)
    path.write_text(path.read_text().replace('"max_new_tokens": 3', '"max_new_tokens": 4', 1))
    assert any(r["stop_reason"] == "length" for r in read_lines(path))
    refused(path, "holds 3 generated token\\(s\\) stopped by 'length', which the header's max_new_tokens 4 does not "
                  "make \\(was the header edited\\?\\)", max_new_tokens=4)


@pytest.mark.parametrize("line, match", [
    (b'{"index": 1, "prompt": "x"}\n', "line 3: not a completion \\(missing: generated_tokens, padded_tokens"),
    (b"not json\n", "line 3: not a JSON line"),
    (b'{"index": 1, "index": 1}\n', "line 3: not a JSON line \\(the key\\(s\\) 'index' appear more than once"),
])
@pytest.mark.multiprocess
def test_a_bad_line_is_named_with_file_and_line_number(fresh, tmp_path, line, match):
    path = copy_of(fresh, tmp_path, lines=1, tail=line + fresh[0].read_bytes().splitlines(keepends=True)[2])
    refused(path, f"{path}, {match}")


@pytest.mark.multiprocess
def test_a_line_with_an_extra_or_mistyped_field_is_named(fresh, tmp_path):
    record = json.loads(fresh[0].read_text().splitlines()[1])
    path = copy_of(fresh, tmp_path, lines=0, tail=json.dumps({**record, "seed": 1, "text": 5}).encode() + b"\n")
    refused(path, "line 2: not a completion \\(unexpected: seed; wrong type: text\\)")


@pytest.mark.multiprocess
def test_completions_of_other_prompts_or_repeated_are_refused(fresh, tmp_path):
    path = copy_of(fresh, tmp_path, lines=2)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="line 2 holds prompt 0 of another prompt list"):
        tiny_run(path, prompts=["Something else entirely."] + SIX[1:], resume=True)
    assert path.read_bytes() == before
    second = fresh[0].read_bytes().splitlines(keepends=True)[2]
    refused(copy_of(fresh, tmp_path, lines=2, tail=second), "line 4 repeats the completion of prompt 1")


@pytest.mark.multiprocess
def test_a_resumed_run_equals_a_fresh_one_and_drops_only_a_partial_last_line(fresh, tmp_path):
    third = fresh[0].read_bytes().splitlines(keepends=True)[3]
    path = copy_of(fresh, tmp_path, lines=2, tail=third[:25])  # killed while writing the third completion
    result = tiny_run(path, resume=True)
    assert same_results(result, fresh[1])
    assert (result.summary.reused, result.summary.partial_dropped) == (2, 1)
    assert sorted(r["index"] for r in read_lines(path)) == list(range(6))
    from mgpu_lab.course.report import format_summary
    assert "(2 reused from the output file; its unfinished last line dropped)" in format_summary(result.summary)


@pytest.mark.multiprocess
def test_a_whole_last_record_without_its_newline_is_kept(fresh, tmp_path):
    path = copy_of(fresh, tmp_path, lines=3)
    path.write_bytes(path.read_bytes().removesuffix(b"\n"))
    result = tiny_run(path, resume=True)
    assert same_results(result, fresh[1])
    assert (result.summary.reused, result.summary.partial_dropped) == (3, 0)
    assert sorted(r["index"] for r in read_lines(path)) == list(range(6))


def test_resume_without_an_output_file_is_an_error():
    with pytest.raises(ValueError, match="needs the output file to resume from. Fix: pass --output"):
        tiny_run(None, resume=True)


@pytest.mark.multiprocess
def test_a_second_run_on_the_same_file_is_refused_at_once(fresh, tmp_path):
    from mgpu_lab.engine.output import held

    path = copy_of(fresh, tmp_path, lines=2)
    before = path.read_bytes()
    with held(path):  # as a run that is still going holds it
        start = time.monotonic()
        with pytest.raises(ValueError, match=f"Output file {path} is being written by another run"):
            tiny_run(path, resume=True)
        assert time.monotonic() - start < 60  # refused, not queued behind the first run
    assert path.read_bytes() == before
    assert not (tmp_path / ".out.jsonl.lock").exists()  # the lock file goes with the run that held it
    assert tiny_run(path, resume=True).summary.reused == 2


@pytest.mark.multiprocess
def test_a_device_as_output_is_refused_and_a_full_disk_names_the_file():
    with pytest.raises(ValueError, match="output /dev/full is not a regular file"):
        tiny_run("/dev/full")
    from mgpu_lab.engine.output import append_completions

    with pytest.raises(OSError) as error:
        append_completions("/dev/full", tiny_run(None).results)
    assert error.value.filename == "/dev/full" and "No space left" in str(error.value)
