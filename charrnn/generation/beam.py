"""Beam search (``--beam K``): the most likely continuation under the model, deterministic.

The K live hypotheses are rows of one batch through the ``Stepper``; each step keeps the K best
extensions (their states follow their parent rows). A hypothesis that ends (a stop string,
``--max-lines``, the last ``--line-starts`` line, or ``--length`` tokens) is set aside with its
score, the sum of the model's log-probabilities of its tokens (temperature does not change which
text is most likely). Extending a hypothesis only lowers its score, so the search stops as soon
as the M best finished ones beat every live one.

Beam search prunes, so on its own it can end below greedy decoding (e.g. when a forced line start
is unlikely, every beam may avoid line breaks while greedy finishes the verse early). One more row
in the batch follows the greedy path and its result competes with the beams': the best result is
never less likely than greedy decoding, and ``--beam 1`` is greedy decoding.
"""

from __future__ import annotations

import torch

INF = float("inf")


def _masked(logp: torch.Tensor, rows) -> torch.Tensor:
    """Log-probabilities (float64) where a row that must produce a given token can produce only it."""
    cand = logp.double()
    for r, tr in enumerate(rows):
        if tr.forced:  # a line's given first character
            keep = cand[r, tr.forced[0]].clone()
            cand[r] = -INF
            cand[r, tr.forced[0]] = keep
    return cand


def _advance(tr, token: int, logprob: float, last: bool):
    tr.feed(token, logprob)
    if last and not tr.done:
        tr.finish("length")
    return tr


def search(stepper, state, logp: torch.Tensor, job, width: int, count: int, length: int) -> list:
    """The ``count`` best finished hypotheses (best first) as Samples numbered 1..count."""
    beams, greedy = [job.tracker()], job.tracker()  # greedy: the last row of the batch while it runs
    state = stepper.select(state, torch.zeros(2, dtype=torch.long, device=logp.device))
    logp = logp.expand(2, -1)
    finished = {}  # text -> (score, tracker)
    if length == 0:
        greedy.finish("length")
        finished[""] = (0.0, greedy)
    for t in range(length):
        last = t == length - 1
        cand = _masked(logp, beams + ([greedy] if greedy else []))
        n = len(beams)
        scores = torch.tensor([tr.logprob for tr in beams], dtype=torch.float64, device=cand.device)
        total = (scores[:, None] + cand[:n]).view(-1)
        values, flat = total.topk(min(2 * width, total.numel()))
        live, parents, tokens = [], [], []
        for value, f in zip(values.tolist(), flat.tolist()):
            if value == -INF or len(live) == width:
                break
            parent, token = divmod(f, cand.shape[1])
            tr = _advance(beams[parent].clone(), token, float(cand[parent, token]), last)
            if tr.done:
                _keep(finished, tr)
            else:
                live.append(tr)
                parents.append(parent)
                tokens.append(token)
        if greedy is not None:
            token = int(cand[n].argmax())
            _advance(greedy, token, float(cand[n, token]), last)
            if greedy.done:
                _keep(finished, greedy)
                greedy = None
            else:
                parents.append(n)
                tokens.append(token)
        best = sorted(finished.values(), key=lambda e: -e[0])[:count]
        running = [tr.logprob for tr in live + ([greedy] if greedy else [])]
        if not running or (len(best) == count and best[-1][0] >= max(running)):
            break
        beams = live
        index = torch.tensor(parents, device=logp.device)
        logp, state = stepper(torch.tensor(tokens, device=logp.device), stepper.select(state, index))
    best = sorted(finished.values(), key=lambda e: -e[0])[:count]
    return [job.result(i, tr) for i, (_, tr) in enumerate(best, 1)]


def _keep(finished: dict, tr) -> None:
    """A finished hypothesis; the same text reached twice (e.g. by the greedy row) is kept once."""
    text = tr.text()
    if text not in finished or finished[text][0] < tr.logprob:
        finished[text] = (tr.logprob, tr)
