"""Fine-tuning (``--init-from``): a new run that starts from a trained model's weights and tokenizer.

``apply_source`` (called by api.train) reads the source checkpoint and takes the architecture from
it (refusing architecture settings given explicitly that contradict it); ``start_model`` (called by
the trainer once the corpus is encoded) builds the starting model. The optimizer, warmup, schedule
and learning rate are those of a new run (a lower --lr measurably hurt: docs/BENCHMARKS.md), and the
source checkpoint is only ever read.

Characters the source never saw (char tokenizer; tokenizers.adapt_vocab) are refused, dropped
(--skip-unknown) or added (--extend-vocab). Added ones get new rows: the vocabulary stays sorted,
so known characters keep their weights under possibly higher ids. A new character's embedding is
the mean embedding; its output unit has zero weights (tied weights: the mean embedding) and a bias
chosen so that, averaged over the source model's hidden states on the new text, it receives its
smoothed unigram frequency in that text. The old characters lose only that small mass, so the
starting loss on text of known characters is the source model's within about that mass. An
adaptive head gets the new characters as one more tail cluster whose head logit is set the same way
(uniform inside the cluster).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.data.corpus import token_counts
from charrnn.errors import CharrnnError
from charrnn.model.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.model.heads import _smoothed_logp
from charrnn.model.network import RNNLM
from charrnn.settings import TRAIN, TrainConfig, check_combination, check_values
from charrnn.system import rundir

ARCHITECTURE = ("cell", "layers", "hidden", "emb", "attention", "tie_weights", "head", "tokenizer", "vocab_size")
SAMPLE_TOKENS = 4096  # hidden states used to set the new output units' biases


def source_settings(ckpt: dict, model: RNNLM, tok) -> dict:
    """The architecture settings of a checkpoint (the head resolved; vocab_size as the run set it)."""
    c, run = model.cfg, ckpt.get("run_config")
    vocab = run.get("vocab_size") if isinstance(run, dict) and isinstance(run.get("vocab_size"), int) else None
    if vocab is None:
        vocab = tok.vocab_size if tok.kind in ("bpe", "unigram") else 512
    return {"cell": c.cell, "layers": c.layers, "hidden": c.hidden, "emb": c.emb, "attention": c.attention,
            "tie_weights": c.tie_weights,
            "head": c.head, "tokenizer": tok.kind, "vocab_size": vocab}


def _show(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def apply_source(cfg, explicit) -> dict:
    """Point a new run's settings at the checkpoint to fine-tune (cfg.init_from: a .pt file or a run
    directory, whose best.pt is used); returns that checkpoint. ``explicit``: the settings the caller
    gave (the others had their defaults filled in)."""
    try:
        path = rundir.resolve_checkpoint(os.fspath(cfg.init_from), cfg.checkpoint_dir, prefer=rundir.BEST)
        ckpt = load_checkpoint(path)
        model, tok = model_from_checkpoint(ckpt, path)
    except CharrnnError as e:
        raise CharrnnError(f"--init-from: {e}") from None
    path = os.path.abspath(path)
    src = source_settings(ckpt, model, tok)
    for name in ARCHITECTURE:
        mine = getattr(cfg, name)
        if name in explicit and mine != src[name] and not (name == "head" and mine == "auto"):
            flag = "--" + name.replace("_", "-")
            raise CharrnnError(f"{flag} {_show(mine)} contradicts the model being fine-tuned ({name} "
                               f"{_show(src[name])} in {path}); the architecture comes from --init-from, so "
                               f"drop {flag}")
        setattr(cfg, name, src[name])
    cfg.init_from = path
    check_combination(cfg)
    return ckpt


def finetune_config(values: dict, explicit) -> tuple:
    """A fine-tuning run's settings and the source checkpoint. The rules between settings are checked
    once the architecture is the source's (with defaults such as --hidden 512 they would misfire)."""
    cfg = TrainConfig(**check_values(TRAIN, values))
    return cfg, apply_source(cfg, explicit)


def unknown_policy(cfg, resuming: bool) -> str | None:
    """What loading the corpus does with characters the tokenizer never saw (tokenizers.adapt_vocab):
    None outside fine-tuning; a resumed run never extends its vocabulary again."""
    if cfg.init_from is None:
        return None
    if cfg.skip_unknown:
        return "skip"
    return "extend" if cfg.extend_vocab and not resuming else "error"


def start_model(ckpt: dict, tok, train_ids: np.ndarray, dropout: float, log=None, **regularisers) -> RNNLM:
    """The model a fine-tuning run starts from: the source's weights (dropout and the regularisers as
    the new run sets them), with rows for the characters ``tok`` adds to the source's vocabulary."""
    src, old_tok = model_from_checkpoint(ckpt)
    if tok.vocab_size == old_tok.vocab_size:
        model = RNNLM(replace(src.cfg, dropout=dropout, **regularisers))
        model.load_state_dict(src.state_dict())
        return model
    V, V_old = tok.vocab_size, old_tok.vocab_size
    old_pos = torch.from_numpy(np.searchsorted(tok.codepoints, old_tok.codepoints))
    is_new = torch.ones(V, dtype=torch.bool)
    is_new[old_pos] = False
    new_pos = torch.nonzero(is_new).squeeze(1)
    cutoffs = tuple(src.cfg.cutoffs) + ((V_old,) if src.cfg.head == "adaptive" else ())
    model = RNNLM(replace(src.cfg, vocab_size=V, dropout=dropout, cutoffs=cutoffs, **regularisers))
    logp = _smoothed_logp(token_counts(train_ids, V)).float()
    with torch.no_grad():
        model.rnn.load_state_dict(src.rnn.state_dict())
        if src.attn is not None:
            model.attn.load_state_dict(src.attn.state_dict())
        model.embed.weight[old_pos] = src.embed.weight
        model.embed.weight[new_pos] = src.embed.weight.mean(0)
        h = _hidden_sample(model, train_ids)
        if src.cfg.head == "adaptive":
            _extend_adaptive(model.head, src.head, old_pos, new_pos, V_old, h, logp)
        else:
            _extend_full(model.head, src.head, old_pos, new_pos, h, logp)
    if log:
        mass = float(logp[new_pos].exp().sum())
        log(f"new characters: mean embedding, output units at their frequency in the new text "
            f"({100 * mass:.3g}% of the probability)")
    return model


def _hidden_sample(model: RNNLM, ids: np.ndarray) -> torch.Tensor:
    """Top-layer states (N, H) after the first few thousand tokens of the new text."""
    n = min(len(ids), SAMPLE_TOKENS)
    rows = max(1, n // 1024)
    x = torch.from_numpy(np.asarray(ids[:rows * (n // rows)], np.int64)).view(rows, -1)
    was_training = model.training
    model.eval()
    h, _ = model.features(x)
    model.train(was_training)
    return h.reshape(-1, h.shape[-1]).float()


def _logmeanexp(v: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(v, 0) - math.log(len(v))


def _extend_full(out, old, old_pos, new_pos, h, logp) -> None:
    """Full softmax: old units copied; new units' bias b_c = log p_c - log mean_h exp(w.h - log Z_old(h))."""
    if not out.tied:  # tied: the weight is the embedding, already extended (new rows: the mean)
        out.weight[old_pos] = old.weight
        out.weight[new_pos] = 0.0
    out.bias[old_pos] = old.bias
    log_z = torch.logsumexp(F.linear(h, old.weight.float(), old.bias.float()), -1)
    s = h @ out.weight[new_pos[0]].float()  # the new units' logit before the bias (all the same)
    out.bias[new_pos] = logp[new_pos] - _logmeanexp(s - log_z)


def _extend_adaptive(out, old, old_pos, new_pos, V_old, h, logp) -> None:
    """Adaptive softmax: the new characters form one more tail cluster (zero weights: uniform inside);
    its head logit gets their total frequency, as for the full softmax."""
    n = old.head.out_features
    out.head.weight[:n] = old.head.weight
    out.head.weight[n:] = 0.0
    out.head.bias[:n] = old.head.bias
    for t_new, t_old in zip(out.tail, old.tail):
        t_new.load_state_dict(t_old.state_dict())
    for p in out.tail[-1].parameters():
        p.zero_()
    out.rank[old_pos] = old.rank
    out.rank[new_pos] = V_old + torch.arange(len(new_pos))
    log_z = torch.logsumexp(old.head(h), -1)
    out.head.bias[n] = torch.logsumexp(logp[new_pos], 0) - _logmeanexp(-log_z)
