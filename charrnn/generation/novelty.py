"""Which generated records are new: a records run's samples (``--records``) compared, by exact text,
with every record of its training split (``charrnn sample --novel``, the ``"in_train"`` mark of
``--json``, ``Model.generate(novel=True)``).

The training records are read from the run's corpus (its cached encoding), decoded a chunk of
CHUNK records at a time and kept only as 64-bit hashes (BLAKE2b) in one sorted array: 8 bytes per
record, whatever their length (two different records share a hash with probability ~ n^2 / 2^65).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Iterable, Iterator

import numpy as np

from charrnn.data.corpus import load_corpus
from charrnn.data.records import records_separator
from charrnn.errors import CharrnnError
from charrnn.settings import config_from_saved
from charrnn.system.rundir import cache_dir, checkpoint_dir_of

CHUNK = 1 << 16  # records decoded at once


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def check_records_run(run_config, flag: str = "--novel") -> str:
    """The run's record separator; a one-line error for a run trained without --records."""
    sep = records_separator(run_config)
    if sep is None:
        raise CharrnnError(f"{flag} compares samples with the training records, and this run was not trained "
                           "with --records (it has no records); drop --novel")
    return sep


class TrainRecords:
    """The set of a records run's training records (as hashes); ``text in records`` tests one."""

    def __init__(self, records: Iterable[str]):
        hashes = np.fromiter((_hash(r) for r in records), np.uint64)
        self.hashes = np.unique(hashes)  # sorted
        self.count = len(hashes)

    def __contains__(self, text: str) -> bool:
        h = np.uint64(_hash(text))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and self.hashes[i] == h

    @classmethod
    def of_run(cls, ckpt: dict, path: str) -> "TrainRecords":
        """The training records of the run a checkpoint (loaded from ``path``) belongs to."""
        run = ckpt.get("run_config")
        sep = check_records_run(run)
        cfg = config_from_saved(run)
        corpus = load_corpus(cfg.corpus, cfg.tokenizer, cfg.vocab_size, cfg.val_frac, cfg.test_frac, cfg.val_file,
                             cache_dir=cache_dir(checkpoint_dir_of(path)), tok_state=ckpt["tokenizer"],
                             records=sep, unknown="skip" if cfg.skip_unknown else None)
        return cls(split_texts(corpus.tokenizer, corpus.train.ids, corpus.train.starts, sep))


def split_texts(tokenizer, ids: np.ndarray, starts: np.ndarray, sep: str) -> Iterator[str]:
    """The text of every record of a split (its separator left out), CHUNK records decoded at once."""
    ends = np.append(np.asarray(starts, np.int64), len(ids))
    for i in range(0, len(starts), CHUNK):
        j = min(i + CHUNK, len(starts))
        text = tokenizer.decode(np.asarray(ids[ends[i]:ends[j]]))
        pieces = text.split(sep)
        if text.endswith(sep):
            pieces.pop()
        yield from pieces


def record_text(text: str, sep: str) -> str:
    """A sample's record: its text without a separator that leads or ends it."""
    if text.startswith(sep):
        text = text[len(sep):]
    return text[:-len(sep)] if text.endswith(sep) else text


def mark(samples: Iterable, records: TrainRecords, sep: str, keep_new_only: bool = False) -> Iterator:
    """Samples with ``in_train`` set (True: the record is in the training split); only the new ones
    with ``keep_new_only``."""
    for s in samples:
        s = replace(s, in_train=record_text(s.text, sep) in records)
        if not (keep_new_only and s.in_train):
            yield s


def summary(marks: list[bool]) -> str:
    """'N samples: k new, j in train'."""
    j = sum(marks)
    return f"{len(marks)} samples: {len(marks) - j} new, {j} in train"


