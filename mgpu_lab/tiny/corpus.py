"""Training text for the bundled `tiny` model: Jane Austen's six novels, cut into short documents.

The text is gathered at run time from Debian's `r-cran-janeaustenr` package (the janeaustenr R
package, MIT; the novels themselves are public domain): `apt-get download` fetches the .deb,
`dpkg-deb -x` unpacks it, and the `rdata` package reads R's lazy-load data base. Nothing is
committed and nothing comes from a model hub. The extracted paragraphs are cached as plain text.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

from ..paths import cache_dir

CORPUS_NAME = "Jane Austen's six novels (janeaustenr via Debian r-cran-janeaustenr)"
CORPUS_LICENCE = "novels: public domain; janeaustenr packaging: MIT"
DEB_PACKAGE = "r-cran-janeaustenr"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
_HEADING = re.compile(r"^(chapter|volume|vol\.|book|by|the end|finis)\b", re.IGNORECASE)
_ABBREV = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Col|Capt|Gen|Sir|Rev|Esq|Messrs)\.$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'_)]*\s+(?=[\"'_(]*[A-Z])")


class CorpusError(RuntimeError):
    """A tool or package the corpus needs is missing or failed; the message says how to get it."""


def _run(cmd: list[str], cwd: Path) -> None:
    """Run a command, turning a failure into an error that names the fix."""
    if shutil.which(cmd[0]) is None:
        raise CorpusError(f"`{cmd[0]}` not found: the corpus needs Debian's apt tools (apt-get, dpkg-deb).")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CorpusError(
            f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()}\n"
            f"Fix: run `apt-get update` (as root) and retry; the package is `{DEB_PACKAGE}`."
        )


def _read_rdb(data_dir: Path) -> dict[str, list[str]]:
    """Read every text vector in R's lazy-load data base (Rdata.rdx index + zlib chunks in Rdata.rdb)."""
    try:
        import rdata
        from rdata.conversion import convert
        from rdata.parser import parse_data
    except ImportError as err:
        raise CorpusError("The corpus needs the `rdata` package: `python -m pip install rdata`.") from err
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns "Unknown file type: assumed RDS" for each chunk
        index = rdata.read_rds(data_dir / "Rdata.rdx")
        raw = (data_dir / "Rdata.rdb").read_bytes()
        books = {}
        for name, (offset, length) in index["variables"].items():
            chunk = zlib.decompress(raw[offset + 4 : offset + length])  # 4-byte length header, then zlib
            books[str(name)] = [str(line) for line in convert(parse_data(chunk))]
    return books


def _download_books() -> dict[str, list[str]]:
    """Fetch and unpack the Debian package into a temp dir; return each novel's lines."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        _run(["apt-get", "download", DEB_PACKAGE], tmp_path)
        deb = next(tmp_path.glob(f"{DEB_PACKAGE}_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), "root"], tmp_path)
        return _read_rdb(tmp_path / "root" / DATA_DIR)


def _paragraphs(lines: list[str]) -> list[str]:
    """Join wrapped lines into paragraphs, dropping titles and chapter headings."""
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            text = " ".join(current)
            if not _HEADING.match(text) and text != text.upper():  # drop headings and all-caps titles
                paragraphs.append(text)
            current = []
    return paragraphs


def load_paragraphs() -> list[str]:
    """Austen's paragraphs, novel by novel, from the cached lines or freshly extracted ones."""
    path = cache_dir() / "janeaustenr_lines.json"
    if not path.exists():
        books = _download_books()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(books, ensure_ascii=False))
    books = json.loads(path.read_text())
    return [p for name in sorted(books) for p in _paragraphs(books[name])]


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences, keeping titles such as "Mr." inside theirs."""
    pieces = [p for p in _SENTENCE_END.split(paragraph.replace("_", "")) if p.strip()]
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _ABBREV.search(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece.strip())
    return sentences


def make_documents(paragraphs: list[str], seed: int = 0, min_words: tuple[int, int] = (30, 70)) -> list[str]:
    """Cut paragraphs into documents of two or more sentences and at least N words (N drawn per document).

    A whole paragraph rarely ends where a short completion should, and short documents teach the model
    to stop straight after a prompt that is already a sentence or two (the default prompts are famous
    first lines); a few sentences and a word minimum above any prompt's length teach it to add a few
    sentences, then stop. Sentences left over at a paragraph's end join the next paragraph's.
    """
    rng = random.Random(seed)
    documents, group, target = [], [], rng.randint(*min_words)
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            group.append(sentence)
            if len(group) >= 2 and sum(len(s.split()) for s in group) >= target:
                documents.append(" ".join(group))
                group, target = [], rng.randint(*min_words)
    return documents
