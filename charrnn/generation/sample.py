"""Generation: feed the prime once, then one token per step for a batch of streams, state kept.

N samples are N rows of one batch: each step is one matrix product per layer for all of them
(``Stepper``/``Runner``, stepper.py), then temperature, top-k, top-p and the draw per row
(``Chooser``, draw.py). ``Job`` is one validated
request; ``Model.sample``/``stream``/``generate`` (api.py) run it and the CLI prints. Where a
sample ends and which tokens a line must start with is endings.py; beam search is beam.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from charrnn.data.text import decode_text, read_bytes
from charrnn.errors import CharrnnError
from charrnn.generation.beam import search
from charrnn.generation.cudagraph import make_stepper
from charrnn.generation.draw import Chooser
from charrnn.generation.endings import Rules, Tracker, line_start_tokens
from charrnn.generation.stepper import Runner, Stepper
from charrnn.model.network import RNNLM
from charrnn.settings import SAMPLE, check_values, defaults
from charrnn.system.device import resolve_precision


@dataclass
class Sample:
    """One finished sample (what ``charrnn sample --json`` prints, one per line)."""

    index: int       # 1, 2, ... N: the sample's number, as the CLI prints it
    text: str        # the prime, then the generated text
    tokens: int      # tokens generated (forced line-start tokens included; the prime's not)
    logprob: float   # sum of the model's own log-probabilities (temperature 1) of those tokens
    end: str         # why it ended: length, stop, max_lines or line_starts
    in_train: bool | None = None  # a records run: the record is one of the training split's (novelty.py)


def start_ids(tokenizer, prime: str, skip_unknown: bool = False) -> np.ndarray:
    """Token ids of the prime text; without one, a newline (or the first token) starts the text."""
    if prime:
        ids = tokenizer.encode(prime, skip_unknown=skip_unknown, hint="pass --skip-unknown to drop them")
        if len(ids):
            return ids
        raise CharrnnError("--prime has no character the model knows; give another prime text")
    try:
        ids = tokenizer.encode("\n")
    except CharrnnError:
        ids = np.zeros(0, np.int32)
    return ids[:1] if len(ids) else np.zeros(1, np.int32)


def read_prime_file(path) -> str:
    """The prime from a UTF-8 file, verbatim (a final newline included), checked like a corpus."""
    path = os.fspath(path)
    try:
        return decode_text(read_bytes(path, "prime file"), path, "prime file")
    except CharrnnError as e:  # the corpus wording suggests a training flag that sample does not have
        raise CharrnnError(str(e).replace(" or use --tokenizer byte", "")) from None


def check_options(prime: str, opts: dict) -> None:
    """Rules between sampling options (each value alone was checked by its SAMPLE entry)."""
    if prime and opts["prime_file"] is not None:
        raise CharrnnError("give --prime or --prime-file, not both")
    if any(s == "" for s in opts["stop"]):
        raise CharrnnError("--stop must not be an empty string; give the text that ends a sample")
    if opts["line_starts"] == "":
        raise CharrnnError("--line-starts is empty; give one character per line (e.g. 春夏秋冬)")
    if isinstance(opts["temp"], tuple):
        raise CharrnnError("one temperature per request here; a comma list of them is for charrnn sample --temp "
                           "(or call once per temperature)")
    if opts["beam"] is not None:
        for name, off in (("top_k", 0), ("top_p", 1.0)):
            if opts[name] != off:
                flag = "--" + name.replace("_", "-")
                raise CharrnnError(f"{flag} does not apply to --beam (beam search picks the most likely text); "
                                   f"drop one of them")
        if opts["num_samples"] > opts["beam"]:
            raise CharrnnError(f"--num-samples {opts['num_samples']} is more than --beam {opts['beam']} can give; "
                               f"use --num-samples {opts['beam']} or a wider --beam")


def sample_options(options: dict) -> dict:
    return {**defaults(SAMPLE), **check_values(SAMPLE, options, "sampling option")}


def chosen_logprobs(logp: torch.Tensor, ids: list) -> list:
    """Each row's log-probability of its chosen token, as Python floats (read from the CPU buffer
    directly: no tensor op per step)."""
    if logp.device.type == "cpu":
        rows = logp.numpy()
        return [float(rows[r, t]) for r, t in enumerate(ids)]
    return logp.gather(1, torch.tensor(ids, device=logp.device).view(-1, 1)).view(-1).tolist()


def make_generator(seed: int | None, device) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()  # non-deterministic, and leaves torch's global RNG alone
    return gen


class Job:
    """One sampling request, validated when made (every error comes before any output).

    ``events()`` yields ``(index, text)`` as text of sample ``index`` becomes final (the prime
    first, unless ``echo`` is false) and a ``Sample`` as each sample finishes. ``context`` is the
    last (state, log-probs) of stream 1, for a conversation that continues (interactive mode).
    """

    def __init__(self, model: RNNLM, tokenizer, prime: str, opts: dict, device="cpu", fresh: bool = True,
                 lead: str = ""):
        check_options(prime, opts)
        if opts["prime_file"] is not None:
            prime = read_prime_file(opts["prime_file"])
        self.model, self.tokenizer, self.opts = model, tokenizer, opts
        self.device = torch.device(device)
        self.ids = start_ids(tokenizer, prime, opts["skip_unknown"]) if prime or fresh else np.zeros(0, np.int32)
        prime_ids = self.ids
        if lead:  # context read before the prime and never printed (a records model starts after its separator)
            self.ids = np.concatenate([tokenizer.encode(lead), self.ids if prime else self.ids[:0]]).astype(np.int32)
        self.prime_text = tokenizer.decode(prime_ids) if prime else ""
        starts = line_start_tokens(tokenizer, opts["line_starts"]) if opts["line_starts"] else ()
        self.rules = Rules(tuple(opts["stop"]), opts["strip_stop"], opts["max_lines"], starts)
        # a fresh text starts a line; a conversation continued without new text is taken to be mid-line
        self.at_line_start = self.prime_text.endswith("\n") if prime else fresh
        self._context, self._last = None, None

    @property
    def context(self):
        """(state, log-probabilities) of the first stream after the last step (views of the stepping
        buffers, which the finished Job no longer writes)."""
        if self._last is not None:
            run, logp = self._last
            return run.state(), logp[:1]
        return self._context

    @context.setter
    def context(self, value) -> None:
        self._context, self._last = value, None

    def tracker(self) -> Tracker:
        return Tracker(self.rules, self.tokenizer.stream_decoder(), self.at_line_start)

    def _start(self, stepper: Stepper, context):
        """State and next-token log-probabilities (batch 1) after the prime (from ``context`` if given)."""
        if len(self.ids) == 0:
            return context
        x = torch.as_tensor(self.ids, dtype=torch.long, device=self.device).view(1, -1)
        h, state = self.model.features(x, None if context is None else stepper.to_module(context[0]))
        return stepper.from_module(state), self.model.head.log_probs(h[:, -1]).float()  # a long prime: one row

    def events(self, context=None, gen: torch.Generator | None = None, echo: bool = True) -> Iterator:
        for step in self._steps(context, gen, echo):
            yield from step

    def _steps(self, context, gen, echo, live: bool = True) -> Iterator[list]:
        """The events of each step, as one list; ``live=False``: only the finished samples matter.
        (Each step runs under torch.inference_mode, entered and left inside the step, so a caller's
        code between two yields never runs in it.)"""
        o, model = self.opts, self.model
        model.eval()
        with torch.no_grad():
            stepper = make_stepper(model, resolve_precision(o["precision"], self.device, sampling=True), self.device)
            state, logp = self.context = self._start(stepper, context)
            if o["beam"] is not None:
                found = search(stepper, state, logp, self, o["beam"], o["num_samples"], o["length"])
        if o["beam"] is not None:
            yield [e for s in found for e in ((s.index, s.text), s)]
            return
        gen = gen or make_generator(o["seed"], self.device)
        n = o["num_samples"]
        state = stepper.select(state, torch.zeros(n, dtype=torch.long, device=self.device))
        logp = logp.expand(n, -1)
        pick, run = Chooser(o["temp"], o["top_k"], o["top_p"], gen), Runner(stepper, state)
        rows = list(range(1, n + 1))  # the sample number of each row still generating
        trackers = [self.tracker() for _ in rows]
        if not (live or self.rules.active):  # every stream runs to --length: no per-stream work per step
            yield self._unruled(run, logp, pick)
            return
        if self.prime_text and echo:
            yield [(i, self.prime_text) for i in rows]
        for _ in range(o["length"]):
            with torch.inference_mode():  # per step (never across a yield): torch's cheapest dispatch
                nxt = pick(logp)
                if self.rules.line_starts:
                    forced = [(r, t.forced[0]) for r, t in enumerate(trackers) if t.forced]
                    if forced:
                        where, what = zip(*forced)
                        nxt[list(where)] = torch.tensor(what, device=nxt.device)
                ids = nxt.tolist()
                out = [(i, text) for i, t, tok, lp in zip(rows, trackers, ids, chosen_logprobs(logp, ids))
                       if (text := t.feed(tok, lp))]
                logp = run(nxt)
                self._last = (run, logp)
                keep = None
                if any(t.done for t in trackers):
                    keep = [r for r, t in enumerate(trackers) if not t.done]
                    out += [self.result(rows[r], t) for r, t in enumerate(trackers) if t.done]
                    if keep:
                        index = torch.tensor(keep, device=self.device)
                        run.select(index)
                        logp = logp.index_select(0, index)
                        rows, trackers = [rows[r] for r in keep], [trackers[r] for r in keep]
            yield out
            if keep == []:
                return
        out = []
        for i, t in zip(rows, trackers):
            text = t.finish("length")
            out += [(i, text), self.result(i, t)] if text else [self.result(i, t)]
        yield out

    def _unruled(self, run: Runner, logp, pick: Chooser) -> list:
        """The N samples when nothing ends one early: tokens and log-probabilities gathered in tensors
        each step, text decoded at the end (the same Samples as the per-step trackers give)."""
        o, n = self.opts, logp.shape[0]
        ids = torch.empty(o["length"], n, dtype=torch.long, device=self.device)
        total = torch.zeros(n, dtype=torch.float64, device=self.device)  # summed in order, as a Tracker sums
        with torch.inference_mode():
            for t in range(o["length"]):
                nxt = ids[t] = pick(logp)
                total += logp.gather(1, nxt.view(-1, 1)).view(-1)
                logp = run(nxt)
                self._last = (run, logp)
        out = []
        for i, (row, lp) in enumerate(zip(ids.t().tolist(), total.tolist()), 1):
            t = self.tracker()
            t.feed_all(row, lp)
            t.finish("length")
            out.append(self.result(i, t))
        return out

    def result(self, index: int, t: Tracker) -> Sample:
        return Sample(index, self.prime_text + t.text(), t.tokens, t.logprob, t.end)

    def pieces(self, context=None, gen=None) -> Iterator[str]:
        """The text of sample 1 as it becomes final (the prime first)."""
        for e in self.events(context, gen):
            if not isinstance(e, Sample):
                yield e[1]

    def samples(self) -> Iterator[Sample]:
        """Every sample in index order, each as soon as it and those before it are finished."""
        done, nxt = {}, 1
        for e in (e for step in self._steps(None, None, True, live=False) for e in step):
            if isinstance(e, Sample):
                done[e.index] = e
                while nxt in done:
                    yield done.pop(nxt)
                    nxt += 1


def generate(model: RNNLM, tokenizer, length: int, temperature: float = 1.0, prime: str = "",
             top_k: int = 0, seed: int | None = None, device: torch.device | str = "cpu",
             skip_unknown: bool = False, **options) -> Iterator[str]:
    """Yield decoded text as soon as it is complete: first the prime, then ``length`` new tokens.

    temperature 0 is greedy (argmax); top_k > 0 samples among the k most likely tokens only; any
    other SAMPLE setting (top_p, stop, max_lines, line_starts, beam) is a keyword too.
    """
    opts = sample_options({"length": length, "temp": temperature, "top_k": top_k, "seed": seed,
                           "skip_unknown": skip_unknown, **options})
    yield from Job(model, tokenizer, prime, opts, device).pieces()
