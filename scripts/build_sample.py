#!/usr/bin/env python3
"""Build the bundled real-text sample: a C4-shaped pool and held-out Austen target data.

The sample mirrors the paper's C4 -> Books task at toy scale, from text that Debian ships:

* pool: Debian long package descriptions (web-like), Jargon File and FOLDOC entries
  (reference prose), and a small minority of book passages (three Austen novels + the KJV);
* target: two other Austen novels (train, for conditioning) and a third one (eval), plus
  next-sentence multiple-choice items from the third novel's chapters that eval leaves out;
* a byte-level BPE tokenizer (vocab 4096) trained on pool + target train.

Everything is deterministic: sorted inputs, fixed seeds, gzip with mtime=0, zstd at a fixed
level. Rebuild with ``python scripts/build_sample.py --out data/sample``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import unicodedata
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SEED = 20240615
VOCAB_SIZE = 4096
EOS = "<|endoftext|>"
ZSTD_LEVEL = 19

# Debian bookworm packages (name -> pinned version) that ship the text.
PACKAGES = {
    "r-cran-janeaustenr": "1.0.0-1",  # Austen's six novels (R lazy-load database)
    "bible-kjv-text": "4.38",  # KJV, compressed with the BRS format
    "bible-kjv": "4.38",  # the `bible` reader that decompresses it
    "jargon-text": "4.4.7-4.1",  # Jargon File 4.4.7
    "dict-foldoc": "20230119-1",  # Free On-line Dictionary of Computing
}
# sha256 of the bookworm main Translation-en this sample was built from (warned on mismatch).
TRANSLATION_SHA256 = "62f59c3cdca9786e4f7adf9002f9f5729a684adcb4667e58e448dec9b5a46c7f"

# Which Austen novel goes where: the target novels never appear in the pool.
POOL_NOVELS = ("sensesensibility", "mansfieldpark", "northangerabbey")
TARGET_TRAIN_NOVELS = ("prideprejudice", "emma")
TARGET_EVAL_NOVELS = ("persuasion",)
TITLES = {
    "sensesensibility": "Sense and Sensibility",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "prideprejudice": "Pride and Prejudice",
    "emma": "Emma",
    "persuasion": "Persuasion",
}
GUTENBERG_IDS = {
    "sensesensibility": 161,
    "mansfieldpark": 141,
    "northangerabbey": 121,
    "prideprejudice": 1342,
    "emma": 158,
    "persuasion": 105,
    "kjv": 10,
}

# Pool budgets in characters of text per source (the 4k tokenizer gives ~0.29 tokens/char).
POOL_BUDGET_CHARS = {
    "debian-description": 4_550_000,
    "foldoc": 1_600_000,
    "jargon": 1_000_000,
    "book:austen": 225_000,
    "book:kjv": 125_000,
}
EVAL_BUDGET_CHARS = 330_000  # first chapters of the eval novel, about 95k tokens
MC_ITEMS = 200  # next-sentence multiple-choice items from the eval novel's remaining chapters
MC_CONTEXT_SENTENCES = 3  # sentences of context before the true next sentence
MC_CHOICES = 4  # the true next sentence and three from elsewhere in those chapters
MC_SENTENCE_WORDS = (4, 40)  # sentences used as choices have this many words
MIN_DOC_CHARS = 300  # documents shorter than this (after paragraph dedup) are dropped
MAX_DOC_CHARS = 20_000  # and longer ones (a few huge Debian lists of font or module names)
MIN_DEDUP_PARA_CHARS = 40  # paragraphs at least this long are deduplicated across documents
POOL_PASSAGE_WORDS = (100, 400)
TARGET_PASSAGE_WORDS = (300, 1500)
C4_TIME_RANGE = (datetime(2019, 4, 18, tzinfo=timezone.utc), timedelta(days=8))


@dataclass
class Doc:
    """One document: text plus provenance."""

    text: str
    source: str
    url: str
    timestamp: str = ""

    def record(self) -> dict[str, str]:
        """The C4-shaped JSON record."""
        return {
            "text": self.text,
            "timestamp": self.timestamp,
            "url": self.url,
            "source": self.source,
        }


# --------------------------------------------------------------------------- fetching


def run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a command, returning stdout; raise with its stderr on failure."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, encoding="utf-8", check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def fetch_packages(cache: Path) -> dict[str, Path]:
    """Download and unpack the pinned .debs into the cache; return name -> unpacked root."""
    debs, roots = cache / "debs", {}
    debs.mkdir(parents=True, exist_ok=True)
    for name, version in sorted(PACKAGES.items()):
        pattern = f"{name}_{version.replace(':', '%3a')}_*.deb"
        if not list(debs.glob(pattern)):
            print(f"downloading {name}={version}", file=sys.stderr)
            run(["apt-get", "download", "-o", "APT::Sandbox::User=root", f"{name}={version}"], debs)
        (deb,) = debs.glob(pattern)
        root = cache / "unpacked" / name
        if not root.exists():
            tmp = root.parent / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(deb), str(tmp)])
            tmp.rename(root)
        roots[name] = root
    return roots


def find_translation_list() -> Path | None:
    """The bookworm main Translation-en list in apt's lists (not -updates/-security)."""
    lists = Path("/var/lib/apt/lists")
    found = [
        p
        for p in sorted(lists.glob("*_dists_*_main_i18n_Translation-en*"))
        if not re.search(r"_dists_[^_]*-[^_]*_", p.name)
    ]
    return found[0] if found else None


def fetch_translation(cache: Path) -> Path:
    """Cache the decompressed Translation-en once; later runs reuse the cached copy."""
    target = cache / "Translation-en"
    if target.exists():
        return target
    src = find_translation_list()
    if src is None:
        print("no Translation-en list: running apt-get update", file=sys.stderr)
        run(["apt-get", "update", "-o", "Acquire::Languages=en"])
        src = find_translation_list()
    if src is None:
        raise RuntimeError("no *_main_i18n_Translation-en list under /var/lib/apt/lists")
    text = run(["/usr/lib/apt/apt-helper", "cat-file", str(src)])
    cache.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".tmp").write_text(text, encoding="utf-8")
    target.with_suffix(".tmp").rename(target)
    return target


# --------------------------------------------------------------------------- text helpers


def _drop_chars_re() -> re.Pattern[str]:
    """Control (except newline), format, private-use and surrogate characters, and U+FFFD."""
    bad = [
        cp
        for cp in range(0x110000)
        if unicodedata.category(chr(cp)) in {"Cc", "Cf", "Co", "Cs"} and cp != 10
    ]
    ranges, start = [], bad[0]
    for prev, cp in zip(bad, bad[1:] + [-1]):
        if cp != prev + 1:
            ranges.append(f"\\U{start:08x}-\\U{prev:08x}")
            start = cp
    return re.compile("[" + "".join(ranges) + "\\ufffd]")


_DROP_CHARS = _drop_chars_re()


def clean_text(text: str) -> str:
    """NFC, no control/format characters except newline, no blank lines, stripped lines."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\t", " "))
    lines = (line.rstrip() for line in _DROP_CHARS.sub("", text).split("\n"))
    return "\n".join(line for line in lines if line.strip()).strip()


def unwrap(block: list[str], indent: int) -> str:
    """Join a wrapped block; keep line breaks if any line is indented deeper (preformatted)."""
    if all(len(line) - len(line.lstrip()) <= indent for line in block):
        return " ".join(" ".join(block).split())
    return "\n".join(line[indent:].rstrip() for line in block)


def blocks(lines: Iterable[str]) -> Iterator[list[str]]:
    """Split lines into blank-line separated blocks."""
    cur: list[str] = []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            yield cur
            cur = []
    if cur:
        yield cur


def para_key(para: str) -> str:
    """Normalised key used to deduplicate paragraphs and documents."""
    return re.sub(r"\W+", " ", para.lower()).strip()


def word_count(text: str) -> int:
    """Whitespace word count."""
    return len(text.split())


# --------------------------------------------------------------------------- R lazy-load db


class RVector(list):
    """An R vector (as a Python list) with its attributes."""

    attrs: dict[str, object]


class RUnserializer:
    """Minimal reader for R's XDR serialisation (version 2/3): vectors, strings, pairlists."""

    _NIL_LIKE = {254, 253, 242, 241, 251, 252, 247}  # NILVALUE, environments, MISSINGARG...
    _VECTORS = {10: "i", 13: "i", 14: "d", 16: None, 19: None, 20: None}

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.refs = data, 0, []
        if self._take(2) != b"X\n":
            raise ValueError("not an XDR R serialisation")
        version = self._int()
        self._int(), self._int()
        if version == 3:
            self._take(self._int())  # native encoding name

    def _take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def read(self) -> object:
        """Read one R object."""
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in self._NIL_LIKE:
            return None
        if kind == 255:  # REFSXP
            return self.refs[(flags >> 8 or self._int()) - 1]
        if kind == 1:  # SYMSXP
            self.refs.append(self.read())
            return self.refs[-1]
        if kind in (2, 6, 239, 240):  # pairlists: (tag, value) items
            if has_attr:
                self.read()
            tag = self.read() if has_tag else None
            head, tail = self.read(), self.read()
            return [(tag, head), *(tail or [])]
        if kind == 9:  # CHARSXP
            n = self._int()
            return (
                None
                if n == -1
                else self._take(n).decode("latin-1" if flags & (1 << 14) else "utf-8")
            )
        if kind in self._VECTORS:
            return self._vector(kind, has_attr)
        raise ValueError(f"unsupported R type {kind}")

    def _vector(self, kind: int, has_attr: int) -> RVector:
        n = self._int()
        if n == -1:
            n = (self._int() << 32) + self._int()
        code = self._VECTORS[kind]
        if code is None:
            out = RVector(self.read() for _ in range(n))
        else:
            out = RVector(struct.unpack(f">{n}{code}", self._take(n * struct.calcsize(code))))
        out.attrs = {str(k): v for k, v in self.read()} if has_attr else {}
        return out


def read_r_lazyload(prefix: Path) -> dict[str, object]:
    """Read every variable of an R lazy-load database (``prefix.rdx`` + ``prefix.rdb``)."""
    index = RUnserializer(gzip.decompress(prefix.with_suffix(".rdx").read_bytes())).read()
    variables = index[index.attrs["names"].index("variables")]
    rdb = prefix.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, length) in zip(variables.attrs["names"], variables, strict=True):
        blob = rdb[offset : offset + length]
        raw = zlib.decompress(blob[4:])
        if len(raw) != struct.unpack(">I", blob[:4])[0]:
            raise ValueError(f"bad length for {name}")
        out[name] = RUnserializer(raw).read()
    return out


# --------------------------------------------------------------------------- books

Chapter = list[str]  # paragraphs
_CHAPTER_RE = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\.?\s*$", re.IGNORECASE)
_END_RE = re.compile(r"^\s*(finis|the end|a note on the text)\s*$", re.IGNORECASE)


def austen_chapters(lines: list[str]) -> list[Chapter]:
    """Split a janeaustenr character vector into chapters of unwrapped paragraphs."""
    chapters: list[list[str]] = []
    cur: list[str] | None = None
    for line in [*lines, ""]:
        if _END_RE.match(line):
            break
        if _CHAPTER_RE.match(line):
            chapters.append(cur := [])
        elif cur is not None and not re.match(r"^\s*volume\s+[ivx]+\s*$", line, re.IGNORECASE):
            cur.append(line)
    out = []
    for chapter in chapters:
        paras = [
            re.sub(r"_([^_]+)_", r"\1", " ".join(" ".join(b).split())) for b in blocks(chapter)
        ]
        out.append([p for p in paras if re.search(r"[A-Za-z]", p)])
    return out


def read_austen(root: Path) -> dict[str, list[Chapter]]:
    """Austen's six novels as chapters, keyed by janeaustenr's variable names."""
    prefix = root / "usr/lib/R/site-library/janeaustenr/data/Rdata"
    return {
        name: austen_chapters(list(vec)) for name, vec in sorted(read_r_lazyload(prefix).items())
    }


def read_kjv(roots: dict[str, Path]) -> list[Chapter]:
    """The KJV as chapters of verses, decompressed with Debian's `bible` program."""
    binary = roots["bible-kjv"] / "usr/bin/bible"
    data_dir = roots["bible-kjv-text"] / "usr/lib"
    text = run([str(binary), "-f", "-p", str(data_dir), "Gen1:1-Rev22:21"])
    chapters: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+?)(\d+):(\d+) (.*)$", line)
        if not m:
            raise ValueError(f"unexpected bible output line: {line!r}")
        chapters.setdefault((m[1], m[2]), []).append(m[4].strip())
    if sum(map(len, chapters.values())) != 31102:
        raise ValueError("expected the 31102 verses of the KJV")
    return list(chapters.values())


def cut_passages(chapters: list[Chapter], words: tuple[int, int], rng: random.Random) -> list[str]:
    """Cut chapters into passages of whole paragraphs, each of about words[0]..words[1] words."""
    out = []
    for chapter in chapters:
        cur: list[str] = []
        want, have = rng.randint(*words), 0
        for para in chapter:
            cur.append(para)
            have += word_count(para)
            if have >= want:
                out.append("\n".join(cur))
                cur, want, have = [], rng.randint(*words), 0
        if cur and (have >= words[0] // 2 or not out):
            out.append("\n".join(cur))
        elif cur:
            out[-1] += "\n" + "\n".join(cur)
    return out


def book_docs(name: str, chapters: list[Chapter], words: tuple[int, int], seed: int) -> list[Doc]:
    """Passages of one book as documents."""
    rng = random.Random(f"{seed}:passages:{name}")
    url = f"https://www.gutenberg.org/ebooks/{GUTENBERG_IDS[name]}"
    passages = cut_passages(chapters, words, rng)
    return [
        Doc(clean_text(p), f"book:{name}", f"{url}#passage-{i}") for i, p in enumerate(passages)
    ]


# --------------------------------------------------------------------------- reference prose

_BULLET_RE = re.compile(r"^(?:[*+\-o•]|\d+[.)]|[a-zA-Z][.)])\s+\S")


def debian_paragraph(lines: list[str]) -> str:
    """One description paragraph: wrapped text joined, list items and verbatim lines kept."""
    out: list[str] = []
    bullet_indent = -1
    for raw in lines:
        text, indent = raw.strip(), len(raw) - len(raw.lstrip())
        if _BULLET_RE.match(text):
            out.append(" ".join(text.split()))
            bullet_indent = indent
        elif out and (indent == 1 or (bullet_indent >= 0 and indent > bullet_indent)):
            out[-1] += " " + " ".join(text.split())
        else:
            out.append(text)  # verbatim line: keep its inner spacing
            bullet_indent = -1
    return "\n".join(out)


def read_debian(path: Path) -> list[Doc]:
    """One document per Translation-en stanza: 'package: short description' + paragraphs."""
    docs = []
    for stanza in path.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        body: list[str] = []
        for line in stanza.split("\n"):
            if line.startswith(" ") and "Description-en" in fields:
                body.append(line)
            elif ": " in line and not body:
                key, value = line.split(": ", 1)
                fields[key] = value.strip()
        if "Package" not in fields or not body:
            continue
        paras = [[]]
        for line in body:
            if line.strip() == ".":
                paras.append([])
            else:
                paras[-1].append(line)
        text = "\n".join(
            [
                f"{fields['Package']}: {fields['Description-en']}",
                *(debian_paragraph(p) for p in paras if p),
            ]
        )
        url = f"https://packages.debian.org/bookworm/{fields['Package']}"
        docs.append(Doc(text, "debian-description", url))
    return docs


def read_jargon(root: Path) -> list[Doc]:
    """Jargon File lexicon entries, one document each (front matter and appendices dropped)."""
    text = gzip.decompress((root / "usr/share/doc/jargon-text/jargon.txt.gz").read_bytes()).decode()
    entries: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        if re.match(r"^\s+Part III\. Appendices\s*$", line):
            break
        if m := re.match(r"^   :(.+?):(?: (.*))?$", line):
            entries.append((f"{m[1]}: {m[2]}" if m[2] else m[1], []))
        elif re.match(r"^  [0-9A-Z]$", line):
            entries.append(("", []))  # letter heading: ends the entry, skips the index
        elif entries:
            entries[-1][1].append(line)
    docs = []
    for title, lines in entries:
        paras = [unwrap(b, 3) for b in blocks(lines)]
        paras = [p for p in paras if not re.search(r"Crunchly|cartoon in the|[│┌└├]", p)]
        if title and paras:
            body = re.sub(r"\{([^{}\n]+)\}", r"\1", "\n".join(paras))  # cross-references
            head = title.split(":")[0]
            slug = urllib.parse.quote(head.replace(" ", "-"))
            letter = head[0].upper() if head[0].isalpha() else "0"
            url = f"http://www.catb.org/jargon/html/{letter}/{slug}.html"
            docs.append(Doc(f"{title}\n{body}", "jargon", url))
    return docs


def _dictd_int(code: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    value = 0
    for char in code:
        value = value * 64 + alphabet.index(char)
    return value


def foldoc_entry(raw: str) -> tuple[str, str] | None:
    """(headword, cleaned body) of one FOLDOC entry, or None for database metadata."""
    # Cross-references may span lines (even blank ones): put each on one line first.
    raw = re.sub(r"\{([^{};=]{1,300})\}", lambda m: "{" + " ".join(m[1].split()) + "}", raw)
    lines = raw.split("\n")
    head = lines[0].strip()
    paras = []
    for block in blocks(lines):
        if not block[0].startswith(" "):
            continue  # headword lines
        para = unwrap(block, 3)
        if re.fullmatch(r"\(\d{4}-\d\d-\d\d\)", para.strip()):
            continue  # last-modified date
        para = re.sub(r"<((?:https?|ftp|gopher|telnet|news|mailto):[^<>\s]+)>", r"\1", para)
        para = re.sub(r"^(\d+\.\s+)?<[a-z][a-z0-9 ,&/.'-]*>\s*", r"\1", para)  # category tag
        para = re.sub(r"\{([^{}\n]+)\}", r"\1", para)
        paras.append(para if "\n" in para else para.replace("{", "").replace("}", ""))
    if head.startswith("00-database") or head == "Dictionary.debian" or not paras:
        return None
    if "[Jargon File]" in paras:
        return None  # near-copies of Jargon File entries, which the pool has from the source
    return head, "\n".join(paras)


def read_foldoc(root: Path) -> list[Doc]:
    """FOLDOC entries, one document each, located through the dictd index."""
    data = gzip.decompress((root / "usr/share/dictd/foldoc.dict.dz").read_bytes())
    index = (root / "usr/share/dictd/foldoc.index").read_text(encoding="utf-8")
    spans = sorted(
        {
            (_dictd_int(o), _dictd_int(n))
            for _, o, n in (
                line.split("\t") for line in index.splitlines() if line.count("\t") == 2
            )
        }
    )
    docs = []
    for offset, length in spans:
        entry = foldoc_entry(data[offset : offset + length].decode("utf-8"))
        if entry:
            url = f"https://foldoc.org/{urllib.parse.quote(entry[0])}"
            docs.append(Doc(f"{entry[0]}\n{entry[1]}", "foldoc", url))
    return docs


# --------------------------------------------------------------------------- assembly


def dedup_paragraphs(docs: list[Doc], seen: set[str]) -> list[Doc]:
    """Drop paragraphs seen earlier (C4-style), then short and duplicate documents."""
    out = []
    for doc in docs:
        title, *paras = doc.text.split("\n")
        kept = []
        for para in paras:
            key = para_key(para)
            if len(key) >= MIN_DEDUP_PARA_CHARS and key in seen:
                continue
            seen.add(key)
            kept.append(para)
        text = clean_text("\n".join([title, *kept]))
        body_chars = len(text) - len(title)
        if MIN_DOC_CHARS <= body_chars <= MAX_DOC_CHARS and para_key(text) not in seen:
            seen.add(para_key(text))
            out.append(Doc(text, doc.source, doc.url))
    return out


def sample_budget(docs: list[Doc], budget: int, rng: random.Random) -> list[Doc]:
    """A seeded random subset of documents totalling about `budget` characters."""
    order = list(range(len(docs)))
    rng.shuffle(order)
    out, total = [], 0
    for i in order:
        if total >= budget:
            break
        out.append(docs[i])
        total += len(docs[i].text)
    return out


def add_c4_metadata(docs: list[Doc], rng: random.Random) -> None:
    """Give each document a C4-like crawl timestamp (April 2019)."""
    start, span = C4_TIME_RANGE
    for doc in docs:
        moment = start + timedelta(seconds=rng.randrange(int(span.total_seconds())))
        doc.timestamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_pool(web: dict[str, list[Doc]], books: dict[str, list[Doc]], seed: int) -> list[Doc]:
    """Budgeted, deduplicated, shuffled pool documents with C4 metadata."""
    pool: list[Doc] = []
    for group, candidates in sorted({**web, **books}.items()):
        rng = random.Random(f"{seed}:sample:{group}")
        pool += sample_budget(candidates, POOL_BUDGET_CHARS[group], rng)
    rng = random.Random(f"{seed}:pool")
    rng.shuffle(pool)
    add_c4_metadata(pool, rng)
    return pool


def read_web(roots: dict[str, Path], translation: Path) -> dict[str, list[Doc]]:
    """Reference prose and package descriptions, deduplicated across sources in this order."""
    seen: set[str] = set()
    out = {}
    for name, docs in (
        ("jargon", read_jargon(roots["jargon-text"])),
        ("foldoc", read_foldoc(roots["dict-foldoc"])),
        ("debian-description", read_debian(translation)),
    ):
        docs = [Doc(clean_text(d.text), d.source, d.url) for d in docs]
        out[name] = dedup_paragraphs(sorted(docs, key=lambda d: (d.url, d.text)), seen)
    return out


def read_books(
    roots: dict[str, Path], seed: int
) -> tuple[dict[str, list[Doc]], list[Doc], list[Doc], list[Doc]]:
    """(pool book candidates by group, target train documents, target eval documents, the eval
    novel's remaining passages, which no split holds)."""
    novels = read_austen(roots["r-cran-janeaustenr"])
    if set(novels) != {*POOL_NOVELS, *TARGET_TRAIN_NOVELS, *TARGET_EVAL_NOVELS}:
        raise ValueError(f"unexpected janeaustenr contents: {sorted(novels)}")
    pool = {
        "book:austen": [
            d for n in POOL_NOVELS for d in book_docs(n, novels[n], POOL_PASSAGE_WORDS, seed)
        ],
        "book:kjv": book_docs("kjv", read_kjv(roots), POOL_PASSAGE_WORDS, seed),
    }
    train = [
        d for n in TARGET_TRAIN_NOVELS for d in book_docs(n, novels[n], TARGET_PASSAGE_WORDS, seed)
    ]
    random.Random(f"{seed}:train").shuffle(train)
    evals, rest, total = [], [], 0
    for doc in (
        d for n in TARGET_EVAL_NOVELS for d in book_docs(n, novels[n], TARGET_PASSAGE_WORDS, seed)
    ):
        if total >= EVAL_BUDGET_CHARS:
            rest.append(doc)
            continue
        evals.append(doc)
        total += len(doc.text)
    return pool, train, evals, rest


# --------------------------------------------------------------------------- multiple choice

_SENTENCE_END_RE = re.compile(
    r"(?<!\bMr)(?<!\bMrs)(?<!\bDr)(?<!\bSt)[.!?][\"'\u201d\u2019]*\s+(?=[\"'\u201c\u2018]?[A-Z])"
)


def sentences(text: str) -> list[str]:
    """Sentences of a passage: split after . ! ? (and closing quotes) before a capital letter,
    except after the abbreviations Mr. Mrs. Dr. St. (good enough for Austen's prose)."""
    out = []
    for para in text.split("\n"):
        cuts = [0] + [m.end() for m in _SENTENCE_END_RE.finditer(para)] + [len(para)]
        out += [para[a:b].strip() for a, b in zip(cuts, cuts[1:]) if para[a:b].strip()]
    return out


def mc_items(docs: list[Doc], seed: int) -> list[dict]:
    """Next-sentence items (lm-eval style): context = consecutive sentences of one passage, the
    answer their true next sentence, distractors sentences from elsewhere in `docs`."""
    rng = random.Random(f"{seed}:multiple-choice")
    runs = [sentences(d.text) for d in docs]
    fits = lambda x: MC_SENTENCE_WORDS[0] <= word_count(x) <= MC_SENTENCE_WORDS[1]  # noqa: E731
    pool = [(r, i) for r, run in enumerate(runs) for i, x in enumerate(run) if fits(x)]
    windows = [
        (r, i)
        for r, run in enumerate(runs)
        for i in range(MC_CONTEXT_SENTENCES, len(run), MC_CONTEXT_SENTENCES + 1)
        if fits(run[i])
    ]
    items = []
    for r, i in rng.sample(windows, min(MC_ITEMS, len(windows))):
        near = {(r, j) for j in range(i - MC_CONTEXT_SENTENCES - 1, i + 2)}
        distractors: list[str] = []
        while len(distractors) < MC_CHOICES - 1:
            dr, di = rng.choice(pool)
            text = runs[dr][di]
            if (dr, di) not in near and text != runs[r][i] and text not in distractors:
                distractors.append(text)
        label = rng.randrange(MC_CHOICES)
        choices = distractors[:label] + [runs[r][i]] + distractors[label:]
        context = " ".join(runs[r][i - MC_CONTEXT_SENTENCES : i])
        items.append(
            {
                "context": context,
                "choices": [" " + c for c in choices],
                "label": label,
                "source": docs[r].source,
            }
        )
    return items


# --------------------------------------------------------------------------- writing


def jsonl_bytes(docs: list[Doc], keys: tuple[str, ...]) -> bytes:
    """Documents as JSON lines restricted to `keys`."""
    lines = (json.dumps({k: d.record()[k] for k in keys}, ensure_ascii=False) for d in docs)
    return "".join(line + "\n" for line in lines).encode("utf-8")


def compress(raw: bytes, path: Path) -> bytes:
    """Deterministic gzip (mtime 0, no name) or zstd (fixed level, checksum) by suffix."""
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
            f.write(raw)
        return buf.getvalue()
    if path.suffix == ".zst":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(raw)
    raise ValueError(f"unknown compression for {path}")


def write_file(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def pool_paths(out: Path, shards: int = 4) -> list[Path]:
    """C4-like shard names: the first half gzip, the second half zstd."""
    return [
        out / "pool" / f"c4-train.{i:05d}-of-{shards:05d}.json.{'gz' if i < shards // 2 else 'zst'}"
        for i in range(shards)
    ]


def split_even(docs: list[Doc], parts: int) -> list[list[Doc]]:
    """Contiguous, nearly equal parts."""
    bounds = [round(i * len(docs) / parts) for i in range(parts + 1)]
    return [docs[bounds[i] : bounds[i + 1]] for i in range(parts)]


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], out_dir: Path) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE and save it as a Hugging Face fast tokenizer; return it reloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if tok.token_to_id(EOS) != 0 or tok.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError("tokenizer: EOS must be id 0 and the vocabulary full")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        unk_token=None,
        clean_up_tokenization_spaces=False,
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    fast.save_pretrained(str(out_dir))
    portable_tokenizer_config(out_dir / "tokenizer_config.json")
    return AutoTokenizer.from_pretrained(str(out_dir))


def portable_tokenizer_config(path: Path) -> None:
    """Name the class PreTrainedTokenizerFast so transformers 4.x loads it too (5.x maps it)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config.pop("backend", None)
    config.pop("model_max_length", None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def token_counts(tok: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    """Token count per text; raise unless every text round-trips exactly."""
    if tok("probe").input_ids != tok("probe", add_special_tokens=False).input_ids:
        raise RuntimeError("tokenizer adds special tokens by default")
    counts = []
    for start in range(0, len(texts), 512):
        batch = texts[start : start + 512]
        ids = tok(batch, add_special_tokens=False).input_ids
        for text, seq, back in zip(batch, ids, tok.batch_decode(ids), strict=True):
            if back != text or tok.eos_token_id in seq:
                raise RuntimeError(f"tokenizer round-trip failed for: {text[:200]!r}")
            counts.append(len(seq))
    return counts


# --------------------------------------------------------------------------- stats and README


def summarize(docs: list[Doc], counts: list[int]) -> dict[str, int]:
    """Document, UTF-8 byte and token totals."""
    return {
        "docs": len(docs),
        "text_bytes": sum(len(d.text.encode()) for d in docs),
        "tokens": sum(counts),
    }


def by_source(docs: list[Doc], counts: list[int]) -> dict[str, dict[str, float]]:
    """Totals per source, with shares of documents and tokens."""
    groups: dict[str, tuple[list[Doc], list[int]]] = {}
    for doc, n in zip(docs, counts, strict=True):
        groups.setdefault(doc.source, ([], []))[0].append(doc)
        groups[doc.source][1].append(n)
    out = {}
    for source, (group, group_counts) in sorted(groups.items()):
        row: dict[str, float] = dict(summarize(group, group_counts))
        row["doc_share"] = round(len(group) / len(docs), 4)
        row["token_share"] = round(sum(group_counts) / sum(counts), 4)
        out[source] = row
    return out


def sha256(data: bytes) -> str:
    """Hex digest."""
    return hashlib.sha256(data).hexdigest()


def table(rows: dict[str, dict[str, float]], cols: tuple[str, ...]) -> str:
    """A Markdown table with one row per key."""
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, row in rows.items():
        cells = (f"{row[c]:,}" if isinstance(row[c], int) else f"{row[c]:.2%}" for c in cols)
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


README = """\
# Bundled real-text sample (C4 -> Books, toy scale)

Generated by `scripts/build_sample.py` -- do not edit by hand; rebuild with

```
python scripts/build_sample.py --out data/sample --cache-dir /tmp/colorfilter-sample-cache
```

It needs a Debian bookworm machine (apt sources with bookworm main; `apt-get`, `dpkg-deb`, and
`libreadline8` for the `bible` decompressor) and the `tokenizers`, `transformers` and `zstandard`
Python packages; if apt has no English Translation list it runs `apt-get update -o
Acquire::Languages=en` (as root). Package versions are pinned; the Translation-en list is copied
into the cache on first use, and the script warns if its sha256 differs from the one recorded in
the script (a later bookworm point release changes it, and with it the Debian part of the pool).
With the same cache, reruns are byte-identical.

## Layout

- `pool/c4-train.0000{{0..3}}-of-00004.json.{{gz,zst}}`: the candidate pool, C4-shaped JSON lines
  `{{"text", "timestamp", "url", "source"}}`, shuffled, split evenly in document count; the first
  two shards are gzip, the last two zstandard.
- `target/train.jsonl.zst`: conditioning data (held-out books), `{{"text", "source"}}` records,
  shuffled passages.
- `target/eval.jsonl.zst`: held-out evaluation passages from a different novel, in book order.
- `target/mc.jsonl.zst`: {mc_items} multiple-choice items in the lm-eval style
  (`{{"context", "choices", "label", "source"}}`) from the same novel's remaining chapters, which
  no other file holds: {mc_context} sentences of context, then its true next sentence among
  {mc_choices} choices (the other {mc_distractors} are sentences of {mc_words[0]}-{mc_words[1]}
  words from elsewhere in those chapters). Used by `evaluate.multiple_choice`.
- `tokenizer/`: byte-level BPE (vocab {vocab}, `<|endoftext|>` = id 0 as EOS/BOS/PAD), trained
  on pool + target train (not eval). Load it with
  `AutoTokenizer.from_pretrained("data/sample/tokenizer")`; it adds no special tokens, and
  `decode(encode(text)) == text` holds for every document here (checked at build time).
- `stats.json`: the counts below plus sha256 of every data file; `LICENSES/`: licence texts.

## Sources and licences

All from Debian bookworm (main); versions are pinned in the script.

- `debian-description`: long package descriptions from the archive's `Translation-en` index
  (sha256 `{translation}`). Each description belongs to its package and is under that
  package's own copyright; Debian distributes them all in this index.
- `jargon`: `jargon-text` {jargon} (The Jargon File 4.4.7, Eric S. Raymond): public domain.
- `foldoc`: `dict-foldoc` {foldoc} (Free On-line Dictionary of Computing, 19 Jan 2023, ed. Denis
  Howe): GFDL 1.1 or later, no invariant sections; licence text in `LICENSES/GFDL-1.2`.
- `book:<novel>`: `r-cran-janeaustenr` {janeaustenr} (Austen's six novels as R data; the R
  packaging is MIT, the novels are public domain).
- `book:kjv`: `bible-kjv-text` {kjv}, decompressed with `bible-kjv` {kjvprog}'s `bible`
  program (King James Version, 1611): public domain (under Crown letters patent in the UK only).

GCIDE (GPL-3) and man pages are deliberately not used.

## How the split was made

- Target = Austen novels that never appear in the pool. **Train**: {train_novels} (all chapters,
  cut into passages of {tw[0]}-{tw[1]} words of whole paragraphs, shuffled). **Eval**: the first
  passages of {eval_novels} (book order, up to {eval_chars:,} characters), a novel absent from
  both train and pool.
- Pool = web-like and reference documents plus a book minority: passages ({pw[0]}-{pw[1]} words)
  of {pool_novels} (group `book:austen`) and of the KJV (`book:kjv`), sampled at random up to a
  character budget per group ({budgets}).
- Cleaning: NFC; control, format and private-use characters removed; no blank lines (paragraphs
  are separated by one newline, as in C4). Debian descriptions become `package: short
  description` plus paragraphs (wrapped lines joined, list items and verbatim lines kept). Jargon
  and FOLDOC entries become one document each with `{{cross-references}}` unwrapped; FOLDOC
  category tags and dates, Jargon cartoon captions, tables, front matter and appendices dropped.
  FOLDOC entries marked `[Jargon File]` (near-copies of Jargon entries) are dropped.
  Austen `_italics_` marks removed; chapter headings, volume headings and end notes dropped.
- Deduplication (in the order jargon, FOLDOC, Debian, each sorted by URL): any paragraph of at
  least {min_para} normalised characters seen before is dropped (C4-style), then documents with
  fewer than {min_doc} or more than {max_doc:,} characters of body, then exact duplicates.
- Why this split: it gives graded relevance to the target. Pool passages of *other* Austen novels
  are the near-target minority a good selector should find first; KJV passages are book prose of
  a different style; Jargon/FOLDOC are reference prose; Debian descriptions are the web-like bulk.
  The `source` field is ground truth for measuring a selection's precision; selectors must not
  read it.
- Seeds: everything derives from seed {seed}; timestamps are random in April 2019 (C4's crawl).
  URLs are synthetic but point at each source's home (packages.debian.org, catb.org, foldoc.org,
  gutenberg.org).

## Counts (tokens with `tokenizer/`)

Per file:

{files_table}

Pool by source:

{pool_table}

Target by source:

{target_table}
"""


def titles(novels: tuple[str, ...]) -> str:
    """'Title (`source`)' list for the README."""
    return ", ".join(f"{TITLES[n]} (`book:{n}`)" for n in novels)


def write_readme(out: Path, stats: dict) -> None:
    """Render README.md from the stats."""
    pkgs = stats["packages"]
    files = {
        k: {c: v[c] for c in ("docs", "text_bytes", "tokens", "file_bytes")}
        for k, v in stats["files"].items()
    }
    target = {
        f"{split}/{src}": row
        for split in ("train", "eval")
        for src, row in stats["target_by_source"][split].items()
    }
    text = README.format(
        vocab=VOCAB_SIZE,
        translation=stats["translation_en_sha256"][:16] + "...",
        jargon=pkgs["jargon-text"],
        foldoc=pkgs["dict-foldoc"],
        janeaustenr=pkgs["r-cran-janeaustenr"],
        kjv=pkgs["bible-kjv-text"],
        kjvprog=pkgs["bible-kjv"],
        train_novels=titles(TARGET_TRAIN_NOVELS),
        eval_novels=titles(TARGET_EVAL_NOVELS),
        pool_novels=titles(POOL_NOVELS),
        tw=TARGET_PASSAGE_WORDS,
        pw=POOL_PASSAGE_WORDS,
        eval_chars=EVAL_BUDGET_CHARS,
        min_para=MIN_DEDUP_PARA_CHARS,
        min_doc=MIN_DOC_CHARS,
        max_doc=MAX_DOC_CHARS,
        seed=stats["seed"],
        mc_items=stats["multiple_choice"]["items"],
        mc_context=MC_CONTEXT_SENTENCES,
        mc_choices=MC_CHOICES,
        mc_distractors=MC_CHOICES - 1,
        mc_words=MC_SENTENCE_WORDS,
        budgets=", ".join(f"{k} {v:,}" for k, v in POOL_BUDGET_CHARS.items()),
        files_table=table(files, ("docs", "text_bytes", "tokens", "file_bytes")),
        pool_table=table(
            stats["pool_by_source"], ("docs", "text_bytes", "tokens", "doc_share", "token_share")
        ),
        target_table=table(target, ("docs", "text_bytes", "tokens")),
    )
    write_file(out / "README.md", text.encode())


# --------------------------------------------------------------------------- main


def check_unique(docs: list[Doc]) -> None:
    """Fail unless every document is non-empty, clean and unique."""
    seen: set[str] = set()
    for doc in docs:
        if not doc.text or doc.text != clean_text(doc.text) or doc.text in seen:
            raise RuntimeError(f"empty, unclean or duplicate document: {doc.url}")
        seen.add(doc.text)


def write_outputs(
    out: Path, pool: list[Doc], splits: dict[str, list[Doc]], counts: dict[str, list[int]]
) -> dict[str, dict]:
    """Write the pool shards and target files; return per-file stats."""
    files: dict[str, dict] = {}
    jobs = [(p, shard, "pool") for p, shard in zip(pool_paths(out), split_even(pool, 4))]
    jobs += [(out / "target" / f"{name}.jsonl.zst", docs, name) for name, docs in splits.items()]
    offsets = {"pool": 0}
    for path, docs, key in jobs:
        keys = ("text", "timestamp", "url", "source") if key == "pool" else ("text", "source")
        data = compress(jsonl_bytes(docs, keys), path)
        write_file(path, data)
        start = offsets.get(key, 0)
        offsets[key] = start + len(docs)
        row = summarize(docs, counts[key][start : start + len(docs)])
        files[str(path.relative_to(out))] = {**row, "file_bytes": len(data), "sha256": sha256(data)}
    return files


def write_mc(out: Path, items: list[dict]) -> dict:
    """Write the multiple-choice items; return their stats."""
    path = out / "target" / "mc.jsonl.zst"
    lines = (json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    data = compress("".join(lines).encode("utf-8"), path)
    write_file(path, data)
    return {
        "file": str(path.relative_to(out)),
        "items": len(items),
        "choices": MC_CHOICES,
        "context_sentences": MC_CONTEXT_SENTENCES,
        "sources": sorted({item["source"] for item in items}),
        "file_bytes": len(data),
        "sha256": sha256(data),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/colorfilter-sample-cache"))
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Build the sample and return its stats."""
    args = parse_args(argv)
    began = time.time()
    roots = fetch_packages(args.cache_dir)
    translation = fetch_translation(args.cache_dir)
    translation_sha = sha256(translation.read_bytes())
    if translation_sha != TRANSLATION_SHA256:
        print(
            f"warning: Translation-en sha256 {translation_sha} differs from the one this sample "
            f"was built from ({TRANSLATION_SHA256}); the pool will differ",
            file=sys.stderr,
        )
    web = read_web(roots, translation)
    book_pool, train, evals, eval_rest = read_books(roots, args.seed)
    pool = build_pool(web, book_pool, args.seed)
    check_unique(pool + train + evals)
    for sub in ("pool", "target", "tokenizer", "LICENSES"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
    tok = train_tokenizer([d.text for d in pool + train], args.out / "tokenizer")
    splits = {"train": train, "eval": evals}
    counts = {"pool": token_counts(tok, [d.text for d in pool])}
    counts |= {name: token_counts(tok, [d.text for d in docs]) for name, docs in splits.items()}
    stats = {
        "seed": args.seed,
        "packages": dict(sorted(PACKAGES.items())),
        "translation_en_sha256": translation_sha,
        "tokenizer": {
            "vocab_size": VOCAB_SIZE,
            "eos_token": EOS,
            "eos_id": 0,
            "trained_on": "pool + target/train",
            "tokenizer_json_sha256": sha256((args.out / "tokenizer/tokenizer.json").read_bytes()),
        },
        "files": write_outputs(args.out, pool, splits, counts),
        "splits": {
            "pool": summarize(pool, counts["pool"]),
            **{k: summarize(v, counts[k]) for k, v in splits.items()},
        },
        "pool_by_source": by_source(pool, counts["pool"]),
        "target_by_source": {k: by_source(v, counts[k]) for k, v in splits.items()},
    }
    stats["multiple_choice"] = write_mc(args.out, mc_items(eval_rest, args.seed))
    gfdl = Path("/usr/share/common-licenses/GFDL-1.2")
    write_file(args.out / "LICENSES/GFDL-1.2", gfdl.read_bytes())
    write_file(args.out / "stats.json", (json.dumps(stats, indent=2) + "\n").encode())
    write_readme(args.out, stats)
    print(json.dumps(stats, indent=2))
    print(f"built {args.out} in {time.time() - began:.1f} s", file=sys.stderr)
    return stats


if __name__ == "__main__":
    main()
