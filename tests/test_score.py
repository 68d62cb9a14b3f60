"""charrnn score / Model.score: per-line nll that adds up to eval's total, independent lines,
per-character surprisal, unknown characters; checked against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import charrnn
import charrnn.evaluation.evaluate as ev
import charrnn.evaluation.score as sc
from charrnn.data.batching import eval_plan as real_eval_plan
from charrnn.errors import CharrnnError
from charrnn.evaluation.evaluate import evaluate_split
from charrnn.evaluation.score import score_lines
from charrnn.data.tokenizers import fit_tokenizer
from tests.conftest import CONTEXT_TEXT as TEXT, context_model as _model
from tests.conftest import fading_model as _fading_model

CPU = torch.device("cpu")
LN2 = math.log(2)
LINES = ("the quick brown fox.\n\nhow vexingly quick daft zebras jump;\n床前明月光，疑是地上霜。\n"
         "sphinx of black quartz, judge my vow. no newline at the end")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toks():
    return {"char": fit_tokenizer("char", TEXT), "byte": fit_tokenizer("byte", TEXT),
            "bpe": fit_tokenizer("bpe", TEXT, vocab_size=400)}


@torch.no_grad()
def _token_nll_direct(model, ids) -> np.ndarray:
    """-log p(ids[i+1] | ids[..i]) for every i, one forward from a fresh state."""
    seq = torch.as_tensor(np.asarray(ids), dtype=torch.long).view(1, -1)
    logits, _ = model(seq[:, :-1])
    return F.cross_entropy(logits[0].double(), seq[0, 1:], reduction="none").numpy()


def _line_token_counts(tok, text):
    """Tokens of each line, by encoding the lines one by one (a newline is always a token of its own)."""
    pieces = text.split("\n")
    return [len(tok.encode(p + ("\n" if i < len(pieces) - 1 else ""))) for i, p in enumerate(pieces)
            if p or i < len(pieces) - 1]


# ----------------------------------------------------------------------------- continuous

@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_continuous_lines_are_the_direct_token_nlls_summed_per_line(kind, toks):
    tok = toks[kind]
    model = _model(tok.vocab_size, seed=21)
    recs = score_lines(model, tok, LINES, CPU, per_char=True)
    ids = tok.encode(LINES)
    direct = np.concatenate([[0.0], _token_nll_direct(model, ids)])  # the first token is never predicted
    counts = _line_token_counts(tok, LINES)
    assert sum(counts) == len(ids) and len(recs) == len(counts) == 5
    edges = np.cumsum([0, *counts])
    for r, a, b, line in zip(recs, edges[:-1], edges[1:], LINES.split("\n")):
        assert r["text"] == line
        # the same float32 token NLLs (windows of the carried state vs one fused pass: ~1e-6 each), summed per
        # line: relative 1e-5
        assert r["nll"] == pytest.approx(direct[a:b].sum(), rel=1e-5)
        scored = [s for s in r["surprisal"] if s is not None]
        # per-character surprisal is stored rounded to 3 decimals of a bit: <= 5e-4 bits = 3.5e-4 nats per
        # character, below 2e-3 each
        assert sum(scored) * LN2 == pytest.approx(r["nll"], abs=2e-3 * len(scored) + 1e-6)
        assert len(r["surprisal"]) == len(line) + (r["line"] < 5)  # the newline is the line's last character
        assert r["bpc"] == pytest.approx(r["nll"] / LN2 / r["chars"])
    first = len(tok.decode(ids[:1]))
    assert recs[0]["surprisal"][:first] == [None] * first and None not in recs[0]["surprisal"][first:]
    assert [r["chars"] for r in recs] == [len(p) + (i < 4) - (first if i == 0 else 0)
                                          for i, p in enumerate(LINES.split("\n"))]
    assert recs[1] == {"line": 2, "text": "", "chars": 1, "nll": recs[1]["nll"], "bpc": recs[1]["bpc"],
                       "surprisal": recs[1]["surprisal"]}


@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_lines_add_up_to_evals_total_with_several_streams(kind, toks, monkeypatch):
    """Eval's layout is kept (streams warmed on the text before their cuts), so the identity holds for long
    texts too."""
    tok = toks[kind]
    text = TEXT[:2500]
    ids = tok.encode(text)
    monkeypatch.setattr(ev, "eval_plan",
                        lambda i, **kw: real_eval_plan(i, **{**kw, "max_streams": 5, "min_len": 60}))
    monkeypatch.setattr(ev, "EVAL_WINDOW", 37)
    model = _model(tok.vocab_size, seed=22)
    m = evaluate_split(model, tok, ids, len(text), len(text.encode()), CPU)
    recs = score_lines(model, tok, text, CPU)
    # the same float32 token NLLs, summed in float64 per line here and over the split there: relative ~1e-7
    assert sum(r["nll"] for r in recs) == pytest.approx(m["loss"] * m["tokens"], rel=1e-6)
    assert sum(r["chars"] for r in recs) == m["chars"]
    one = score_lines(model, tok, text, CPU)  # deterministic
    assert [r["nll"] for r in one] == [r["nll"] for r in recs]


@pytest.mark.numerics
def test_lines_equal_one_pass_over_the_whole_text(monkeypatch):
    """Each line's nll is the one a single pass over the whole text gives it (streams warmed before their cuts)."""
    words = TEXT.replace("\n", " \n ").split(" ")
    text = " ".join(np.random.default_rng(1).choice(words, 3000))[:12_000]
    tok = fit_tokenizer("char", text)
    forget, hidden = 0.95, 16
    model = _fading_model(tok.vocab_size, hidden, forget)
    one = np.concatenate([[0.0], ev.token_nlls(model, tok.encode(text), CPU, one_stream=True)])
    monkeypatch.setattr(ev, "eval_plan",
                        lambda i, **kw: real_eval_plan(i, **{**kw, "max_streams": 5, "min_len": 2000}))
    line_of = np.cumsum([c == "\n" for c in text]) - [c == "\n" for c in text]
    want = np.bincount(line_of, weights=one)
    # The warm-up's residual at a cut, for this model (see test_evaluate_sample's bound): at most
    # 2 max_v |w_v| sqrt(H) f^W / (1 - f)^2 nats over the tokens after it, so over the line(s) holding them;
    # rel 1e-5 covers float32 passes of different batch shapes.
    w_max = float(model.head.weight.detach().norm(dim=1).max())
    per_cut = 2 * w_max * math.sqrt(hidden) * forget ** ev.EVAL_WARM / (1 - forget) ** 2
    recs = score_lines(model, tok, text, CPU)
    assert len(recs) == len(want) > 100
    assert [r["nll"] for r in recs] == pytest.approx(want.tolist(), rel=1e-5, abs=per_cut)
    # sensitivity: without the warm-up the lines after each cut are scored from a fresh state
    monkeypatch.setattr(ev, "EVAL_WARM", 0)
    cold = [r["nll"] for r in score_lines(model, tok, text, CPU)]
    assert max(abs(c - w) for c, w in zip(cold, want)) > 1.0


@pytest.mark.numerics
def test_byte_model_puts_a_characters_bytes_together(toks):
    tok = toks["byte"]
    model = _model(256, seed=23)
    text = "a床\n明b\n"
    rec = score_lines(model, tok, text, CPU, per_char=True)
    direct = _token_nll_direct(model, tok.encode(text)) / LN2   # bytes 1.. : 床 is bytes 1-3, 明 bytes 5-7
    # three bytes' surprisals, each rounded to 3 decimals (5e-4 bits): <= 1.5e-3
    assert rec[0]["surprisal"][1] == pytest.approx(direct[0:3].sum(), abs=2e-3)
    assert rec[1]["surprisal"][0] == pytest.approx(direct[4:7].sum(), abs=2e-3)
    assert [len(r["surprisal"]) for r in rec] == [3, 3]


def test_a_first_token_of_several_characters_is_context_only(toks):
    tok = toks["bpe"]
    model = _model(tok.vocab_size, seed=24)
    text = "the quick brown fox\njumps\n"
    ids = tok.encode(text)
    first = len(tok.decode(ids[:1]))
    assert first >= 2
    rec = score_lines(model, tok, text, CPU, per_char=True)
    assert rec[0]["surprisal"][:first] == [None] * first and rec[0]["chars"] == 20 - first


# ----------------------------------------------------------------------------- independent

@pytest.mark.numerics
@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_independent_lines_are_scored_after_a_newline_from_a_fresh_state(kind, toks, monkeypatch):
    tok = toks[kind]
    monkeypatch.setattr(sc, "LINE_BATCH", 2)   # batches of mixed lengths (padding) ...
    monkeypatch.setattr(sc, "EVAL_WINDOW", 7)  # ... read in windows with the state carried
    model = _model(tok.vocab_size, seed=25)
    recs = score_lines(model, tok, LINES, CPU, independent=True, per_char=True)
    nl = list(tok.encode("\n"))
    for r, piece in zip(recs, LINES.split("\n")):
        line = piece + ("\n" if r["line"] < 5 else "")
        want = _token_nll_direct(model, nl + list(tok.encode(line))).sum()
        # the carried state through windows of 7 against one fused pass: float32, ~1e-6 per token
        assert r["nll"] == pytest.approx(want, rel=1e-5)
        assert r["chars"] == len(line) and None not in r["surprisal"]
        # surprisals rounded to 3 decimals of a bit: <= 3.5e-4 nats per character
        assert sum(r["surprisal"]) * LN2 == pytest.approx(r["nll"], abs=2e-3 * len(line))
    # the same line scores the same wherever it stands; in context it scores differently
    twice = score_lines(model, tok, "pack my box\nsphinx of\npack my box\n", CPU, independent=True)
    # the same line from the same fresh state: the same float32 operations; 1e-6 allows a batch position's
    # different blocking
    assert twice[0]["nll"] == pytest.approx(twice[2]["nll"], rel=1e-6)
    cont = score_lines(model, tok, "pack my box\nsphinx of\npack my box\n", CPU)
    assert abs(cont[2]["nll"] - twice[2]["nll"]) > 1e-3


def test_independent_needs_a_model_that_knows_newlines():
    tok = fit_tokenizer("char", "abc abc")
    with pytest.raises(CharrnnError, match="never saw a newline"):
        score_lines(_model(tok.vocab_size), tok, "abc", CPU, independent=True)


# ----------------------------------------------------------------------------- unknown characters

def test_unknown_characters_fail_or_are_skipped_and_counted(toks):
    tok = toks["char"]
    model = _model(tok.vocab_size, seed=26)
    text = "the Ω fox\nΩΩ\njump ЖЖ\n"
    with pytest.raises(CharrnnError, match="never saw.*'Ω'.*--skip-unknown"):
        score_lines(model, tok, text, CPU)
    recs = score_lines(model, tok, text, CPU, skip_unknown=True, per_char=True)
    assert [(r["text"], r["skipped"], r["chars"]) for r in recs] == [("the  fox", 1, 8), ("", 2, 1), ("jump ", 2, 6)]
    assert [len(r["surprisal"]) for r in recs] == [9, 1, 6]
    plain = score_lines(model, tok, "the  fox\n\njump \n", CPU)
    # the same ids scored twice: identical up to float32 blocking, ~1e-7
    assert [r["nll"] for r in recs] == pytest.approx([r["nll"] for r in plain], rel=1e-6)


def test_empty_or_one_token_texts():
    tok = fit_tokenizer("char", "ab\n")
    model = _model(tok.vocab_size)
    with pytest.raises(CharrnnError, match="empty"):
        score_lines(model, tok, "", CPU)
    with pytest.raises(CharrnnError, match="too short to score"):
        score_lines(model, tok, "a", CPU)
    assert score_lines(model, tok, "a", CPU, independent=True)[0]["chars"] == 1


# ----------------------------------------------------------------------------- command line and API

@pytest.mark.numerics
def test_cli_json_lines_add_up_to_eval_file(trained_run, cli, tmp_path):
    run_dir, corpus, _ = trained_run
    r = cli("score", run_dir, corpus, "--json", "--device", "cpu")
    assert r.code == 0, r.err
    recs = [json.loads(line) for line in r.out.splitlines()]
    assert [x["line"] for x in recs] == list(range(1, len(corpus.read_text(encoding="utf-8").splitlines()) + 1))
    m = json.loads(cli("eval", run_dir, "--file", corpus, "--json", "--device", "cpu").out)
    # score's line layout and eval's stream layout read the text in different windows: float32 (~1e-6 per token)
    # plus the JSON's 6-digit rounding of every line's nll (5e-7 each, over ~100 lines)
    assert sum(x["nll"] for x in recs) == pytest.approx(m["loss"] * m["tokens"], rel=1e-4)
    assert sum(x["chars"] for x in recs) == m["chars"]
    assert "total:" in r.err and "bits/char" in r.err
    model = charrnn.load(run_dir, device="cpu")
    assert model.score(file=corpus) == recs
    assert model.score(corpus.read_text(encoding="utf-8")) == recs
    lines = model.score_lines(file=corpus)  # one line after another, the count known at once
    assert len(lines) == len(recs) and list(lines) == recs


def test_cli_table_and_stdin(trained_run, cli, monkeypatch, tmp_path):
    import io
    import sys

    run_dir, _, _ = trained_run
    f = tmp_path / "two.txt"
    f.write_text("the quick brown fox\n" + "pack my box " * 10 + "\n", encoding="utf-8")
    r = cli("score", run_dir, f, "--device", "cpu")
    assert r.code == 0, r.err
    head, one, two, total = r.out.splitlines()
    assert head.split() == ["line", "chars", "bpc", "text"]
    assert one.split()[:2] == ["1", "19"] and one.endswith("the quick brown fox")
    assert two.split()[:2] == ["2", "121"] and two.endswith("…") and len(two) < 90
    assert total.startswith("total: 2 lines, 140 characters, ")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f.read_bytes())))
    r2 = cli("score", run_dir, "-", "--device", "cpu")
    assert r2.code == 0 and r2.out == r.out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ab\xff\n")))
    r3 = cli("score", run_dir, "-", "--device", "cpu")  # read through a temporary copy, named as what it is
    assert r3.code != 0 and "input '<stdin>' is not valid UTF-8 (bad byte 0xff at offset 2)" in r3.err


def test_cli_independent_ranks_lines(trained_run, cli, tmp_path):
    run_dir, _, _ = trained_run
    f = tmp_path / "cands.txt"
    f.write_text("the quick brown fox jumps\nxq zzv kkq jjw qqx zzy\n", encoding="utf-8")
    r = cli("score", run_dir, f, "--device", "cpu", "--json", "--independent", "--per-char")
    assert r.code == 0, r.err
    a, b = (json.loads(line) for line in r.out.splitlines())
    assert a["bpc"] < b["bpc"]  # the trained text's words are less surprising than noise
    assert len(a["surprisal"]) == 26 and None not in a["surprisal"]


@pytest.mark.parametrize("args,needle", [
    (["--per-char"], "--per-char adds a list of surprisals to every JSON line; add --json"),
    (["--precision", "fp16"], "'fp16' is not one of"),
])
def test_cli_bad_options(trained_run, cli, tmp_path, args, needle):
    run_dir, corpus, _ = trained_run
    r = cli("score", run_dir, corpus, *args)
    assert r.code == 2 and needle in r.err and r.out == "" and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize("content,needle", [(b"", "is empty"), (b"the \xff fox", "not valid UTF-8"),
                                            ("the Ω fox".encode(), "--skip-unknown")])
def test_cli_bad_files(trained_run, cli, tmp_path, content, needle):
    run_dir, _, _ = trained_run
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    r = cli("score", run_dir, f, "--device", "cpu")
    assert r.code == 2 and needle in r.err and r.err.startswith("error: ") and len(r.err.splitlines()) == 1
    assert cli("score", run_dir, tmp_path / "missing.txt").err.count("does not exist") == 1


def test_cli_skip_unknown_reports_the_count(trained_run, cli, tmp_path):
    run_dir, _, _ = trained_run
    f = tmp_path / "u.txt"
    f.write_text("the Ω fox\nΩЖ dog\n", encoding="utf-8")
    r = cli("score", run_dir, f, "--device", "cpu", "--json", "--skip-unknown")
    assert r.code == 0, r.err
    assert [json.loads(line)["skipped"] for line in r.out.splitlines()] == [1, 2]
    assert "skipped 3 characters the model never saw" in r.err


def test_api_score_errors(trained_run):
    model = charrnn.load(trained_run[0], device="cpu")
    with pytest.raises(CharrnnError, match="unknown scoring option 'per_line'; did you mean 'per_char'"):
        model.score("the fox", per_line=True)
    with pytest.raises(CharrnnError, match="give a text or a file"):
        model.score()
    with pytest.raises(CharrnnError, match="must be a string"):
        model.score(b"the fox")


def test_score_and_eval_options_come_from_their_tables():
    from charrnn.cli import cli
    from charrnn.settings import EVAL, SCORE

    for command, table in (("score", SCORE), ("eval", EVAL)):
        opts = {p.name: p for p in cli.commands[command].params}
        for s in table:
            assert opts[s.name].default == s.default and opts[s.name].help == s.help, (command, s.name)
    import inspect

    params = inspect.signature(charrnn.Model.score).parameters
    assert list(params)[:2] == ["self", "text"] and {s.name for s in SCORE} <= set(params)
