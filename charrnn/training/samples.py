"""Samples while training (--sample-every): a short text from the model every N steps, printed with
the evaluation line and recorded in metrics.jsonl (``"split": "sample"``), so a run shows how its
text improved.

Every sample starts from the same prime with the same seed (the run's --seed) in a generator of
its own: successive samples differ only by what the model learned, and the training RNG stream
is never drawn from (resume stays bit-exact). The model's train/eval mode is restored afterwards
and the sampling kernels' prepared weights are dropped (they would be stale after the next step).
A records run samples SAMPLE_RECORDS records, each from a fresh state, one per line.
"""

from __future__ import annotations

import sys

from charrnn.generation.sample import Job, sample_options
from charrnn.settings import SAMPLE, defaults

SAMPLE_RECORDS = 5   # records per sample of a --records run
SAMPLE_TEMP = defaults(SAMPLE)["temp"]  # sampling's default temperature


def training_sample(model, tokenizer, cfg, device) -> dict:
    """A sample of the model as it is now: {"text", "prime", "temp"} (+ "records" for a records run)."""
    sep = cfg.records
    opts = sample_options({"length": cfg.sample_length, "temp": SAMPLE_TEMP, "seed": cfg.seed, "precision": "fp32",
                           "num_samples": SAMPLE_RECORDS if sep else 1,
                           **({"stop": (sep,), "strip_stop": True} if sep else {})})
    was_training = model.training
    try:
        job = Job(model, tokenizer, cfg.sample_prime, opts, device, lead=sep or "")
        texts = [s.text for s in job.samples()]
    finally:
        model.train(was_training)
        model.__dict__.pop("_charrnn_steppers", None)  # cudagraph.make_stepper's cache of prepared weights
    out = {"text": "\n".join(texts) if sep else texts[0], "prime": cfg.sample_prime, "temp": SAMPLE_TEMP}
    return {**out, "records": texts} if sep else out


def format_sample(step: int, sample: dict, val: dict | None) -> str:
    """The lines printed under the progress bar: a header (with the evaluation of this step) and the text."""
    head = f"--- sample at step {step}"
    if val is not None and val.get("step") == step:
        head += f" (val loss {val['loss']:.4f}, bpc {val['bpc']:.4f})"
    text = sample["text"]
    return f"{head} ---\n{text}" + ("" if text.endswith("\n") else "\n")


def show(msg: str, bar, log) -> None:
    """Print without breaking the progress bar (tqdm.write), or through the run's log when there is none."""
    if bar is None or bar.disable:
        log(msg.rstrip("\n"))
    else:
        bar.write(msg.rstrip("\n"), file=sys.stderr)
