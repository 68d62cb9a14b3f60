"""charrnn export: ONNX with PyTorch's log-probabilities (onnxruntime), the web page writing what Python
writes (headless Chromium), weights-only checkpoints every command reads, and the refusals.

Skipped with the reason where onnxruntime (pip install 'charrnn[onnx]') or Chromium is absent."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import charrnn
from charrnn.data.tokenizers import ByteTokenizer, CharTokenizer, fit_tokenizer
from charrnn.errors import CharrnnError
from charrnn.export import html as page_module
from charrnn.export.weights import dequantized
from charrnn.generation.sample import Job, sample_options
from charrnn.model.checkpoint import save_checkpoint
from charrnn.model.network import RNNLM
from tests.conftest import TINY_TEXT, make_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
try:
    import onnxruntime as ort
except ImportError:
    ort = None
needs_ort = pytest.mark.skipif(ort is None, reason="onnxruntime is not installed (pip install 'charrnn[onnx]')")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(apt-get install -y chromium)")

# fp32 against fp32 by different kernels (onnxruntime's LSTM/GRU/RNN and MatMul, oneDNN/BLAS in PyTorch):
# each dot product of K <= 64 terms may differ by about K * 2^-24 * sum|w x|, ~1e-5 for these sizes; the
# log-softmax adds a few ulps of values <= ~20. Trained and freshly initialised recurrences are
# contractive (forget gates < 1, |W_hh| < 1), so differences do not compound over 1,000 steps:
# observed <= 3e-6; 1e-4 leaves a 30x margin and still catches any wrong gate, bias or state.
LOGP_TOL = 1e-4
# Greedy text equal across JavaScript (float64 sums stored as fp32) and PyTorch (fp32): both compute
# the same log-probabilities to ~1e-5 (as above), so argmax agrees wherever the top two differ by more;
# the models below are checked to have margins of at least MIN_MARGIN at every step of the text.
MIN_MARGIN = 1e-3


def fit_tiny(cell="lstm", tok=None, steps=200) -> tuple[RNNLM, object, float]:
    """A 2x32 model trained in-process on TINY_TEXT until it writes it back with clear argmax margins."""
    torch.manual_seed(0)
    tok = tok or CharTokenizer.fit(TINY_TEXT)
    ids = torch.as_tensor(tok.encode(TINY_TEXT), dtype=torch.long)
    m = make_model(tok.vocab_size, cell, layers=2, hidden=32, emb=16, seed=0, dropout=0.0).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (8,), generator=g).tolist()
        x, y = torch.stack([ids[a:a + 64] for a in starts]), torch.stack([ids[a + 1:a + 65] for a in starts])
        loss, _ = m.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), tok, loss.item()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The trained tiny char model as a checkpoint: (path, charrnn.Model)."""
    model, tok, loss = fit_tiny()
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    save_checkpoint(str(path), model=model, tokenizer=tok, run_config=None,
                    train_state={"best": {"bpc": loss / math.log(2), "step": 200}})
    return path, charrnn.load(path, device="cpu")


def random_model(tok, cell="lstm", **kw) -> RNNLM:
    emb = kw.pop("emb", 8)
    return make_model(tok.vocab_size, cell, layers=2, hidden=16, emb=emb, seed=1, dropout=0.0, **kw)


MODELS = [(cell, head) for cell in ("lstm", "gru", "rnn") for head in ("full", "tied", "adaptive")]


def head_kw(head: str) -> dict:
    return {"tied": {"tie_weights": True, "emb": 16}, "adaptive": {"head": "adaptive", "cutoffs": (40, 120)},
            "full": {}}[head]


def greedy_margins(model, tok, text: str, prime: str) -> float:
    """The smallest gap between the two most likely tokens along a greedy text (after its prime)."""
    ids = tok.encode(text if prime else "\n" + text)
    with torch.no_grad():
        logp, _ = model(torch.as_tensor(ids, dtype=torch.long).view(1, -1))
    top = logp[0].topk(2, -1).values
    start = max(len(tok.encode(prime)), 1) - 1
    return (top[start:-1, 0] - top[start:-1, 1]).min().item()


# ----------------------------------------------------------------------------- ONNX

def session(model, tok):
    from charrnn.export.onnx import onnx_bytes

    return ort.InferenceSession(onnx_bytes(model, tok, {}, ""), providers=["CPUExecutionProvider"])


def ort_logp(sess, model, ids: np.ndarray, stepped: bool) -> np.ndarray:
    """(T, V) log-probabilities from onnxruntime, one token per run (stepped) or the whole sequence at once."""
    c = model.cfg
    names = ["h", "c"] if c.cell == "lstm" else ["h"]
    state = {n: np.zeros((c.layers, 1, c.hidden), np.float32) for n in names}
    rows = []
    for chunk in (np.split(ids, len(ids)) if stepped else [ids]):
        logp, *new = sess.run(None, {"tokens": chunk.reshape(1, -1).astype(np.int64), **state})
        state.update(zip(names, new))
        rows.append(logp[0])
    return np.concatenate(rows)


@needs_ort
@pytest.mark.parametrize("cell,head", MODELS)
def test_onnx_gives_pytorchs_log_probabilities_stepped_and_whole(cell, head):
    tok = ByteTokenizer()
    model = random_model(tok, cell, **head_kw(head))
    if head == "adaptive":  # a frequency order that is not the identity: the rank gather matters
        model.head.init_bias(np.random.default_rng(0).integers(1, 1000, tok.vocab_size))
    ids = tok.encode((TINY_TEXT * 2)[:1000])
    with torch.no_grad():
        want = model(torch.as_tensor(ids, dtype=torch.long).view(1, -1))[0][0].numpy()
    sess = session(model, tok)
    for stepped in (True, False):
        np.testing.assert_allclose(ort_logp(sess, model, ids, stepped), want, atol=LOGP_TOL, rtol=0)


@needs_ort
def test_onnx_of_a_trained_model_and_its_char_vocabulary(tiny):
    path, m = tiny
    ids = m.tokenizer.encode((TINY_TEXT * 2)[:1000])
    with torch.no_grad():
        want = m.module(torch.as_tensor(ids, dtype=torch.long).view(1, -1))[0][0].numpy()
    sess = session(m.module, m.tokenizer)
    np.testing.assert_allclose(ort_logp(sess, m.module, ids, True), want, atol=LOGP_TOL, rtol=0)
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["charrnn"])
    assert meta["vocab"] == {"kind": "char", "codepoints": m.tokenizer.codepoints.tolist()}
    assert (meta["cell"], meta["layers"], meta["hidden"], meta["state"]) == ("lstm", 2, 32, ["h", "c"])
    assert meta["start_id"] == int(m.tokenizer.encode("\n")[0])


@needs_ort
def test_onnx_of_a_subword_model_decodes_with_its_metadata():
    tok = fit_tokenizer("bpe", TINY_TEXT, 300)
    model = random_model(tok)
    sess = session(model, tok)
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["charrnn"])
    pieces = meta["vocab"]["pieces"]
    ids = tok.encode(TINY_TEXT[:200])
    data = b"".join(bytes([p]) if isinstance(p, int) else p.encode() for p in (pieces[i] for i in ids))
    assert data.decode("utf-8") == tok.decode(ids) == TINY_TEXT[:200]
    with torch.no_grad():
        want = model(torch.as_tensor(ids, dtype=torch.long).view(1, -1))[0][0].numpy()
    np.testing.assert_allclose(ort_logp(sess, model, ids, False), want, atol=LOGP_TOL, rtol=0)


@needs_ort
@pytest.mark.integration
def test_the_example_script_prints_what_charrnn_sample_prints(cli, tiny, tmp_path):
    path, m = tiny
    onnx_path = tmp_path / "tiny.onnx"
    assert cli("export", path, "--format", "onnx", "-o", onnx_path).code == 0
    for prime in ("the ", ""):
        # --precision fp32: 'auto' multiplies in bf16 on CPUs that have bf16 hardware; the ONNX file is fp32
        want = cli("sample", path, "--prime", prime, "--temp", "0", "--length", 500, "--precision", "fp32")
        assert want.code == 0 and len(want.out) > 500
        got = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_sample.py"), str(onnx_path),
                              "--prime", prime, "--temp", "0", "--length", "500"],
                             capture_output=True, text=True, encoding="utf-8", timeout=300)
        assert got.returncode == 0, got.stderr
        assert got.stdout == want.out
    sampled = [subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_sample.py"), str(onnx_path),
                               "--temp", "0.8", "--seed", "3", "--length", "100"],
                              capture_output=True, text=True, encoding="utf-8", timeout=300).stdout for _ in range(2)]
    assert sampled[0] == sampled[1] and len(sampled[0]) > 100


# ----------------------------------------------------------------------------- the web page

def chromium(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    """The page after its generation finished: virtual time runs every timer the page sets."""
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'chrome-profile'}", "--virtual-time-budget=600000",
                           *args, url], capture_output=True, text=True, timeout=300, cwd=tmp_path)


def page_output(tmp_path, page: Path, fragment: str) -> str:
    dom = chromium(tmp_path, f"{page.as_uri()}#{fragment}", "--dump-dom").stdout
    assert 'data-state="done"' in dom, dom[-2000:]
    return html.unescape(re.search(r'<div id="output">(.*?)</div>', dom, re.S).group(1))


def export_page(m, tmp_path, name: str, *args) -> Path:
    out = tmp_path / name
    m.export(out, "html", quantize=args[0] if args else None)
    return out


def python_greedy(module, tok, prime: str, length: int) -> str:
    opts = sample_options({"temp": 0, "length": length, "precision": "fp32"})
    return next(Job(module, tok, prime, opts).samples()).text


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize("quantize", [None, "int8", "fp16"])
def test_the_pages_greedy_text_is_pythons(tiny, tmp_path, quantize):
    """fp32: the page writes what charrnn sample --temp 0 writes; quantised: what Python writes from the
    same quantised weights."""
    _, m = tiny
    page = export_page(m, tmp_path, f"tiny-{quantize}.html", *([quantize] if quantize else []))
    module = dequantized(m.module, quantize)
    for prime in ("the ", "床前"):
        want = python_greedy(module, m.tokenizer, prime, 300)
        if quantize is None:
            assert want == m.sample(prime, temp=0, length=300, precision="fp32")
        assert greedy_margins(module, m.tokenizer, want, prime) > MIN_MARGIN  # the comparison is well posed
        assert len(set(want)) > 15  # real text, not one repeated character
        assert page_output(tmp_path, page, f"prime={_q(prime)}&temp=0&length=300&seed=1&run=1") == want


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize("cell,head,tok", [("gru", "adaptive", ByteTokenizer()), ("rnn", "tied", None)])
def test_every_cell_head_and_page_tokenizer(tmp_path, cell, head, tok):
    tok = tok or CharTokenizer.fit(TINY_TEXT)
    model = random_model(tok, cell, **head_kw(head))
    with torch.no_grad():  # spread the logits: clear argmax margins from an untrained model
        model.embed.weight.mul_(4)
    page = tmp_path / "page.html"
    page.write_bytes(page_module.page_bytes(model, tok, {}, str(tmp_path / "m.pt")))
    want = python_greedy(model, tok, "the ", 100)
    assert greedy_margins(model, tok, want, "the ") > MIN_MARGIN
    assert page_output(tmp_path, page, "prime=the%20&temp=0&length=100&run=1") == want


@needs_chromium
@pytest.mark.slow
def test_a_seeded_page_sample_is_reproducible_and_the_page_is_fast(tiny, tmp_path, capsys):
    _, m = tiny
    page = export_page(m, tmp_path, "tiny.html")
    frag = "prime=the%20&temp=0.9&top_p=0.95&length={n}&seed={s}&run=1"
    first, again, other = (page_output(tmp_path, page, frag.format(n=300, s=s)) for s in (7, 7, 8))
    assert first == again and first != other and first.startswith("the ") and len(first) == 304


@needs_chromium
@pytest.mark.slow
def test_the_pages_speed_beside_charrnn_sample(tmp_path, capsys):
    """Not a target (benchmarks hold those): prints chars/s of a 2x256 LSTM in the page and in charrnn sample
    on this machine, for docs/BENCHMARKS.md. The page's rate comes from wall time at two lengths, so the
    browser's start-up cancels out (a timer inside the page reads virtual time under --virtual-time-budget)."""
    tok = CharTokenizer.fit(TINY_TEXT)
    model = make_model(tok.vocab_size, layers=2, hidden=256, emb=64, seed=0, dropout=0.0)
    save_checkpoint(str(tmp_path / "big.pt"), model=model, tokenizer=tok, run_config=None)
    m = charrnn.load(tmp_path / "big.pt", device="cpu")
    page = export_page(m, tmp_path, "big.html")
    times = {}
    for n in (100, 2100):
        t0 = time.perf_counter()
        assert len(page_output(tmp_path, page, f"prime=the%20&temp=0.8&length={n}&seed=1&run=1")) == n + 4
        times[n] = time.perf_counter() - t0
    page_rate = 2000 / max(times[2100] - times[100], 1e-3)
    t0 = time.perf_counter()
    m.sample("the ", temp=0.8, length=2000, seed=1, precision="fp32")
    py_rate = 2000 / (time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\n2x256 LSTM, {tok.vocab_size} chars: the page {page_rate:,.0f} chars/s in headless Chromium, "
              f"charrnn sample {py_rate:,.0f} chars/s (this machine, now, {torch.get_num_threads()} thread)")


@needs_chromium
@pytest.mark.slow
def test_the_page_shows_the_model_and_a_screenshot(tiny, tmp_path):
    """The screenshot in docs/export.md is this one: CHARRNN_UPDATE_DOCS=1 writes docs/images/export.png."""
    path, m = tiny
    page = export_page(m, tmp_path, "tiny.html")
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # nothing fetched
    dom = chromium(tmp_path, f"{page.as_uri()}#prime=the%20&temp=0.8&length=400&seed=2&run=1", "--dump-dom").stdout
    about = html.unescape(re.search(r'<div id="about">(.*?)</div>', dom).group(1))
    assert re.fullmatch(r"LSTM 2×32, \d+k parameters, char tokenizer \(\d+ tokens\), validation \d\.\d{3} bits/char",
                        about), about
    assert '<h1 id="name">tiny</h1>' in dom
    png = tmp_path / "export.png"
    # English only: headless Chromium here may have no CJK font
    chromium(tmp_path, f"{page.as_uri()}#prime=the%20&temp=0&length=52&seed=2&run=1", f"--screenshot={png}",
             "--window-size=1000,700")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    if os.environ.get("CHARRNN_UPDATE_DOCS"):
        shutil.copy(png, ROOT / "docs" / "images" / "export.png")


# ----------------------------------------------------------------------------- weights-only checkpoints

@pytest.mark.slow
@pytest.mark.integration
def test_a_weights_only_checkpoint_goes_everywhere_but_resume(cli, run_copy, tmp_path):
    run_dir, corpus, ckdir = run_copy
    full, half = tmp_path / "w.pt", tmp_path / "w16.pt"
    assert cli("export", run_dir, "--format", "pt", "-o", full).code == 0
    assert cli("export", run_dir, "--format", "pt", "--half", "-o", half).code == 0
    assert half.stat().st_size < 0.6 * full.stat().st_size < 0.6 * (run_dir / "best.pt").stat().st_size
    ckpt = torch.load(full, weights_only=True)
    assert ckpt["optimizer"] is None and ckpt["weights_only"] and "bpc" in ckpt["train_state"]["best"]
    sample = ["--prime", "the ", "--temp", "0", "--length", 80, "--precision", "fp32"]
    want = cli("sample", run_dir, *sample)
    assert cli("sample", full, *sample).out == want.out
    assert cli("sample", half, *sample).code == 0
    for what in (("eval", "--file", corpus), ("score", corpus, "--checkpoint")):
        a = cli(*what, run_dir, "--device", "cpu")
        b = cli(*what, full, "--device", "cpu")
        assert a.code == b.code == 0 and a.out.replace(str(run_dir / "best.pt"), "") == b.out.replace(str(full), "")
    assert "best val" in cli("inspect", half).out
    assert cli("viz", half, "--text", "the quick brown fox", "-o", tmp_path / "viz.html").code == 0
    r = cli("train", corpus, "--init-from", half, "--checkpoint-dir", tmp_path / "ck", "--max-steps", 2,
            "--eval-every", 2, "--save-every", 2, "--batch-size", 4, "--seq-len", 16)
    assert r.code == 0, r.err
    before = sorted(os.listdir(tmp_path))
    r = cli("train", "--resume", full)
    assert r.code != 0 and r.err.strip().count("\n") == 0 and "weights-only" in r.err and "--init-from" in r.err
    assert sorted(os.listdir(tmp_path)) == before


# ----------------------------------------------------------------------------- refusals

def test_bad_requests_are_one_line_and_write_nothing(cli, tiny, tmp_path, monkeypatch):
    path, m = tiny
    out = tmp_path / "out.html"
    out.write_text("mine")
    cases = [
        (("--format", "gif", "-o", tmp_path / "x"), "Invalid value for '--format'"),
        (("--format", "html", "-o", out), "already exists; pass --force"),
        (("--format", "onnx", "--quantize", "int8", "-o", tmp_path / "x.onnx"), "--quantize applies to --format html"),
        (("--format", "html", "--half", "-o", tmp_path / "x.html"), "--half applies to --format pt"),
        (("--format", "pt", "-o", tmp_path / "no" / "x.pt"), "does not exist"),
    ]
    for args, msg in cases:
        r = cli("export", path, *args)
        assert r.code != 0 and msg in r.err and r.err.strip().count("\n") == 0, r.err
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]
    monkeypatch.setattr(page_module, "MAX_PAGE_BYTES", 40_000)  # the tiny model's fp32 page is ~60 kB
    r = cli("export", path, "--format", "html", "-o", out, "--force")
    assert r.code != 0 and "MiB page, over the" in r.err and "--quantize int8" in r.err
    assert out.read_text() == "mine"
    assert cli("export", path, "--format", "html", "--quantize", "int8", "-o", out, "--force").code == 0
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_subword_model_is_refused_for_the_page_with_the_reason(tmp_path):
    tok = fit_tokenizer("bpe", TINY_TEXT, 300)
    with pytest.raises(CharrnnError, match=r"^the web page reads characters or bytes; a bpe model needs "
                                           r"sentencepiece's encoder.*--format onnx$"):
        page_module.page_bytes(random_model(tok), tok, {})


def test_the_quantised_weights_cost_little(tiny):
    """int8 and fp16 change the model a little (size and bits/char in docs/export.md: benchmarks/export.py)."""
    _, m = tiny
    ids = torch.as_tensor(m.tokenizer.encode(TINY_TEXT[:600]), dtype=torch.long).view(1, -1)
    nll = {}
    for q in (None, "fp16", "int8"):
        with torch.no_grad():
            nll[q] = dequantized(m.module, q).token_nll(ids[:, :-1], ids[:, 1:])[0].mean().item()
    # fp16 keeps 11 significant bits, int8 about 8 of each row's largest weight: relative weight errors
    # of 2^-11 and ~2^-8 move a tiny model's mean loss by well under 1% and 5%
    assert abs(nll["fp16"] - nll[None]) < 0.01 * nll[None] + 1e-3
    assert abs(nll["int8"] - nll[None]) < 0.05 * nll[None] + 1e-2
