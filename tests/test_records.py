"""--records SEP: a corpus of independent records, each modelled from a fresh state (records.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import charrnn
import charrnn.evaluation.records as records_score
from charrnn.model.checkpoint import load_checkpoint
from charrnn.data.corpus import load_corpus
from charrnn.errors import CharrnnError
from charrnn.evaluation.evaluate import evaluate_split
from charrnn.model.network import RNNLM
from charrnn.data.records import (RecordBatcher, encode_records, gather, record_lengths, records_separator,
                             separator_ids, split_records)
from charrnn.evaluation.records import record_token_nll
from charrnn.settings import make_config
from charrnn.data.tokenizers import fit_tokenizer
from tests.conftest import make_model

WORDS = "the quick brown fox jumps over lazy dog pack my box with five dozen liquor jugs".split()
TINY = dict(layers=1, hidden=24, emb=8, batch_size=4, seq_len=16, precision="fp32", eval_every=10, save_every=10,
            log_every=5, device="cpu")


def make_records(n: int, seed: int = 0, long_every: int = 7) -> list[str]:
    """Lines of a few words; every long_every-th is longer than the tests' --seq-len (16)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(1, 4)) + (8 if long_every and i % long_every == 3 else 0)
        out.append(" ".join(rng.choice(WORDS, k)))
    return out


# ----------------------------------------------------------------------------- the setting

def test_separator_escapes_are_read_once():
    assert make_config(records="\\n").records == "\n"
    assert make_config(records="\\n\\n").records == "\n\n"
    assert make_config(records="\\t|\\\\").records == "\t|\\"
    assert make_config(records="\n").records == "\n"  # a real newline from Python stays one
    with pytest.raises(CharrnnError, match=r"--records '\\q' has unknown escape '\\q'"):
        make_config(records="\\q")
    with pytest.raises(CharrnnError, match="--records '' is empty"):
        make_config(records="")


def test_records_separator_helper_reads_a_run_config():
    assert records_separator({"records": "\n\n"}) == "\n\n"
    assert records_separator({"records": None}) is None and records_separator({}) is None
    assert records_separator(make_config(records="\\n")) == "\n"
    assert records_separator(None) is None


# ----------------------------------------------------------------------------- text

@pytest.mark.parametrize("val,test", [(0.1, 0.1), (0.05, 0.0), (0.3, 0.2), (0.01, 0.01)])
@pytest.mark.parametrize("sep", ["\n", "\n\n", "<|>"])
def test_split_falls_on_record_boundaries_near_the_fractions(val, test, sep):
    recs = make_records(300, seed=1)
    text = sep.join(recs) + sep
    train, v, t = split_records(text, sep, val, test)
    assert train + v + t == text
    for part in (train, v, t):
        assert part == "" or part.endswith(sep)  # whole records only
    assert v and (t or test == 0)
    longest = max(map(len, recs)) + len(sep)
    assert abs(len(train) - len(text) * (1 - val - test)) <= longest
    assert abs(len(t) - len(text) * test) <= longest


def test_split_without_separator_is_refused():
    with pytest.raises(CharrnnError, match=r"never contains the --records separator '\|'"):
        split_records("a\nb\n", "|", 0.1, 0.1, "c.txt")


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
@pytest.mark.parametrize("trailing", [True, False])
def test_encoded_records_start_where_the_starts_say(kind, trailing):
    recs = make_records(60, seed=2) + ["", "床前明月光"]
    sep = "\n\n"
    text = sep.join(recs) + (sep if trailing else "")
    tok = fit_tokenizer(kind, (text + " ") * 3, 300)
    ids, starts = encode_records(tok, text, sep)
    assert len(starts) == len(recs)
    ends = [*starts[1:], len(ids)]
    for i, (a, b) in enumerate(zip(starts, ends)):
        want = recs[i] + (sep if i < len(recs) - 1 or trailing else "")
        assert tok.decode(ids[a:b]) == want
    if kind in ("char", "byte"):
        assert np.array_equal(ids, tok.encode(text))  # one pass over the whole text


# ----------------------------------------------------------------------------- windows

def _batcher(n=120, B=4, T=16, sep="\n", seed=3):
    text = sep.join(make_records(n, seed=seed)) + sep
    tok = fit_tokenizer("char", text)
    ids, starts = encode_records(tok, text, sep)
    return RecordBatcher(ids, starts, separator_ids(tok, sep), B, T, seed), ids, starts, tok


@pytest.mark.parametrize("sep", ["\n", "\n\n"])
def test_each_epoch_predicts_every_token_once_from_record_starts(sep):
    rb, ids, starts, tok = _batcher(sep=sep)
    k = len(sep)
    assert (rb.lengths > rb.T).any() and (rb.lengths <= rb.T).any()  # both kinds of record
    sizes = set()
    for epoch in range(3):
        plan = rb.epoch_streams(epoch)
        assert len(plan) == rb.windows_per_epoch
        seen = np.zeros(len(ids), int)
        for i, w in enumerate(plan):
            x, y, pos = gather(rb.ext, rb.starts, rb.lengths, k, w)
            assert x.shape == y.shape and x.shape[1] <= rb.T
            sizes.add(x.numel())
            assert rb.fresh(plan, i) == (w.offset == 0)
            if w.fresh:  # every row starts with the separator, from a zero state
                assert (x[:, :k] == torch.from_numpy(separator_ids(tok, sep))).all()
            else:  # continues the same records as the window before it (state carried)
                assert np.array_equal(plan[i - 1].rows, w.rows) and w.offset == plan[i - 1].offset + rb.T
            ok = y >= 0
            assert torch.equal(y[ok], torch.from_numpy(ids)[pos[ok]].long())
            np.add.at(seen, pos[ok].numpy(), 1)
        assert (seen == 1).all()
    assert max(sizes) <= rb.B * rb.T


def test_windows_are_shuffled_per_epoch_and_reproducible():
    rb, *_ = _batcher()
    rows = lambda plan: [tuple(w.rows) for w in plan]  # noqa: E731
    assert rows(rb.epoch_streams(1)) != rows(rb.epoch_streams(2))
    again, *_ = _batcher()
    assert rows(again.epoch_streams(2)) == rows(rb.epoch_streams(2))


def test_short_records_share_windows_with_little_padding():
    rb, *_ = _batcher(n=2000, B=8, T=64, seed=4)
    plan = rb.epoch_streams(0)
    assert 0 <= rb.padding < 0.05
    assert max(len(w.rows) for w in plan) > rb.B  # many short records per window


# ----------------------------------------------------------------------------- scoring

def _model(vocab: int, cell: str = "lstm", head: str = "full", cutoffs=()) -> RNNLM:
    return make_model(vocab, cell, layers=2, hidden=16, emb=8, seed=0, dropout=0.0, head=head, cutoffs=cutoffs)


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_record_scores_equal_scoring_each_record_alone(cell, monkeypatch):
    monkeypatch.setattr(records_score, "EVAL_WINDOW", 8)  # long records are read in pieces, state carried
    rb, ids, starts, tok = _batcher(n=40, sep="\n\n")
    model = _model(tok.vocab_size, cell)
    nll = record_token_nll(model, ids, starts, separator_ids(tok, "\n\n"), torch.device("cpu"))
    ends = [*starts[1:], len(ids)]
    for a, b in zip(starts, ends):
        seq = torch.from_numpy(np.concatenate([separator_ids(tok, "\n\n"), ids[a:b]])).long()[None]
        with torch.no_grad():
            alone, _ = model.token_nll(seq[:, :-1], seq[:, 1:])
        # a record scored in a padded batch vs alone: the same float32 recurrence in another batch layout, ~1e-6
        # on NLLs of a few nats
        assert np.allclose(nll[a:b], alone[0, 1:].double().numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.numerics
def test_changing_one_record_leaves_every_other_record_unchanged():
    recs = make_records(80, seed=5)
    tok = fit_tokenizer("char", "\n".join(recs) + "\nXYZ")
    model = _model(tok.vocab_size)
    dev = torch.device("cpu")

    def per_record(rs):
        ids, starts = encode_records(tok, "\n".join(rs) + "\n", "\n")
        nll = record_token_nll(model, ids, starts, separator_ids(tok, "\n"), dev)
        return [nll[a:b] for a, b in zip(starts, [*starts[1:], len(ids)])]

    before = per_record(recs)
    changed = list(recs)
    changed[10] = "XYZ " + changed[10] + " jumps over the lazy dog again and again"  # other length, new chars
    after = per_record(changed)
    assert not np.allclose(before[10].sum(), after[10].sum())
    for i in range(len(recs)):
        if i != 10:
            assert np.abs(before[i] - after[i]).max() < 1e-6, i


@pytest.mark.numerics
def test_adaptive_head_loss_leaves_padding_out():
    torch.manual_seed(0)
    model = _model(700, head="adaptive", cutoffs=(512,))
    x = torch.randint(0, 700, (3, 10))
    y = torch.randint(0, 700, (3, 10))
    y_pad = y.clone()
    y_pad[1, 4:] = -100
    with torch.no_grad():
        full = model.token_nll(x, y_pad)[0]
        want = full[y_pad >= 0].mean()
        # the same 24 per-token terms averaged by two kernels in any order: float32 (eps 1.2e-7) of a mean of
        # ~6.5 nats is within 24 eps x 6.5 = 2e-5; leaving the 6 padded targets in moves it by ~1
        assert torch.allclose(model.loss(x, y_pad)[0], want, rtol=0, atol=24 * 1.2e-7 * 6.5)


# ----------------------------------------------------------------------------- a records run

@pytest.fixture(scope="module")
def records_run(tmp_path_factory, one_thread):
    base = tmp_path_factory.mktemp("records")
    corpus = base / "lines.txt"
    corpus.write_text("\n".join(make_records(400, seed=6)) + "\n", encoding="utf-8")
    r = charrnn.train(corpus, checkpoint_dir=base / "ck", records="\\n", max_steps=20, verbose=False, **TINY)
    return Path(r.run_dir), corpus, r


def test_records_run_records_its_separator_and_padding(records_run):
    run_dir, corpus, r = records_run
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["records"] == "\n" and 0 <= cfg["records_padding"] < 0.5
    ckpt = load_checkpoint(str(run_dir / "best.pt"))
    assert records_separator(ckpt["run_config"]) == "\n"


@pytest.mark.numerics
def test_records_run_is_evaluated_as_it_was_trained(records_run, cli):
    run_dir, corpus, r = records_run
    val = [m for m in r.metrics if m["split"] == "val"][-1]
    model = charrnn.load(run_dir / "last.pt", device="cpu")
    m = model.evaluate(precision="fp32")
    # the logged val loss is rounded to 6 significant digits (5e-7 relative); the evaluation itself repeats the
    # trainer's float32 one
    assert m["loss"] == pytest.approx(val["loss"], rel=1e-5) and m["text"].endswith("(records)")
    assert m["tokens"] == val["tokens"] and m["chars"] == val["chars"]  # every character is predicted
    out = cli("eval", run_dir / "last.pt", "--json", "--device", "cpu")
    assert out.code == 0 and json.loads(out.out)["loss"] == pytest.approx(m["loss"], rel=1e-9)
    # the same ids read as one continuous text score differently (context crosses records there)
    c = load_corpus(str(corpus), val_frac=0.05, test_frac=0.05, records="\n")
    stream = evaluate_split(model.module, model.tokenizer, c.val.ids, c.val.n_chars, c.val.n_bytes,
                            torch.device("cpu"))
    # must differ: context across records changes the loss by ~1e-2, 100x this
    assert abs(stream["loss"] - m["loss"]) > 1e-4
    assert model.evaluate(split="test")["tokens"] == len(c.test.ids)


def test_records_cli_reports_padding(tmp_path, cli, one_thread):
    corpus = tmp_path / "paras.txt"
    corpus.write_text("\n\n".join(make_records(200, seed=7)) + "\n\n", encoding="utf-8")
    r = cli("train", corpus, "--records", "\\n\\n", "--checkpoint-dir", tmp_path / "ck", "--max-steps", 3,
            "--layers", 1, "--hidden", 16, "--emb", 8, "--batch-size", 4, "--seq-len", 16, "--eval-every", 3)
    assert r.code == 0, r.err
    assert "records: " in r.err and "padding " in r.err and "longer than --seq-len 16" in r.err


def _weights(path) -> str:
    sd = load_checkpoint(str(path))["model"]
    return hashlib.sha256(b"".join(sd[k].numpy().tobytes() for k in sorted(sd))).hexdigest()


class _Stop(Exception):
    pass


@pytest.mark.numerics
def test_records_resume_is_bit_exact(records_run, tmp_path, one_thread):
    """Stopped right after a save whose next window continues long records (the carried state matters)."""
    _, corpus, _ = records_run
    c = load_corpus(str(corpus), records="\n")
    rb = RecordBatcher(c.train.ids, c.train.starts, separator_ids(c.tokenizer, "\n"), TINY["batch_size"],
                       TINY["seq_len"], seed=1337)
    plan = rb.epoch_streams(0)
    s = next(i for i in range(3, len(plan)) if not plan[i].fresh)
    args = dict(TINY, save_every=s, log_every=s + 1, eval_every=100)
    ck = tmp_path / "ck"
    a = charrnn.train(corpus, checkpoint_dir=ck, name="a", records="\n", max_steps=3 * s, verbose=False, **args)

    def stop(rec):
        raise _Stop

    with pytest.raises(_Stop):
        charrnn.train(corpus, checkpoint_dir=ck, name="b", records="\n", max_steps=3 * s, verbose=False,
                      on_log=stop, **args)
    ts = load_checkpoint(str(ck / "b" / "last.pt"))["train_state"]
    assert ts["step"] == s and ts["hidden"] is not None
    b = charrnn.resume(ck / "b", verbose=False)
    assert a.steps == b.steps == 3 * s
    assert _weights(ck / "a" / "last.pt") == _weights(ck / "b" / "last.pt")


def test_record_lengths_count_the_separator_prefix():
    assert list(record_lengths(10, np.array([0, 3, 7]), 2)) == [4, 5, 4]


def test_a_records_model_samples_whole_records(records_run, cli):
    run_dir, corpus, _ = records_run
    model = charrnn.load(run_dir, device="cpu")
    samples = list(model.generate(num_samples=4, length=200, temp=1.0, seed=3))
    assert len(samples) == 4
    for s in samples:  # each is one record: it ends at the separator (stripped) or when --length runs out
        assert "\n" not in s.text
        assert s.end == "stop" or s.tokens == 200
    assert any(s.end == "stop" for s in samples)
    kept = list(model.generate(num_samples=2, length=200, seed=3, stop=("\n",)))  # explicit: the separator kept
    assert all(s.text.endswith("\n") for s in kept if s.end == "stop")
    r = cli("sample", run_dir, "--num-samples", 3, "--length", 200, "--seed", 3, "--json")
    assert r.code == 0, r.err
    assert [json.loads(line)["index"] for line in r.out.splitlines()] == [1, 2, 3]


@pytest.mark.numerics
def test_record_scores_read_a_memory_map_a_window_at_a_time(tmp_path):
    """A records split is scored from its memory map (never copied whole), and ``total`` is the sum of the
    per-token figures."""
    recs = make_records(60, seed=8)
    tok = fit_tokenizer("char", "\n".join(recs) + "\n")
    ids, starts = encode_records(tok, "\n".join(recs) + "\n", "\n")
    f = tmp_path / "ids.bin"
    f.write_bytes(np.asarray(ids, np.uint8).tobytes())
    mapped = np.memmap(f, dtype=np.uint8, mode="r", shape=(len(ids),))
    model = _model(tok.vocab_size)
    dev, sep = torch.device("cpu"), separator_ids(tok, "\n")
    each = record_token_nll(model, ids, starts, sep, dev)
    assert np.array_equal(record_token_nll(model, mapped, starts, sep, dev), each)  # the same windows, same ids
    # the same float32 NLLs summed window by window in float64 rather than all at once: ~1e-15 relative
    assert record_token_nll(model, mapped, starts, sep, dev, total=True) == pytest.approx(float(each.sum()), rel=1e-12)
