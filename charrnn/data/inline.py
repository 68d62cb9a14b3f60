"""Training on strings given in Python: ``charrnn.train(text="...")`` or ``charrnn.train(texts=[...])``.

The text becomes a corpus file inside the run directory (written atomically), so the run resumes
like any other. A list is read as records (``--records``), each text from a fresh state: they are
joined with a separator that none of them contains (a newline when none holds one, so that the
file reads one text per line), each followed by it. An unnamed run is called ``text-<digest>``
after the first hex digits of the text's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from charrnn.errors import CharrnnError
from charrnn.system.fileio import atomic_write_bytes

FILE = "text.txt"  # in the run directory
SEPARATORS = ("\n", "\x1e", "\x1f", "\x1d", "\x1c")  # newline, then the ASCII record/unit/group/file separators


@dataclass
class InlineText:
    data: bytes                # the corpus file's bytes (UTF-8)
    records: str | None        # the separator of texts=[...], else None
    name: str                  # the default run name: text-<digest>

    def write(self, run_dir: str) -> str:
        """The corpus file in ``run_dir`` (absolute path), written atomically."""
        path = os.path.abspath(os.path.join(run_dir, FILE))
        atomic_write_bytes(self.data, path)
        return path


def separator(texts: list[str]) -> str:
    """The first of SEPARATORS that no text contains."""
    for sep in SEPARATORS:
        if not any(sep in t for t in texts):
            return sep
    raise CharrnnError("every text separator charrnn can use (newline, \\x1c-\\x1f) occurs in texts=; join the "
                       "texts yourself and train with text=JOINED, records=SEP")


def inline_text(text, texts, corpus, records) -> InlineText | None:
    """The corpus of ``text=`` or ``texts=`` (None when neither is given), checked."""
    if text is None and texts is None:
        return None
    if corpus is not None or (text is not None and texts is not None):
        raise CharrnnError("give one thing to train on: a corpus, text= (a string) or texts= (a list of strings)")
    if text is not None:
        if not isinstance(text, str):
            hint = "; for a list of texts use texts=" if isinstance(text, (list, tuple)) else ""
            raise CharrnnError(f"text= must be a string (got {type(text).__name__}){hint}")
        if not text:
            raise CharrnnError("text= is empty; give the text to train on")
        content, sep = text, None
    else:
        if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
            raise CharrnnError(f"texts= takes a list of strings, each a record (got {type(texts).__name__}); "
                               "for one string use text=")
        texts = list(texts)
        if not texts:
            raise CharrnnError("texts= is empty; give a list of texts to train on")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t:
                what = "empty" if isinstance(t, str) else f"not a string (got {type(t).__name__})"
                raise CharrnnError(f"texts[{i}] is {what}; every text must be a non-empty string")
        if records is not None:
            raise CharrnnError("texts= are records already (each from a fresh state); drop records=, or join them "
                               "yourself and pass text=JOINED, records=SEP")
        sep = separator(texts)
        content = sep.join(texts) + sep
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CharrnnError(f"the text has a lone surrogate {content[e.start]!r} at character {e.start:,}, which "
                           "UTF-8 cannot store; remove it") from None
    return InlineText(data, sep, "text-" + hashlib.sha256(data).hexdigest()[:8])
