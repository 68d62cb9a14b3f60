"""Bad invocations of ``charrnn train|sample|eval``: each must fail cleanly and change nothing.

For every case in the table below:

* the exit code is non-zero;
* stderr is exactly one non-empty line, ``error: ...``, and it names the problem (every needle of the
  case occurs in it; a tuple of needles means any one of them; ``absent=`` lists words it must not say);
* stdout is empty;
* there is no traceback on stderr or stdout;
* every file under the checkpoint directory (which holds the trained run) is byte-identical
  before and after;
* nothing hangs (a per-case alarm turns a hang into a test failure);
* no embedded pickle payload ran (its marker file does not exist).

Cases are written as ``case(id, argv, needles, setup=...)``. ``argv`` may use these placeholders:
``{ck}`` checkpoint dir, ``{run}`` the trained run dir, ``{best}`` its best.pt, ``{corpus}`` the corpus
it was trained on, ``{tmp}`` a scratch dir outside the checkpoint dir, and ``{bad}`` the file/dir the
case's ``setup`` made. Each needle must occur in the one-line message (``{bad}`` etc. are filled in there
too).

Each check raises its own exception class, so a failure says which promise was broken.
"""

from __future__ import annotations

import os
import pickle
import random

import pytest
import torch

from tests.conftest import TINY_MODEL, TINY_TEXT, Result, train_tiny
from tests.clean_errors import (ExitCodeCheck, MessageCheck, Payload, PayloadCheck, SideEffectCheck,
                                 StrayOutputCheck, TracebackCheck, _dir, _file, _fill, _make_unreadable, _missing,
                                 _unreadable, case, run_and_check)

def _fifo(ctx):
    p = ctx["tmp"] / "a_fifo"
    os.mkfifo(p)
    return p


def _unreadable_ckpt(ctx):
    p = ctx["tmp"] / "unreadable.pt"
    p.write_bytes((ctx["run"] / "best.pt").read_bytes())
    return _make_unreadable(p)


def _short_corpus(ctx):
    p = ctx["tmp"] / "short.txt"
    p.write_text("the quick brown fox jumps over the lazy dog.\n" * 5, encoding="utf-8")  # 225 chars
    return p


def _other_corpus(ctx):
    # Same characters as the trained run's corpus (so nothing is unknown), different text.
    p = ctx["tmp"] / "other.txt"
    p.write_text(TINY_TEXT * 2, encoding="utf-8")
    return p


def _unseen_chars_text(ctx):
    p = ctx["tmp"] / "unseen.txt"
    p.write_text("the quick brown fox @ 42\n" * 20, encoding="utf-8")
    return p


def _empty_dir(ctx):
    p = ctx["tmp"] / "empty_dir"
    p.mkdir()
    return p


def _truncated_ckpt(ctx):
    data = (ctx["run"] / "best.pt").read_bytes()
    return _file("truncated.pt", data[: len(data) // 2])(ctx)


def _random_ckpt(ctx):
    return _file("random.pt", random.Random(1234).randbytes(4096))(ctx)


def _text_ckpt(ctx):
    return _file("notes.pt", b"these are my notes, not a checkpoint\n" * 10)(ctx)


def _saved(name: str, make):
    """torch.save(make(ckpt, ctx)) to {tmp}/name, where ckpt is best.pt loaded as plain data."""
    def setup(ctx):
        ckpt = torch.load(ctx["run"] / "best.pt", map_location="cpu", weights_only=True)
        p = ctx["tmp"] / name
        torch.save(make(ckpt, ctx), p)
        return p
    return setup


def _with(**changes):
    def make(ckpt, ctx):
        ckpt.update(changes)
        return ckpt
    return make


def _without(key):
    def make(ckpt, ctx):
        del ckpt[key]
        return ckpt
    return make


def _wrong_shapes(ckpt, ctx):
    ckpt["model_config"] = dict(ckpt["model_config"], hidden=ckpt["model_config"]["hidden"] * 2)
    return ckpt


def _torch_payload(ckpt, ctx):
    ckpt["model"] = {"weight": Payload(str(ctx["marker"]))}
    return ckpt


def _raw_pickle_payload(ctx):
    p = ctx["tmp"] / "payload.pt"
    with open(p, "wb") as f:
        pickle.dump(Payload(str(ctx["marker"])), f, protocol=2)
    return p


def _damage_run_best(ctx):
    """Truncate the run's own best.pt, so the default checkpoint (latest run) is the bad one."""
    best = ctx["run"] / "best.pt"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 3])
    return best


def _empty_ckdir(ctx):
    p = ctx["tmp"] / "empty_checkpoints"
    p.mkdir()
    return p


# ----------------------------------------------------------------------------- the table

TRAIN = ["train", "{corpus}", "--checkpoint-dir", "{ck}"]
# Settings that would let training start (it must never get that far in these cases).
GO = [*TINY_MODEL, "--max-steps", "1"]
NOT_A_CHECKPOINT = ("not a charrnn checkpoint", "not a readable checkpoint", "truncated or corrupt")


def train_bad_file(id_, setup, needles, marks=()):
    return case(id_, ["train", "{bad}", "--checkpoint-dir", "{ck}", *GO], needles, setup, marks)


def val_bad_file(id_, setup, needles, marks=()):
    return case(id_, [*TRAIN, "--val-file", "{bad}", *GO], needles, setup, marks)


def both(id_, argv_tail, needles, setup=None, marks=(), absent=()):
    """The same bad checkpoint for sample and for eval."""
    return [case(f"sample-{id_}", ["sample", *argv_tail, "--length", "5"], needles, setup, marks, absent),
            case(f"eval-{id_}", ["eval", *argv_tail, "--device", "cpu"], needles, setup, marks, absent)]


def opt(id_, flag, value, needles):
    """A bad train option value: refused while parsing/validating, before anything is read or created."""
    return case(id_, [*TRAIN, *GO, flag, value], needles)


CASES = [
    # --- train: the corpus file
    train_bad_file("train-corpus-missing", _missing, ["does not exist", "{bad}"]),
    train_bad_file("train-corpus-directory", _dir, ["is a directory"]),
    train_bad_file("train-corpus-empty", _file("empty.txt", b""), ["is empty"]),
    train_bad_file("train-corpus-whitespace", _file("blank.txt", b"  \n\t\n   \r\n"), ["only whitespace"]),
    train_bad_file("train-corpus-binary", _file("blob.bin", b"PK\x03\x04" + b"\x00" * 64 + b"text"),
                   ["looks binary", "NUL byte at offset 4"]),
    train_bad_file("train-corpus-latin1", _file("latin1.txt", "caf\u00e9 cr\u00e8me\n".encode("latin-1") * 50),
                   ["not valid UTF-8", "0xe9", "at offset 3", "--tokenizer byte"]),
    train_bad_file("train-corpus-fifo", _fifo, ["not a regular file", "fifo"]),
    train_bad_file("train-corpus-unreadable", _unreadable, ["cannot read", "ermission"]),
    case("train-corpus-too-short", ["train", "{bad}", "--checkpoint-dir", "{ck}", *TINY_MODEL,
                                    "--max-steps", "1", "--batch-size", "64", "--seq-len", "128"],
         ["--batch-size 64", "--seq-len 128", "needs at least 8,384"], _short_corpus),
    case("train-batch-too-big-for-corpus", [*TRAIN, *TINY_MODEL, "--max-steps", "1", "--batch-size", "100000"],
         ["needs at least 1,700,016"]),
    # --- train: the validation file
    val_bad_file("train-val-file-missing", _missing, ["validation file", "does not exist"]),
    val_bad_file("train-val-file-binary", _file("val.bin", b"\x00\x01\x02binary"), ["validation file", "binary"]),
    val_bad_file("train-val-file-fifo", _fifo, ["validation file", "fifo"]),
    val_bad_file("train-val-file-not-utf8", _file("val.txt", b"the lazy dog\xc3\x28\n" * 3),
                 ["validation file", "not valid UTF-8", "0xc3", "at offset 12"]),
    val_bad_file("train-val-file-whitespace", _file("val.txt", b"\n\n   \n"), ["validation file", "only whitespace"]),
    # --- train: numbers out of range
    opt("train-layers-0", "--layers", "0", ["--layers must be a positive integer", "got 0"]),
    opt("train-hidden-negative", "--hidden", "-1", ["--hidden must be a positive integer", "got -1"]),
    opt("train-emb-0", "--emb", "0", ["--emb must be a positive integer"]),
    opt("train-batch-size-0", "--batch-size", "0", ["--batch-size must be a positive integer"]),
    opt("train-seq-len-0", "--seq-len", "0", ["--seq-len must be a positive integer"]),
    opt("train-dropout-1", "--dropout", "1", ["--dropout must be in [0, 1)"]),
    opt("train-dropout-negative", "--dropout", "-0.1", ["--dropout must be in [0, 1)", "-0.1"]),
    opt("train-lr-0", "--lr", "0", ["--lr must be positive"]),
    opt("train-lr-negative", "--lr", "-1", ["--lr must be positive", "-1"]),
    opt("train-max-steps-0", "--max-steps", "0", ["--max-steps must be at least 1"]),
    opt("train-keep-checkpoints-0", "--keep-checkpoints", "0", ["--keep-checkpoints must be a positive integer"]),
    opt("train-keep-checkpoints-negative", "--keep-checkpoints", "-3", ["--keep-checkpoints", "(got -3)"]),
    opt("train-sample-every-0", "--sample-every", "0", ["--sample-every must be at least 1"]),
    opt("train-max-time-negative", "--max-time", "-5", ["--max-time must be positive"]),
    opt("train-max-epochs-0", "--max-epochs", "0", ["--max-epochs must be positive"]),
    opt("train-val-frac-1.5", "--val-frac", "1.5", ["--val-frac", "[0, 1)"]),
    opt("train-val-frac-0-no-val-file", "--val-frac", "0", ["--val-frac 0 leaves no validation text", "--val-file"]),
    opt("train-fracs-sum-1", "--test-frac", "0.96", ["sum below 1"]),
    opt("train-min-lr-frac-2", "--min-lr-frac", "2", ["--min-lr-frac must be in [0, 1]"]),
    opt("train-warmup-negative", "--warmup", "-3", ["must not be negative"]),
    opt("train-eval-every-0", "--eval-every", "0", ["--eval-every must be a positive integer"]),
    case("train-bpe-vocab-10", [*TRAIN, *GO, "--tokenizer", "bpe", "--vocab-size", "10"],
         ["--vocab-size 10 is too small for bpe", "260"]),
    opt("train-vocab-size-0", "--vocab-size", "0", ["--vocab-size must be a positive integer"]),
    # --- train: NaN / inf / not a number
    opt("train-lr-nan", "--lr", "nan", ["--lr", "not a finite number"]),
    opt("train-dropout-nan", "--dropout", "nan", ["--dropout", "not a finite number"]),
    opt("train-max-time-inf", "--max-time", "inf", ["--max-time", "not a finite number"]),
    opt("train-val-frac-minus-inf", "--val-frac", "-inf", ["--val-frac", "not a finite number"]),
    opt("train-hidden-abc", "--hidden", "abc", ["--hidden", "'abc' is not a valid integer"]),
    opt("train-lr-abc", "--lr", "abc", ["--lr", "'abc' is not a number"]),
    opt("train-layers-float", "--layers", "1.5", ["--layers", "not a valid integer"]),
    # --- train: choices and options
    opt("train-cell-transformer", "--cell", "transformer", ["--cell", "'transformer' is not one of"]),
    opt("train-tokenizer-word", "--tokenizer", "word", ["--tokenizer", "'word' is not one of"]),
    opt("train-device-tpu", "--device", "tpu", ["--device", "'tpu' is not one of"]),
    opt("train-precision-fp8", "--precision", "fp8", ["--precision", "'fp8' is not one of"]),
    case("train-unknown-option", [*TRAIN, "--learning-rate", "0.1"], ["No such option", "--learning-rate"]),
    case("train-extra-argument", [*TRAIN, "second.txt"], ["unexpected extra argument", "second.txt"]),
    case("train-missing-option-value", [*TRAIN, "--hidden"], ["--hidden", "requires an argument"]),
    case("train-tie-weights-emb-ne-hidden", [*TRAIN, *GO, "--tie-weights"],
         ["--tie-weights needs --emb equal to --hidden", "16", "32"]),
    case("train-name-with-slash", [*TRAIN, *GO, "--name", "a/b"], ["--name", "plain directory name"]),
    case("train-name-dotdot", [*TRAIN, *GO, "--name", ".."], ["--name", "plain directory name"]),
    # --- train: run directories and resuming
    case("train-name-has-checkpoints", [*TRAIN, *GO, "--name", "tiny"],
         ["already has checkpoints", "--resume", "tiny"]),
    case("train-resume-missing-run", ["train", "--resume", "{tmp}/no_such_run", "--checkpoint-dir", "{ck}"],
         ["does not exist", "no_such_run"]),
    case("train-resume-dir-without-checkpoints", ["train", "--resume", "{bad}", "--checkpoint-dir", "{ck}"],
         ["has no best.pt or last.pt"], _empty_dir),
    case("train-resume-no-runs", ["train", "--resume", "--checkpoint-dir", "{bad}"],
         ["no trained model found"], _empty_ckdir),
    case("train-resume-change-hidden", ["train", "--resume", "{run}", "--checkpoint-dir", "{ck}", "--hidden", "64"],
         ["cannot change --hidden", "32"]),
    case("train-resume-change-tokenizer", ["train", "--resume", "{run}", "--checkpoint-dir", "{ck}",
                                           "--tokenizer", "byte"], ["cannot change --tokenizer", "'char'"]),
    case("train-resume-other-corpus", ["train", "{bad}", "--resume", "{run}", "--checkpoint-dir", "{ck}"],
         ["differs from the one this run was trained on"], _other_corpus),
    case("train-resume-corrupt-checkpoint", ["train", "--resume", "{bad}", "--checkpoint-dir", "{ck}"],
         ["truncated or corrupt"], _truncated_ckpt),
    # --- train: fine-tuning (--init-from) and records (--records)
    case("train-init-from-with-resume", ["train", "--resume", "{run}", "--checkpoint-dir", "{ck}", "--init-from",
                                         "{run}"], ["--init-from starts a new run", "--resume"]),
    case("train-init-from-missing", [*TRAIN, *GO, "--init-from", "{tmp}/no_such.pt"],
         ["--init-from", "does not exist", "no_such.pt"]),
    case("train-init-from-dir-without-checkpoints", [*TRAIN, *GO, "--init-from", "{bad}"],
         ["--init-from", "has no best.pt or last.pt"], _empty_dir),
    case("train-init-from-another-tool", [*TRAIN, *GO, "--init-from", "{bad}"],
         ["--init-from", "not a charrnn checkpoint", "another tool"],
         _saved("other.pt", lambda ckpt, ctx: {"state_dict": ckpt["model"], "epoch": 3})),
    case("train-init-from-truncated", [*TRAIN, *GO, "--init-from", "{bad}"], ["--init-from", "truncated or corrupt"],
         _truncated_ckpt),
    case("train-init-from-contradicting-hidden", [*TRAIN, *GO, "--init-from", "{run}", "--hidden", "64"],
         ["--hidden 64 contradicts the model being fine-tuned", "hidden 32", "drop --hidden"]),
    case("train-init-from-contradicting-tokenizer", [*TRAIN, *GO, "--init-from", "{run}", "--tokenizer", "byte"],
         ["--tokenizer byte contradicts", "tokenizer char"]),
    case("train-init-from-unseen-chars", ["train", "{bad}", "--checkpoint-dir", "{ck}", *GO, "--init-from", "{run}"],
         ["3 character(s) the model never saw", "'@'", "--extend-vocab", "--skip-unknown"], _unseen_chars_text),
    case("train-extend-vocab-without-init-from", [*TRAIN, *GO, "--extend-vocab"],
         ["--extend-vocab only applies when fine-tuning", "--init-from"]),
    case("train-skip-unknown-without-init-from", [*TRAIN, *GO, "--skip-unknown"],
         ["--skip-unknown only applies when fine-tuning"]),
    case("train-extend-vocab-and-skip-unknown", [*TRAIN, *GO, "--init-from", "{run}", "--extend-vocab",
                                                 "--skip-unknown"], ["exclude each other"]),
    opt("train-records-empty", "--records", "", ["--records '' is empty", "'\\n'"]),
    opt("train-records-bad-escape", "--records", "\\q", ["--records '\\q' has unknown escape '\\q'"]),
    opt("train-records-no-separator", "--records", "|", ["never contains the --records separator '|'", "{corpus}"]),
    # --- sample: options
    case("sample-temp-negative", ["sample", "{run}", "--temp", "-1"], ["--temp must be 0 (greedy) or positive"]),
    case("sample-temp-nan", ["sample", "{run}", "--temp", "nan"], ["--temp", "not a finite number"]),
    case("sample-temp-inf", ["sample", "{run}", "--temp", "inf"], ["--temp", "not a finite number"]),
    case("sample-temp-list-empty-item", ["sample", "{run}", "--temp", "0.5,,1"], ["--temp", "not a comma list"]),
    case("sample-temp-list-word", ["sample", "{run}", "--temp", "0.5,warm"], ["--temp", "'warm' is not a number"]),
    case("sample-temp-list-negative", ["sample", "{run}", "--temp", "0.5,-1"], ["--temp must be 0 (greedy)"]),
    case("sample-temp-list-interactive", ["sample", "{run}", "--temp", "0.5,1", "--interactive"],
         ["--interactive", "single value"]),
    case("sample-novel-without-records", ["sample", "{run}", "--novel"], ["--novel", "not trained with --records"]),
    case("sample-length-negative", ["sample", "{run}", "--length", "-5"], ["--length must not be negative", "-5"]),
    case("sample-top-k-negative", ["sample", "{run}", "--top-k", "-1"], ["--top-k must not be negative"]),
    case("sample-length-abc", ["sample", "{run}", "--length", "abc"], ["--length", "not a valid integer"]),
    case("sample-device-tpu", ["sample", "{run}", "--device", "tpu"], ["--device", "'tpu' is not one of"]),
    case("sample-unknown-option", ["sample", "{run}", "--temperature", "1"], ["No such option", "--temperature"]),
    case("sample-prime-unseen-chars", ["sample", "{run}", "--length", "5", "--prime", "the Q@Z"],
         ["never saw", "3 character(s)", "'@'", "'Q'", "'Z'", "--skip-unknown"]),
    case("sample-prime-all-unknown-skipped", ["sample", "{run}", "--length", "5", "--prime", "QZ@", "--skip-unknown"],
         ["--prime has no character the model knows"]),
    # --- eval: options and text files
    case("eval-split-train", ["eval", "{run}", "--split", "train"], ["--split", "'train' is not one of"]),
    case("eval-file-unseen-chars", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"],
         ["never saw", "3 character(s)", "'2'", "'4'", "'@'", "--skip-unknown"], _unseen_chars_text),
    case("eval-file-missing", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"], ["does not exist"], _missing),
    case("eval-file-binary", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"],
         ["looks binary", "offset 0"], _file("blob.bin", b"\x00\x00\x00\x01data")),
    case("eval-file-not-utf8", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"],
         ["not valid UTF-8", "at offset 12"], _file("bad.txt", b"the quick br\xffown fox\n")),
    case("eval-file-empty", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"], ["is empty"],
         _file("empty.txt", b"")),
    case("eval-file-directory", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"], ["is a directory"], _dir),
    case("eval-file-fifo", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"], ["fifo"], _fifo),
    case("eval-file-one-char", ["eval", "{run}", "--device", "cpu", "--file", "{bad}"],
         ["too short to evaluate", "two tokens"], _file("one.txt", b"t")),
    # --- sample and eval: bad checkpoints
    *both("ckpt-missing", ["{tmp}/no_such.pt"], ["does not exist", "no_such.pt"]),
    *both("ckpt-dir-without-checkpoints", ["{bad}"], ["has no best.pt or last.pt"], _empty_dir),
    *both("ckpt-dir-no-runs", ["--checkpoint-dir", "{bad}"], ["no trained model found"], _empty_ckdir),
    *both("ckpt-dir-missing", ["--checkpoint-dir", "{tmp}/nowhere"], ["no trained model found", "nowhere"]),
    *both("ckpt-empty-file", ["{bad}"], ["is empty", "not a charrnn checkpoint"], _file("empty.pt", b"")),
    *both("ckpt-truncated", ["{bad}"], ["truncated or corrupt"], _truncated_ckpt),
    *both("ckpt-latest-run-truncated", ["--checkpoint-dir", "{ck}"], ["truncated or corrupt", "best.pt"],
          _damage_run_best),
    *both("ckpt-random-bytes", ["{bad}"], [NOT_A_CHECKPOINT], _random_ckpt,
          absent=["code", "refused", "weights_only"]),
    *both("ckpt-text-renamed-pt", ["{bad}"], [NOT_A_CHECKPOINT], _text_ckpt, absent=["code", "refused"]),
    *both("ckpt-fifo", ["{bad}"], ["not a regular file"], _fifo),
    *both("ckpt-unreadable", ["{bad}"], ["cannot read", "ermission"], _unreadable_ckpt),
    *both("ckpt-another-tool", ["{bad}"], ["not a charrnn checkpoint", "another tool"],
          _saved("other.pt", lambda ckpt, ctx: {"state_dict": ckpt["model"], "epoch": 3})),
    *both("ckpt-a-list", ["{bad}"], ["not a charrnn checkpoint"], _saved("list.pt", lambda ckpt, ctx: [1, 2, 3])),
    *both("ckpt-version-999", ["{bad}"], ["format version 999", "newer", "upgrade"],
          _saved("future.pt", _with(version=999))),
    *both("ckpt-no-model", ["{bad}"], ["missing its model", "damaged"], _saved("nomodel.pt", _without("model"))),
    *both("ckpt-wrong-shapes", ["{bad}"], ["do not fit its model config", "damaged"],
          _saved("shapes.pt", _wrong_shapes)),
    *both("ckpt-bad-tokenizer", ["{bad}"], ["unknown or malformed tokenizer"],
          _saved("tok.pt", _with(tokenizer={"kind": "word"}))),
    *both("ckpt-pickle-payload", ["{bad}"], ["refused", "not plain data"], _raw_pickle_payload),
    *both("ckpt-torch-payload", ["{bad}"], ["refused", "not plain data"], _saved("evil.pt", _torch_payload)),
    # --- no command / unknown command
    case("unknown-command", ["generate"], ["No such command", "generate"]),
]


# ----------------------------------------------------------------------------- the test

@pytest.mark.parametrize("argv, needles, absent, setup", CASES)
def test_bad_invocation(argv, needles, absent, setup, cli, run_copy, tmp_path, monkeypatch):
    run_dir, corpus, ckdir = run_copy
    scratch = tmp_path / "scratch"  # outside the checkpoint dir
    scratch.mkdir()
    monkeypatch.chdir(scratch)  # a stray default --checkpoint-dir would land here, not in the repo
    ctx = {"ck": ckdir, "run": run_dir, "best": run_dir / "best.pt", "corpus": corpus, "tmp": scratch,
           "marker": tmp_path / "PAYLOAD_RAN"}
    ctx["bad"] = setup(ctx) if setup else scratch / "unused"
    fill = lambda n: tuple(_fill(o, ctx) for o in n) if isinstance(n, tuple) else _fill(n, ctx)  # noqa: E731
    run_and_check(cli, [_fill(a, ctx) for a in argv], [fill(n) for n in needles], absent,
                  watch=[ckdir], marker=ctx["marker"])


# ----------------------------------------------------------------------------- cases that need their own run

@pytest.fixture(scope="module")
def run_without_test_split(tmp_path_factory):
    """A tiny run trained for one step with --test-frac 0 (a second or two)."""
    _, ckdir = train_tiny(tmp_path_factory.mktemp("notest"), "notest", "--max-steps", "1", "--test-frac", "0")
    return ckdir / "notest", ckdir


@pytest.mark.slow
def test_eval_test_split_of_run_without_one(cli, run_without_test_split):
    run_dir, ckdir = run_without_test_split
    run_and_check(cli, ["eval", str(run_dir), "--split", "test", "--device", "cpu"],
                  ["no test split", "--test-frac was 0", "--split val"], watch=[ckdir])


def test_the_table_covers_each_command_once_per_id():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    commands = {c.values[0][0] for c in CASES}
    assert {"train", "sample", "eval"} <= commands  # the three commands this module promises to cover


def _fake_cli(code=2, err="error: no such file 'x.txt'\n", out="", effect=None):
    """A stand-in for the cli fixture that returns a canned Result (after EFFECT, to break a promise)."""
    def run(*args):
        if effect is not None:
            effect()
        return Result(code, out, err)
    return run


@pytest.mark.parametrize("broken,check", [
    (dict(code=0), ExitCodeCheck),
    (dict(err="Traceback (most recent call last):\nerror: boom\n"), TracebackCheck),
    (dict(err="error: something else went wrong\n"), MessageCheck),  # does not name the problem
    (dict(err="error: no such file 'x.txt'\nerror: no such file 'x.txt'\n"), MessageCheck),
    (dict(err="error: no such file 'x.txt' (the corpus)\n"), MessageCheck),  # says an absent word
    (dict(err="loading...\nerror: no such file 'x.txt'\n"), StrayOutputCheck),
    (dict(out="half a sample"), StrayOutputCheck),
    ("touch-watched", SideEffectCheck),
    ("touch-marker", PayloadCheck),
], ids=["exit-0", "traceback", "wrong-message", "two-errors", "absent-word", "chatter", "stdout", "file-changed",
        "payload-ran"])
def test_each_broken_promise_fails_its_own_check(tmp_path, broken, check):
    """run_and_check is the whole table's judge: each promise it checks, broken on purpose, fails it."""
    watched, marker = tmp_path / "ck", tmp_path / "PAYLOAD_RAN"
    watched.mkdir()
    effects = {"touch-watched": lambda: (watched / "new.pt").write_bytes(b""), "touch-marker": marker.touch}
    fake = _fake_cli(effect=effects[broken]) if isinstance(broken, str) else _fake_cli(**broken)
    with pytest.raises(check):
        run_and_check(fake, ["eval"], ["no such file"], absent=["corpus"], watch=[watched], marker=marker)
    run_and_check(_fake_cli(), ["eval"], ["no such file"], absent=["corpus"], watch=[watched])  # kept: passes


def test_failed_train_leaves_no_run_directory(cli, tmp_path):
    ckdir = tmp_path / "checkpoints"
    r = cli("train", tmp_path / "typo.txt", "--checkpoint-dir", ckdir, *TINY_MODEL, "--max-steps", "1")
    assert r.code != 0 and "does not exist" in r.err
    left = sorted(str(p.relative_to(tmp_path)) for p in ckdir.rglob("*")) if ckdir.exists() else []
    if left:
        raise SideEffectCheck(f"left behind: {left}")
