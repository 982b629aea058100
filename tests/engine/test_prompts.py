"""Prompt sets: the article's default, and learners' files with their mistakes."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_lab.engine import prompts
from mgpu_lab.engine.prompts import FIRST_LINES, PromptFileError, default_prompts, load_prompts


def test_default_is_ten_lines_times_ten():
    prompts = default_prompts()
    assert len(prompts) == 100 and prompts[:10] == FIRST_LINES and prompts[90:] == FIRST_LINES


@pytest.mark.parametrize("name, text, expected", [
    ("p.txt", "first\n\n  \nsecond\n", (["first", "second"], 2)),  # empty lines skipped and counted
    ("p.jsonl", '{"prompt": "a"}\n\n{"prompt": "b", "id": 2}\n', (["a", "b"], 1)),  # the prompt field
    ("p.csv", 'id,prompt\n1,"Hello, there"\n2,\n3,"two\nlines"\n', (["Hello, there", "two\nlines"], 1)),  # column
])
def test_each_format_reads_its_prompts_and_counts_empty_ones(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert load_prompts(path) == expected


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"", "holds no prompts"),
    ("blank.txt", b"\n \n", "holds no prompts"),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("bad.jsonl", b'{"prompt": "ok"}\nnot json\n', "line 2: not valid JSON"),
    ("nofield.jsonl", b'{"text": "x"}\n', 'string "prompt" field'),
    ("twice.jsonl", b'{"prompt": "a"}\n{"prompt": "b", "prompt": "c"}\n', "line 2: the key\\(s\\) 'prompt' appear more"),
    ("twice.csv", b"prompt,id,prompt\nHello,1,Bye\n", '2 "prompt" columns'),
    ("image.txt", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "not a text file"),
    ("utf16.txt", "Hello\n".encode("utf-16"), "is UTF-16 text. Fix: save it as UTF-8"),
    ("prompts.json", b'["Hello"]', "unknown type \\(.json\\)"),
    ("prompts.parquet", b"PAR1", "unknown type"),
])
def test_bad_files_get_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(path)


def test_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")


@pytest.mark.parametrize("name, content", [
    ("bom.txt", "\ufeffHello there\nSecond\n".encode()),
    ("bom.jsonl", '\ufeff{"prompt": "Hello there"}\n{"prompt": "Second"}\n'.encode()),
    ("crlf.txt", b"Hello there\r\nSecond\r\n"),
    ("cr.txt", b"Hello there\rSecond"),
    ("prompts", b"Hello there\nSecond\n"),
    ("p.csv", b"\xef\xbb\xbfprompt\r\nHello there\r\nSecond\r\n"),
])
def test_bom_and_line_endings_users_write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert load_prompts(path) == (["Hello there", "Second"], 0)


def test_only_newlines_split_prompts(tmp_path):
    odd = ["one\u0085two", "three\u2028four", "five\x0csix", "seven\x1ceight"]
    txt, jsonl = tmp_path / "odd.txt", tmp_path / "odd.jsonl"
    txt.write_text("\n".join(odd) + "\n", encoding="utf-8")
    jsonl.write_text("\n".join(json.dumps({"prompt": p}, ensure_ascii=False) for p in odd), encoding="utf-8")
    assert "\u2028" in jsonl.read_text(encoding="utf-8")  # raw, not escaped
    assert load_prompts(txt) == (odd, 0) and load_prompts(jsonl) == (odd, 0)


def test_csv_without_a_prompt_column_is_named(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,text\n1,Hello\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match='no "prompt" column \\(its header: id, text\\)'):
        load_prompts(path)


def test_a_folder_is_named_a_folder(tmp_path):
    with pytest.raises(PromptFileError, match="is a folder, not a file"):
        load_prompts(tmp_path)


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("Hello\n")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the read fail the way it does for everyone else
        def refuse(*args):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(prompts, "open", refuse, raising=False)
    with pytest.raises(PromptFileError, match="cannot be read \\(Permission denied\\)"):
        load_prompts(path)


def test_dash_reads_standard_input(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfHello\r\n\r\nWorld\n")))
    assert load_prompts("-") == (["Hello", "World"], 1)


def test_a_pipe_is_read(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"printf 'Hello\\nWorld\\n' > {fifo}"])
    assert load_prompts(fifo) == (["Hello", "World"], 0)
    writer.wait(timeout=30)



def test_a_symlink_loop_is_named_as_such(tmp_path):
    (tmp_path / "a.txt").symlink_to(tmp_path / "b.txt")
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    with pytest.raises(PromptFileError, match="loop of symbolic links"):
        load_prompts(tmp_path / "a.txt")


def test_a_dangling_link_names_its_target(tmp_path):
    (tmp_path / "a.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(PromptFileError, match="does not exist \\(a link to .*gone.txt, which is missing\\)"):
        load_prompts(tmp_path / "a.txt")


def test_closed_standard_input_is_named(monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # what Python gives a program started with `<&-`
    with pytest.raises(PromptFileError, match="standard input, but it is closed"):
        load_prompts("-")


def test_endless_input_is_refused_past_the_bound(monkeypatch):
    monkeypatch.setattr(prompts, "MAX_BYTES", 1000)
    endless = subprocess.Popen(["yes", "Hello"], stdout=subprocess.PIPE)  # never ends by itself
    try:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(endless.stdout))
        with pytest.raises(PromptFileError, match="more than 0 MiB \\(endless input\\?\\)"):
            load_prompts("-")
    finally:
        endless.kill()
        endless.wait()


def test_closed_stdin_from_the_command_line_is_one_line(cli_in_process, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # what Python gives a program started with `<&-`
    done = cli_in_process("naive", "--prompts", "-")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --prompts - reads standard input, but it is closed. Fix: pipe the prompts in "
        "(`... --prompts - < my.txt`), or pass --prompts my.txt."]
