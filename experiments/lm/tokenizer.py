"""A byte-level BPE tokenizer trained here on the corpus (no downloaded vocabulary).

Text is split into pre-tokens (a word with its leading space, a run of digits, a run of
punctuation, whitespace); each pre-token is a sequence of bytes, and training repeatedly merges
the most frequent adjacent pair into a new token. Ids 0..255 are the raw bytes, so any text
round-trips exactly.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np

PRETOKEN = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")
N_BYTES = 256


class ByteBPE:
    def __init__(self, merges: list[tuple[int, int]]):
        self.merges = merges
        self.ranks = {pair: N_BYTES + rank for rank, pair in enumerate(merges)}
        self.vocab: list[bytes] = [bytes([b]) for b in range(N_BYTES)]
        for left, right in merges:
            self.vocab.append(self.vocab[left] + self.vocab[right])
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> ByteBPE:
        if vocab_size < N_BYTES:
            raise ValueError(f"vocab_size must be at least {N_BYTES} (the bytes), got {vocab_size}")
        counts = Counter(PRETOKEN.findall(text))
        words = [list(word.encode("utf-8")) for word in counts]
        freqs = list(counts.values())
        pair_counts: Counter[tuple[int, int]] = Counter()
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for index, (word, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(word):
                pair_counts[pair] += freq
                where[pair].add(index)
        merges: list[tuple[int, int]] = []
        while len(merges) < vocab_size - N_BYTES and pair_counts:
            # Ties broken by the pair itself so training is deterministic.
            best = max(pair_counts.items(), key=lambda item: (item[1], -item[0][0], -item[0][1]))[0]
            if pair_counts[best] < 2:
                break
            new_id = N_BYTES + len(merges)
            merges.append(best)
            for index in list(where[best]):
                word, freq = words[index], freqs[index]
                for pair in pairwise(word):
                    pair_counts[pair] -= freq
                    if pair_counts[pair] <= 0:
                        del pair_counts[pair]
                merged: list[int] = []
                i = 0
                while i < len(word):
                    if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                        merged.append(new_id)
                        i += 2
                    else:
                        merged.append(word[i])
                        i += 1
                words[index] = merged
                for pair in pairwise(merged):
                    pair_counts[pair] += freq
                    where[pair].add(index)
            del where[best]
        return cls(merges)

    def _encode_pretoken(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = list(piece.encode("utf-8"))
        while len(ids) > 1:
            pairs = pairwise(ids)
            best = min(pairs, key=lambda pair: self.ranks.get(pair, 1 << 30))
            new_id = self.ranks.get(best)
            if new_id is None:
                break
            merged: list[int] = []
            i = 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == best:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            ids = merged
        self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        return [i for piece in PRETOKEN.findall(text) for i in self._encode_pretoken(piece)]

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(
            self.encode(text), dtype=np.uint16 if self.vocab_size <= 65536 else np.int32
        )

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"kind": "byte-bpe", "merges": self.merges}))

    @classmethod
    def load(cls, path: Path) -> ByteBPE:
        data = json.loads(path.read_text())
        if data.get("kind") != "byte-bpe":
            raise ValueError(
                f"{path} is not a byte-level BPE tokenizer file written by ByteBPE.save"
            )
        return cls([(int(a), int(b)) for a, b in data["merges"]])
