"""``charrnn sample`` end to end on a tiny trained run: several samples, --json, --beam, --prime-file,
stop strings and line starts through the command line, and one-line errors for every bad value."""

from __future__ import annotations

import json

import pytest
import torch

import charrnn
from tests.conftest import TINY_TEXT
from tests.clean_errors import case, run_and_check, _file, _dir, _missing, _unreadable

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(trained_run):
    return charrnn.load(trained_run[0], device="cpu")


def test_num_samples_print_each_under_a_header_as_the_api_gives_them(cli, trained_run, model):
    run = trained_run[0]
    r = cli("sample", run, "--prime", "the ", "--length", 40, "--seed", 3, "--num-samples", 3)
    texts = model.sample("the ", length=40, seed=3, num_samples=3)
    assert r.code == 0 and isinstance(texts, list) and len(texts) == 3 and len(set(texts)) == 3
    assert r.out == "".join(f"--- sample {i} ---\n{t}" + ("" if t.endswith("\n") else "\n")
                            for i, t in enumerate(texts, 1))
    assert "3 samples" in r.err


def test_stream_of_several_samples_gives_index_text_pairs(model):
    pairs = list(model.stream("the ", length=30, seed=6, num_samples=3, stop="e"))
    texts = model.sample("the ", length=30, seed=6, num_samples=3, stop="e")
    assert {i for i, _ in pairs} == {1, 2, 3} and [i for i, _ in pairs[:3]] == [1, 2, 3]  # the prime first
    assert ["".join(t for i, t in pairs if i == k) for k in (1, 2, 3)] == texts
    assert all(t.startswith("the ") and (t.endswith("e") or len(t) == 34) for t in texts)


def test_interactive_refuses_what_does_not_go_with_it(cli, trained_run, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    for extra in (["--json"], ["--num-samples", "2"], ["--beam", "2"], ["--prime", "the"]):
        r = cli("sample", trained_run[0], "--interactive", *extra)
        assert r.code == 2 and r.out == "" and r.err.startswith(f"error: {extra[0]} does not go with --interactive")


@pytest.mark.numerics
def test_json_lines_are_the_api_records(cli, trained_run, model):
    run = trained_run[0]
    r = cli("sample", run, "--prime", "the ", "--length", 30, "--seed", 5, "--num-samples", 4, "--json",
            "--top-p", 0.9, "--temp", 1.0)
    lines = [json.loads(line) for line in r.out.splitlines()]
    want = list(model.generate("the ", length=30, seed=5, num_samples=4, top_p=0.9, temp=1.0))
    assert [ln["index"] for ln in lines] == [1, 2, 3, 4]
    for ln, s in zip(lines, want):
        assert set(ln) == {"index", "text", "tokens", "logprob", "end"}
        assert (ln["text"], ln["tokens"], ln["end"]) == (s.text, 30, "length")
        # the same sampling through the API and the CLI: JSON keeps logprob to 4 decimals (5e-5)
        assert ln["logprob"] == pytest.approx(s.logprob, abs=1e-4) and ln["logprob"] < 0


def test_single_sample_json_and_streamed_text_agree(cli, trained_run):
    run = trained_run[0]
    args = ("sample", run, "--prime", "床前", "--length", 25, "--seed", 2)
    text = cli(*args).out
    (line,) = cli(*args, "--json").out.splitlines()
    assert json.loads(line)["text"] + "\n" == text


def test_beam_json_is_best_first_and_beats_greedy(cli, trained_run):
    run = trained_run[0]
    greedy = json.loads(cli("sample", run, "--prime", "the ", "--length", 30, "--temp", 0, "--json").out)
    r = cli("sample", run, "--prime", "the ", "--length", 30, "--beam", 4, "--num-samples", 3, "--json")
    beams = [json.loads(line) for line in r.out.splitlines()]
    assert r.code == 0 and [b["index"] for b in beams] == [1, 2, 3]
    assert beams[0]["logprob"] >= beams[1]["logprob"] >= beams[2]["logprob"]
    assert beams[0]["logprob"] >= greedy["logprob"]
    one = json.loads(cli("sample", run, "--prime", "the ", "--length", 30, "--beam", 1, "--json").out)
    assert one["text"] == greedy["text"]


@pytest.mark.numerics
def test_bf16_products_give_the_models_log_probabilities_closely(cli, trained_run, model):
    run = trained_run[0]
    r = cli("sample", run, "--prime", "the ", "--length", 40, "--seed", 2, "--num-samples", 3, "--json",
            "--precision", "bf16")
    for line in r.out.splitlines():
        s = json.loads(line)
        ids = torch.as_tensor(model.tokenizer.encode(s["text"]), dtype=torch.long).view(1, -1)
        with torch.no_grad():
            logp, _ = model.module(ids[:, :-1])  # fp32, teacher forcing
        exact = float(logp[0, 3:].gather(-1, ids[0, 4:, None]).sum())
        # bf16 products (8 significant bits: 2^-8 = 0.4% per rounding) against the fp32 model: each of the 40
        # tokens' log-probs is off by about one rounding, of random sign, so the sum's relative error stays near
        # 0.4%; 2% = 5 roundings, while sampling from the wrong state is off by > 10%
        assert s["tokens"] == 40 and s["logprob"] == pytest.approx(exact, rel=0.02)


def test_prime_file_is_the_prime(cli, trained_run, tmp_path):
    run = trained_run[0]
    p = tmp_path / "prime.txt"
    p.write_text("举头望明月，\n", encoding="utf-8")
    a = cli("sample", run, "--prime-file", p, "--length", 20, "--seed", 1)
    b = cli("sample", run, "--prime", "举头望明月，\n", "--length", 20, "--seed", 1)
    assert a.code == 0 and a.out == b.out and a.out.startswith("举头望明月，\n")


def test_stop_and_line_starts_on_the_command_line(cli, trained_run, model):
    run = trained_run[0]
    full = model.sample("the ", length=200, seed=4, temp=1.0)
    stop = full[4:][10:12]
    r = cli("sample", run, "--prime", "the ", "--length", 200, "--seed", 4, "--temp", 1.0, "--stop", "never",
            "--stop", stop, "--strip-stop")
    at = full.find(stop, 4)
    assert r.out == full[:at] + "\n"
    r = cli("sample", run, "--length", 3000, "--seed", 1, "--line-starts", "床举低", "--num-samples", 3, "--json")
    for line in r.out.splitlines():
        s = json.loads(line)
        assert [ln[:1] for ln in s["text"].split("\n")] == ["床", "举", "低", ""] and s["end"] == "line_starts"
        assert set(s["text"]) <= set(TINY_TEXT)


def test_backslash_n_in_a_stop_string_gets_a_note(cli, trained_run):
    r = cli("sample", trained_run[0], "--length", 5, "--stop", "\\n")
    assert r.code == 0 and "note: --stop '\\\\n' holds a backslash" in r.err


SAMPLE = ["sample", "{run}", "--length", "5"]


def bad(id_, args, needles, setup=None):
    return case(f"sample-{id_}", [*SAMPLE, *args], needles, setup)


CASES = [
    bad("top-p-zero", ["--top-p", "0"], ["--top-p must be in (0, 1]", "got 0"]),
    bad("top-p-above-one", ["--top-p", "1.5"], ["--top-p must be in (0, 1]"]),
    bad("top-p-negative", ["--top-p", "-0.2"], ["--top-p must be in (0, 1]"]),
    bad("beam-zero", ["--beam", "0"], ["--beam must be at least 1", "got 0"]),
    bad("beam-negative", ["--beam", "-3"], ["--beam must be at least 1"]),
    bad("num-samples-zero", ["--num-samples", "0"], ["--num-samples must be a positive integer"]),
    bad("num-samples-negative", ["--num-samples", "-2"], ["--num-samples must be a positive integer"]),
    bad("num-samples-above-beam", ["--beam", "2", "--num-samples", "3"], ["--num-samples 3 is more than --beam 2"]),
    bad("beam-with-top-k", ["--beam", "2", "--top-k", "5"], ["--top-k does not apply to --beam"]),
    bad("stop-empty", ["--stop", "x", "--stop", ""], ["--stop must not be an empty string"]),
    bad("max-lines-zero", ["--max-lines", "0"], ["--max-lines must be at least 1"]),
    bad("line-starts-empty", ["--line-starts", ""], ["--line-starts is empty"]),
    bad("line-starts-unknown", ["--line-starts", "床Ω"], ["'Ω' is not in the model's vocabulary"]),
    bad("line-starts-newline", ["--line-starts", "床\n举"], ["--line-starts must not contain a line break"]),
    bad("prime-and-prime-file", ["--prime", "the", "--prime-file", "{bad}"], ["give --prime or --prime-file"],
        _file("p.txt", b"the")),
    bad("prime-file-missing", ["--prime-file", "{bad}"], ["prime file", "does not exist"], _missing),
    bad("prime-file-directory", ["--prime-file", "{bad}"], ["prime file", "is a directory"], _dir),
    bad("prime-file-empty", ["--prime-file", "{bad}"], ["prime file", "is empty"], _file("e.txt", b"")),
    bad("prime-file-unreadable", ["--prime-file", "{bad}"], ["cannot read prime file", "ermission"], _unreadable),
    bad("prime-file-binary", ["--prime-file", "{bad}"], ["prime file", "looks binary"], _file("b.bin", b"ab\x00c")),
    bad("prime-file-latin1", ["--prime-file", "{bad}"], ["prime file", "not valid UTF-8", "iconv"],
        _file("l.txt", "caf\u00e9\n".encode("latin-1"))),
    bad("prime-file-unknown-chars", ["--prime-file", "{bad}"], ["never saw", "'Ω'", "--skip-unknown"],
        _file("u.txt", "the Ω\n".encode())),
    bad("precision-unknown", ["--precision", "fp16"], ["--precision", "fp16", "fp32", "bf16"]),
    bad("interactive-not-a-terminal", ["--interactive"], ["--interactive needs a terminal"]),
]


@pytest.mark.parametrize("argv, needles, absent, setup", CASES)
def test_bad_sample_values_fail_in_one_line_before_any_output(argv, needles, absent, setup, cli, run_copy,
                                                             tmp_path, monkeypatch):
    run_dir, corpus, ckdir = run_copy
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    ctx = {"ck": ckdir, "run": run_dir, "tmp": scratch}
    ctx["bad"] = setup(ctx) if setup else scratch / "unused"
    r = run_and_check(cli, [a.format(**{k: str(v) for k, v in ctx.items()}) for a in argv], needles, absent,
                      watch=[ckdir])
    assert "--tokenizer" not in r.err  # the corpus wording's training hint does not fit a prime file
