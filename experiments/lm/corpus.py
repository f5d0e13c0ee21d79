"""The offline text corpus: the English quotations of Debian's `fortunes` packages.

Debian ships about 2.5 MB of plain English text (jokes, quotations, literature, poems) in
`fortunes` and `fortunes-min` under /usr/share/games/fortunes, one file per topic, records
separated by a line holding a single `%`. It needs no network beyond the Debian archive
(`.ci/components/30-lm-corpus.sh` installs it). Records are shuffled with a fixed seed and
split into train / validation / test by record, so no quotation is in two splits.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CORPUS_DIR = Path("/usr/share/games/fortunes")
CORPUS_DIR_ENV = "AR_LM_CORPUS_DIR"
# ascii-art is pictures made of characters, not language.
EXCLUDED_FILES = frozenset({"ascii-art"})
SPLIT_FRACTIONS = {"train": 0.90, "val": 0.05, "test": 0.05}
SPLIT_SEED = 0
_OVERSTRIKE = re.compile(r".\x08")


class CorpusMissingError(RuntimeError):
    """The corpus files are not on this machine."""


@dataclass(frozen=True)
class Corpus:
    train: str
    val: str
    test: str
    fingerprint: str  # sha256 of the raw text, part of every cache key built on this corpus

    def split(self, name: str) -> str:
        if name not in SPLIT_FRACTIONS:
            raise ValueError(f"unknown split {name!r}; expected one of {sorted(SPLIT_FRACTIONS)}")
        text: str = getattr(self, name)
        return text


def corpus_dir() -> Path:
    return Path(os.environ.get(CORPUS_DIR_ENV, str(DEFAULT_CORPUS_DIR)))


def corpus_files(directory: Path | None = None) -> list[Path]:
    """The regular text files of the corpus (the `.dat` indexes and `.u8` links are skipped)."""
    directory = directory or corpus_dir()
    if not directory.is_dir():
        raise CorpusMissingError(
            f"no text corpus at {directory}: install it with `apt-get install fortunes fortunes-min` "
            f"(or run .ci/components/30-lm-corpus.sh), or point {CORPUS_DIR_ENV} at a directory "
            "of %-separated text files"
        )
    files = sorted(
        path
        for path in directory.iterdir()
        if path.is_file()
        and not path.is_symlink()
        and path.suffix == ""
        and path.name not in EXCLUDED_FILES
    )
    if not files:
        raise CorpusMissingError(f"{directory} holds no corpus text files (names without suffix)")
    return files


def _records(text: str) -> list[str]:
    text = _OVERSTRIKE.sub("", text)
    return [record.strip("\n") for record in re.split(r"^%\n", text, flags=re.M) if record.strip()]


def load_corpus(directory: Path | None = None) -> Corpus:
    raw = "".join(
        path.read_text(encoding="utf-8", errors="replace") for path in corpus_files(directory)
    )
    records = _records(raw)
    random.Random(SPLIT_SEED).shuffle(records)
    n_train = int(len(records) * SPLIT_FRACTIONS["train"])
    n_val = int(len(records) * SPLIT_FRACTIONS["val"])
    parts = (records[:n_train], records[n_train : n_train + n_val], records[n_train + n_val :])
    train, val, test = ("\n\n".join(part) + "\n" for part in parts)
    fingerprint = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]
    return Corpus(train=train, val=val, test=test, fingerprint=fingerprint)
