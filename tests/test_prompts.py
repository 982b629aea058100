"""Prompt sets: the article's default, and learners' files with their mistakes."""

import pytest

from mgpu_lab.prompts import FIRST_LINES, PromptFileError, default_prompts, load_prompts


def test_default_is_ten_lines_times_ten():
    prompts = default_prompts()
    assert len(prompts) == 100 and prompts[:10] == FIRST_LINES and prompts[90:] == FIRST_LINES


def test_txt_skips_and_counts_empty_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first\n\n  \nsecond\n", encoding="utf-8")
    assert load_prompts(path) == (["first", "second"], 2)


def test_jsonl_reads_the_prompt_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b", "id": 2}\n', encoding="utf-8")
    assert load_prompts(path) == (["a", "b"], 1)


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"", "holds no prompts"),
    ("blank.txt", b"\n \n", "holds no prompts"),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("bad.jsonl", b'{"prompt": "ok"}\nnot json\n', "line 2: not valid JSON"),
    ("nofield.jsonl", b'{"text": "x"}\n', 'string "prompt" field'),
])
def test_bad_files_get_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(path)


def test_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")
