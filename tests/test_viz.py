"""charrnn viz: activations and surprisal behind the page, the self-contained page itself, and a
headless-Chromium look at it (skipped where Chromium is not installed)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
import torch

from charrnn.model.checkpoint import load_model
from charrnn.errors import CharrnnError
from charrnn.data.tokenizers import ByteTokenizer, CharTokenizer, fit_tokenizer
from charrnn.reports.viz import (check_selection, correlated_units, layer_states, page_data, render, segments, surprisal_bits,
                         text_features, token_logprobs)
from tests.conftest import TINY_TEXT, make_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread, no stalls


def random_model(cell="lstm", vocab=9, layers=3, hidden=6, emb=4, **kw):
    model = make_model(vocab, cell, layers=layers, hidden=hidden, emb=emb, seed=0, dropout=0.0, **kw)
    with torch.no_grad():  # biases start at 0/1: perturb everything so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def page_json(html: str) -> dict:
    start = html.index('<script type="application/json" id="data">')
    start = html.index(">", start) + 1
    return json.loads(html[start:html.index("</script>", start)])


def page_acts(data: dict, layer: int, state: str) -> np.ndarray:
    """(units, segments) real values of a layer's embedded units, as the page's JavaScript reads them."""
    q = np.frombuffer(base64.b64decode(data["act"][layer - 1][state]), np.int8)
    q = q.reshape(len(data["units"][layer - 1]), -1)
    return q / 127 * np.array(data["scale"][layer - 1][state])[:, None]


@pytest.mark.numerics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_layers_states_match_the_fused_stacked_rnn(cell):
    model = random_model(cell)
    ids = np.random.default_rng(0).integers(0, 9, 25)
    hs, cs = layer_states(model, ids)
    assert len(hs) == 3 and all(h.shape == (25, 6) for h in hs) and (cs is None) == (cell != "lstm")
    with torch.no_grad():
        x = model.embed(torch.as_tensor(ids).view(1, -1))
        for t in range(1, 26):  # the stacked nn.LSTM/GRU/RNN's final state of every prefix = our step t
            out, st = model.rnn(x[:, :t])
            h_n, c_n = st if cell == "lstm" else (st, None)
            for layer in range(3):
                # the per-layer, per-step cells against the stacked fused kernel: float32 sums in another order,
                # ~sqrt(hidden) eps per step through <= 25 steps: < 1e-5
                torch.testing.assert_close(hs[layer][t - 1], h_n[layer, 0], atol=1e-5, rtol=1e-5)
                if c_n is not None:
                    torch.testing.assert_close(cs[layer][t - 1], c_n[layer, 0], atol=1e-5, rtol=1e-5)
        # as above: the same recurrence, another kernel, float32
        torch.testing.assert_close(hs[-1], out[0], atol=1e-5, rtol=1e-5)


@pytest.mark.numerics
@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_surprisal_is_minus_log2_of_the_softmax(head):
    kw = {"head": "adaptive", "cutoffs": (10,)} if head == "adaptive" else {}
    model = random_model(vocab=40, layers=2, hidden=8, **kw)
    ids = np.random.default_rng(1).integers(0, 40, 30)
    logp = token_logprobs(model, ids)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids).view(1, -1))
    p = torch.softmax(logits[0].double(), -1)
    want = [-math.log2(p[t - 1, ids[t]]) for t in range(1, 30)]
    s = surprisal_bits(logp, ids)
    assert math.isnan(s[0])
    # surprisal from float32 log-probs against float64 softmax: float32 logsumexp over 40 logits is good to ~40
    # eps = 5e-6 of the logits' size (~4 nats), relative to a surprisal that can be as small as ~0.1 bit: 1e-4
    np.testing.assert_allclose(s[1:], want, rtol=1e-4)
    # float32 probabilities over 40 tokens sum to 1 within 40 eps = 5e-6
    np.testing.assert_allclose(logp.exp().sum(1), 1.0, rtol=1e-5)


def test_segments_follow_characters_tokens_and_bytes():
    text = "a床b\n"
    char = CharTokenizer.fit(text)
    assert segments(char, char.encode(text), text) == [(0, 1, 0, 1), (1, 2, 1, 2), (2, 3, 2, 3), (3, 4, 3, 4)]
    byte = ByteTokenizer()
    assert segments(byte, byte.encode(text), text) == [(0, 1, 0, 1), (1, 2, 1, 4), (2, 3, 4, 5), (3, 4, 5, 6)]
    bpe = fit_tokenizer("bpe", TINY_TEXT, vocab_size=300)
    text = TINY_TEXT[:200] + "ש!"  # Hebrew: byte-fallback pieces
    ids = bpe.encode(text)
    segs = segments(bpe, ids, text)
    assert "".join(text[a:b] for a, b, _, _ in segs) == text
    assert [s[2] for s in segs[1:]] == [s[3] for s in segs[:-1]] and segs[-1][3] == len(ids)
    assert all(bpe.decode(ids[ts:te]) == text[a:b] for a, b, ts, te in segs)
    assert any(b - a > 2 for a, b, _, _ in segs)  # subwords span several characters
    assert (len(text) - 2, len(text) - 1, len(ids) - 3, len(ids) - 1) in segs  # ש = two byte pieces


def test_a_byte_model_colours_whole_characters():
    model = random_model(vocab=256, layers=2, hidden=8)
    text = "床前 ok"
    data = page_data(model, ByteTokenizer(), text)
    assert data["segs"] == list(text) and data["s"][0] is None
    s = surprisal_bits(token_logprobs(model, ByteTokenizer().encode(text)), ByteTokenizer().encode(text))
    assert data["s"][1] == pytest.approx(s[3:6].sum(), abs=2e-3)  # 前: the sum over its three bytes
    assert any(re.fullmatch(r"(<0x[0-9A-F]{2}>)+", v) for v in data["vocab"].values())  # lone bytes, labelled


def test_text_features_track_quotes_brackets_and_columns():
    text = 'f("a(b", [1])\nit\'s \'q\\\'x\''
    f = text_features(text)
    inside = "".join("1" if v else "0" for v in f["inside quotes"])
    assert inside == "00" + "1111" + "0" * 13 + "11111" + "0"  # the apostrophe of it's is no quote
    brackets = "".join("1" if v else "0" for v in f["inside brackets"])
    assert brackets == "0" + "1" * 11 + "0" * 13  # the ( inside the string does not count
    assert list(f["position in line"][:3]) == [1, 2, 3] and f["position in line"][13] == 0


def test_correlated_units_finds_a_planted_unit():
    rng = np.random.default_rng(0)
    feat = (rng.random(300) > 0.5).astype(float)
    cols = rng.normal(size=(300, 20))
    cols[:, 7] = -2 * feat + 0.1 * rng.normal(size=300)
    labels = [(1 + u // 10, "h", u % 10) for u in range(20)]
    found, absent = correlated_units(cols, labels, {"quotes": feat, "never": np.zeros(300)})
    assert found[0] == {"feature": "quotes", "layer": 1, "state": "h", "unit": 7, "r": pytest.approx(-1, abs=0.01)}
    assert absent == ["never"]


@pytest.mark.numerics
def test_viz_page_holds_the_models_numbers(cli, trained_run, tmp_path):
    run_dir, _, _ = trained_run
    out = tmp_path / "page.html"
    text = TINY_TEXT[:300]
    r = cli("viz", run_dir, "--text", text, "-o", out)
    assert r.code == 0, r.err
    assert f"open file://{out}" in r.err
    html = out.read_text(encoding="utf-8")
    data = page_json(html)
    model, tok, _ = load_model(str(run_dir / "best.pt"))
    ids = tok.encode(text)
    hs, cs = layer_states(model, ids)
    assert data["segs"] == list(text) and data["units"] == [list(range(32))]
    np.testing.assert_allclose(page_acts(data, 1, "h"), hs[0].numpy().T, atol=0.5 / 127 + 1e-6)
    # c: half an int8 step of its unit's scale (at most the largest |c|), plus the scale's rounding to 4
    # significant digits on the page (at most 5e-4 of it, times |q| / 127 <= 1), plus float32
    c_max = np.abs(cs[0].numpy()).max()
    np.testing.assert_allclose(page_acts(data, 1, "c"), cs[0].numpy().T, atol=c_max / 254 + c_max * 5e-4 + 1e-6)
    s = surprisal_bits(token_logprobs(model, ids), ids)
    # the page stores surprisal rounded to 3 decimals: half a unit, 5e-4, plus float32
    np.testing.assert_allclose(np.array(data["s"][1:], float), s[1:], atol=1e-3)
    assert data["corr"] and {c["feature"] for c in data["corr"]} <= {"inside quotes", "inside brackets",
                                                                    "position in line"}
    # self-contained: no network, no external scripts, styles or fonts
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<script[^>]*\bsrc\b", html, re.I) and "<link" not in html and "@import" not in html
    assert "url(" not in html


def test_a_long_text_is_capped_with_a_note(cli, trained_run, tmp_path):
    run_dir, _, _ = trained_run
    path = tmp_path / "long.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    r = cli("viz", run_dir, "--file", path, "--max-chars", "100", "-o", tmp_path / "p.html")
    assert r.code == 0, r.err
    note = f"showing the first 100 of {len(TINY_TEXT):,} characters (--max-chars 100)"
    assert note in r.err
    data = page_json((tmp_path / "p.html").read_text(encoding="utf-8"))
    assert len(data["segs"]) == 100 and note in data["notes"]
    assert "long.txt" in data["title"]


def test_huge_models_embed_some_units_and_say_so():
    model = random_model(vocab=256, layers=2, hidden=64)
    text = "x = [1, 2] + 'ab' (c)\n" * 5
    full = page_data(model, ByteTokenizer(), text)
    assert all(len(u) == 64 for u in full["units"])
    small = page_data(model, ByteTokenizer(), text, max_values=len(text) * 2 * 2 * 10,
                      initial={"view": "unit", "layer": 2, "unit": 63, "state": "h"})
    assert all(len(u) == 10 for u in small["units"]) and 63 in small["units"][1]
    for c in small["corr"]:
        assert c["unit"] in small["units"][c["layer"] - 1]  # every listed unit can be shown
    assert any("10 of 64 units per layer" in n for n in small["notes"])
    k = small["units"][1].index(63)
    np.testing.assert_allclose(page_acts(small, 2, "h")[k], page_acts(full, 2, "h")[63])


def test_the_text_cannot_break_out_of_the_page():
    model = random_model(vocab=256, layers=1, hidden=4)
    text = "</script><script>alert(1)</script><!-- & <b>"
    html = render(page_data(model, ByteTokenizer(), text))
    assert html.count("<script") == 2 and "alert(1)</script>" not in html
    assert "".join(page_json(html)["segs"]) == text


def test_viz_errors_are_one_line(cli, trained_run, tmp_path):
    run_dir, _, _ = trained_run
    out = tmp_path / "p.html"
    cases = [
        ([], "exactly one of --file PATH or --text TEXT"),
        (["--text", "ab", "--file", "x.txt"], "exactly one of"),
        (["--text", ""], "the text is empty"),
        (["--text", "the Ωmega"], "pass --skip-unknown to drop them"),
        (["--text", "Ω"], "never saw"),
        (["--text", "the fox", "--unit", "32"], "--unit 32 is out of range: each layer has units 0 to 31"),
        (["--text", "the fox", "--layer", "2"], "--layer 2 is out of range: the model has layers 1 to 1"),
        (["--text", "the fox", "--max-chars", "1"], "--max-chars must be at least 2"),
        (["--file", tmp_path / "missing.txt"], "does not exist"),
    ]
    for args, msg in cases:
        r = cli("viz", run_dir, "-o", out, *args)
        assert r.code == 2 and msg in r.err and r.err.count("\n") == 1, (args, r.err)
    assert not out.exists()
    r = cli("viz", run_dir, "-o", out, "--text", "the Ωmega fox", "--skip-unknown", "--layer", "1", "--unit", "3")
    assert r.code == 0, r.err
    data = page_json(out.read_text(encoding="utf-8"))
    assert "".join(data["segs"]) == "the mega fox" and any("dropped" in n for n in data["notes"])
    assert data["initial"] == {"view": "unit", "layer": 1, "unit": 3, "state": "h"}
    assert check_selection(random_model(), None, None, "c") == {"view": "unit", "layer": 1, "unit": 0, "state": "c"}
    assert check_selection(random_model(), None, None, "h")["view"] == "surprisal"
    with pytest.raises(CharrnnError, match="--state c needs an LSTM"):
        check_selection(random_model("gru"), 1, 0, "c")


# ----------------------------------------------------------------------------- in a real browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(apt-get install -y chromium)")


def read_png(data: bytes) -> np.ndarray:
    """A minimal PNG decoder (8-bit RGB/RGBA, not interlaced: what Chromium writes): (h, w, channels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + n])
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + n])
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0
    bpp = 3 if ctype == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * bpp)
    out, prev = np.zeros((h, w * bpp), np.uint8), np.zeros(w * bpp, np.int64)
    for y in range(h):
        f, cur = raw[y, 0], raw[y, 1:].astype(np.int64)
        if f == 1:
            cur = np.cumsum(cur.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif f == 2:
            cur = (cur + prev) % 256
        elif f in (3, 4):
            for i in range(len(cur)):
                a, b, c = (cur[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
                if f == 3:
                    cur[i] = (cur[i] + (a + b) // 2) % 256
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) % 256
        out[y], prev = cur, cur
    return out.reshape(h, w, bpp)


def chromium(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'chrome-profile'}", *args, url],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.fixture
def page(cli, trained_run, tmp_path):
    run_dir, _, _ = trained_run
    out = tmp_path / "page.html"
    assert cli("viz", run_dir, "--text", TINY_TEXT[:700], "-o", out).code == 0
    return out


@pytest.mark.integration
@needs_chromium
def test_the_page_in_a_browser_follows_its_fragment(page, tmp_path):
    data = page_json(page.read_text(encoding="utf-8"))
    var = page_acts(data, 1, "h").var(1)
    a, b = (int(u) for u in np.argsort(-var)[:2])  # two lively units
    shots = []
    for unit in (a, b):
        png = tmp_path / f"unit{unit}.png"
        chromium(tmp_path, f"{page.as_uri()}#layer=1&unit={unit}&state=h", f"--screenshot={png}",
                 "--window-size=1000,800")
        img = read_png(png.read_bytes())
        assert img.shape[:2] == (800, 1000)
        assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 50, "the screenshot is blank"
        shots.append(img)
    diff = np.any(shots[0] != shots[1], axis=2)
    assert diff.mean() > 0.005, "two different units gave the same picture"


HARNESS = """<script>
try {  // the page's own $ and globals are in scope
  const rec = (k, v) => document.body.setAttribute("data-" + k, v);
  rec("warn", $("warn").textContent);
  rec("link", $("permalink").getAttribute("href"));
  const sp = $("text").children[40];
  sp.dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: 100, clientY: 100}));
  rec("tip", $("tip").textContent);
  $("unit").value = "7"; $("unit").dispatchEvent(new Event("change"));
  rec("after-unit", location.hash);
  $("v-s").click();
  rec("after-surprisal", location.hash + " " + $("permalink").getAttribute("href"));
  $("next").click();
  rec("after-next", location.hash);
} catch (e) { document.body.setAttribute("data-error", String(e)); }
</script></body></html>"""


@pytest.mark.integration
@needs_chromium
def test_the_page_reacts_to_its_fragment_hover_and_selectors(page, tmp_path):
    """A bad fragment is explained; hovering shows predictions; the selectors rewrite the fragment."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body></html>", HARNESS), encoding="utf-8")
    dom = chromium(tmp_path, f"{probe.as_uri()}#layer=1&unit=99&state=c", "--dump-dom").stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    got = {k: html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', body)}
    assert got and "error" not in got, got.get("error", "the probe script did not run")
    assert got["warn"] == "unit 99 of layer 1 is not on this page (units 0-31)"
    assert got["link"] == "#layer=1&unit=0&state=c"  # fell back to unit 0, kept layer and state
    tip = got["tip"].splitlines()
    assert tip[0] == repr(TINY_TEXT[40]) and tip[1].startswith("surprisal ") and tip[2].startswith("layer 1 c[0] = ")
    assert tip[3] == "next:" and len(tip) == 4 + 5 and all(line.endswith("%") for line in tip[4:])
    assert got["after-unit"] == "#layer=1&unit=7&state=c"
    assert got["after-surprisal"] == "#view=surprisal #view=surprisal"
    assert got["after-next"] == "#layer=1&unit=8&state=c"
    assert dom.count('style="background: rgba(') > 100  # the text is coloured by a unit again
