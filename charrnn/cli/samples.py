"""charrnn sample's printing of whole samples (click only; the library is imported by the caller):
several samples, several temperatures (``--temp 0.5,0.8,1.0``, a line '--- temp T ---' before each),
a records run's samples one record per line, the ``"in_train"`` mark of ``--json`` and ``--novel``
(generation/novelty.py) with the summary line 'N samples: k new, j in train' on stderr."""

from __future__ import annotations

import json
import sys

from charrnn.errors import CharrnnError


def _record_line(text: str, sep: str) -> str:
    """A record as printed: on its own line (a separator that is a line break ends it, others follow it)."""
    from charrnn.generation.novelty import record_text

    body = record_text(text, sep)
    return body + ("\n" if sep == "\n" else sep if sep.endswith("\n") else sep + "\n")


def note_escapes(stops, log) -> None:
    """A note for each --stop that holds a written backslash-n or backslash-t (the shell passed it as is)."""
    for s in stops:
        if "\\n" in s or "\\t" in s:
            log(f"note: --stop {s!r} holds a backslash, not a line break or tab; in bash write $'\\n' for one")


def print_samples(model, prime: str, opts: dict, temps: tuple | None, as_json: bool, sep: str | None, log) -> None:
    from charrnn.generation.novelty import mark, summary

    records = None
    if sep is not None and (as_json or opts["novel"]):
        try:
            records = model.train_records()  # the training split's records, as hashes
        except CharrnnError as e:
            if opts["novel"]:
                raise
            log(f"note: samples not marked \"in_train\": {e}")
    n = opts["num_samples"]
    log(f"sampling from {model.path}" + (f" ({n} samples)" if n > 1 else "")
        + (f" at {len(temps)} temperatures" if temps else ""))
    note_escapes(opts["stop"], log)
    marks = []
    for t in temps or (opts["temp"],):
        samples = model.generate(prime, **{**opts, "temp": t, "novel": False})
        if records is not None:
            samples = mark(samples, records, sep)
        if temps and not as_json:
            sys.stdout.write(f"--- temp {t:g} ---\n")
        for s in samples:
            if s.in_train is not None:
                marks.append(s.in_train)
            if opts["novel"] and s.in_train:
                continue
            if as_json:
                obj = {"index": s.index, "text": s.text, "tokens": s.tokens, "logprob": round(s.logprob, 4),
                       "end": s.end}
                if temps:
                    obj["temp"] = t
                if s.in_train is not None:
                    obj["in_train"] = s.in_train
                sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
            elif sep is not None:
                sys.stdout.write(_record_line(s.text, sep))
            else:
                if n > 1:
                    sys.stdout.write(f"--- sample {s.index} ---\n")
                sys.stdout.write(s.text if s.text.endswith("\n") else s.text + "\n")
            sys.stdout.flush()
    if records is not None:
        log(summary(marks))
