"""A corpus larger than the model's comfort zone (issue #11): 100 MB of Python source built from this
Python's library (every .py under the stdlib directory, site-packages included, in sorted order,
up to --mb megabytes), then, each in a fresh process:

  1. encoding it into the cache (cold) against the whole-text encoding of the same text in memory
     (the previous code path: decode all, fit, encode all) measured in the same run;
  2. `charrnn train` with the cache in place: seconds from process start to the first training
     step, peak RSS (VmHWM), and the time of one periodic evaluation (--eval-tokens) read from
     metrics.jsonl; the run is stopped after that evaluation.

    python3 benchmarks/large_corpus.py [--mb 100] [--workdir /tmp/charrnn-large] [--threads 2]

With ``--paths`` it measures instead the other ways a large text is read, each at --mb and at a
quarter of it in a fresh process (peak RSS, and time: linear when the ratio is about 4):
records (``--records '\\n'``, chars and bytes), fine-tuning a char model on text with characters it
never saw (extend and skip), sentencepiece (bpe) on a text8-like file with no newlines, and
``charrnn eval MODEL --file`` and ``charrnn score MODEL FILE`` (a 1x64 LSTM that knows every character
of the corpus; the whole command from process start, so its fixed start-up is in both sizes).

Prints one table; record it in docs/BENCHMARKS.md with the CPU model.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build_corpus(path: str, mb: float) -> tuple[int, int]:
    """Concatenate the library's .py files (UTF-8 ones) in sorted order up to mb megabytes."""
    limit, size, files = int(mb * 1e6), 0, 0
    root = sysconfig.get_paths()["stdlib"]
    with open(path + ".tmp", "wb") as out:
        for f in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
            try:
                data = open(f, "rb").read()
                data.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if size + len(data) > limit:
                break
            out.write(data)
            size, files = size + len(data), files + 1
    os.replace(path + ".tmp", path)
    return size, files


def child_cpu() -> float:
    """CPU seconds of every child process reaped so far (user + system)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def peak_rss_run(cmd: list[str], env: dict, until=None, poll: float = 0.05) -> tuple[int, float, str]:
    """Run cmd; (peak RSS bytes, wall seconds, stderr). ``until()`` true: the process is killed.
    ``peak_rss_run.cpu``: the CPU seconds it used (a steadier figure than wall time on a shared machine)."""
    c0 = child_cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        try:
            for line in open(f"/proc/{p.pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        if until is not None and until():
            p.kill()
            break
        time.sleep(poll)
    _, err = p.communicate()
    peak_rss_run.cpu = child_cpu() - c0
    return peak, time.perf_counter() - t0, err


ENCODE_NEW = """
import sys, time, resource
from charrnn.data.corpus import load_corpus
t0, c0 = time.perf_counter(), time.process_time()
c = load_corpus(sys.argv[1], "char", cache_dir=sys.argv[2])
dt, dc = time.perf_counter() - t0, time.process_time() - c0
print(dt, dc, c.tokenizer.vocab_size, len(c.train.ids) + len(c.val.ids) + len(c.test.ids), file=sys.stderr)
"""

ENCODE_OLD = """
import sys, time
from charrnn.data.tokenizers import fit_tokenizer
t0, c0 = time.perf_counter(), time.process_time()
text = open(sys.argv[1], "rb").read().decode("utf-8")
tok = fit_tokenizer("char", text)
ids = tok.encode(text)
print(time.perf_counter() - t0, time.process_time() - c0, tok.vocab_size, len(ids), file=sys.stderr)
"""


ENCODE_PATH = """
import sys, time
import torch
from charrnn.data.corpus import load_corpus
path, cache, how = sys.argv[1:4]
kw = {"records": "\\n"} if how == "records" else {"tokenizer": "bpe", "vocab_size": 512} if how == "bpe" else {}
if how == "records-byte":
    kw = {"records": "\\n", "tokenizer": "byte"}
if how in ("extend", "skip"):  # a char model that never saw the digits
    cps = sorted(set(range(32, 127)) - set(range(48, 58)) | {9, 10})
    kw = {"tok_state": {"kind": "char", "codepoints": torch.tensor(cps)}, "unknown": how}
t0 = time.perf_counter()
c = load_corpus(path, kw.pop("tokenizer", "char"), cache_dir=cache, **kw)
print(time.perf_counter() - t0, len(c.train.ids) + len(c.val.ids) + len(c.test.ids), file=sys.stderr)
"""


def ascii_words(src: str, dest: str) -> None:
    """A text8-like file from the corpus: its ASCII letters as lower-case words joined by single spaces
    (no newlines), about the corpus's size."""
    import re

    with open(src, encoding="utf-8") as f, open(dest + ".tmp", "w", encoding="ascii") as out:
        for line in f:
            words = re.findall(r"[A-Za-z]+", line)
            if words:
                out.write(" ".join(words).lower() + " ")
    os.replace(dest + ".tmp", dest)


MAKE_MODEL = """
import sys
import charrnn
corpus, vocab_text, ckdir = sys.argv[1:4]
text = (open(corpus, encoding="utf-8", newline="").read(1_000_000)
        + open(vocab_text, encoding="utf-8", newline="").read())
charrnn.train(text=text, checkpoint_dir=ckdir, name="evalbench", layers=1, hidden=64, emb=32, batch_size=8,
              seq_len=64, max_steps=2, eval_every=2, save_every=2, verbose=False)
"""


def all_characters(path: str, dest: str) -> None:
    """Every distinct character of a file, read in chunks, one line: the model for eval and score knows
    them all (no unknown characters, so the char path itself is measured)."""
    seen = set()
    with open(path, encoding="utf-8", newline="") as f:  # newline="": a \r is a character of its own
        while chunk := f.read(1 << 22):
            seen.update(chunk)
    with open(dest, "w", encoding="utf-8", newline="") as out:
        out.write("".join(sorted(seen)) + "\n")


PATHS = {
    "records": "`--records '\\n'` (chars)",
    "extend": "fine-tune, new characters, `--extend-vocab`",
    "skip": "fine-tune, new characters, `--skip-unknown`",
    "bpe": "`--tokenizer bpe`, one line of words (text8-like)",
    "records-byte": "`--records '\\n' --tokenizer byte`",
    "eval": "`charrnn eval MODEL --file F` (1x64 LSTM, chars, `--no-baselines`)",
    "score": "`charrnn score MODEL F --json` (1x64 LSTM, chars)",
}


def _command(how: str, model: str, path: str) -> list[str]:
    if how == "eval":
        return [sys.executable, "-m", "charrnn", "eval", model, "--file", path, "--json", "--no-baselines", "--device", "cpu"]
    return [sys.executable, "-m", "charrnn", "score", model, path, "--json", "--device", "cpu"]


def paths(args, corpus: str, env: dict) -> None:
    words = os.path.join(args.workdir, "words.txt")
    ascii_words(corpus, words)
    which = args.only.split(",") if args.only else list(PATHS)
    model, startup = None, {}
    if {"eval", "score"} & set(which):
        vocab = os.path.join(args.workdir, "vocab.txt")
        all_characters(corpus, vocab)
        ckdir = os.path.join(args.workdir, "checkpoints-eval")
        subprocess.run([sys.executable, "-c", MAKE_MODEL, corpus, vocab, ckdir], env=env, check=True,
                       capture_output=True)
        model = os.path.join(ckdir, "evalbench", "best.pt")
        start = os.path.join(args.workdir, "start.txt")
        with open(corpus, "rb") as f, open(start, "wb") as out:
            out.write(f.read(4096).decode("utf-8", "ignore").encode("utf-8"))
        startup = {}
        for how in ("eval", "score"):
            peak_rss_run(_command(how, model, start), env)
            startup[how] = peak_rss_run.cpu
    print(f"# other read paths: each at --mb and a quarter of it, fresh process, cold cache; CPU: {cpu_model()}, "
          f"{args.threads} threads; {time.strftime('%Y-%m-%d %H:%M')}; load {os.getloadavg()[0]:.1f}")
    if model:
        print(f"# eval and score: the whole command; its start-up (a 4 KB file) took {startup['eval']:.1f} and "
              f"{startup['score']:.1f} CPU seconds, left out of their ratio, which is of CPU seconds (the machine "
              "is shared: wall seconds stretch with its load)")
    print("| path | MB | seconds | CPU seconds | time ratio (x4 text) | peak RSS | target |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for how in which:
        src = words if how == "bpe" else corpus
        times = []
        for frac in (0.25, 1.0):
            part = os.path.join(args.workdir, f"part-{how}-{frac}.txt")
            with open(src, "rb") as f:
                data = f.read(int(os.path.getsize(src) * frac))
            with open(part, "wb") as out:
                out.write(data.decode("utf-8", "ignore").encode("utf-8"))
            cache = os.path.join(args.workdir, f"cache-{how}-{frac}")
            if how in ("eval", "score"):  # the whole command, from process start (torch's import included)
                rss, t, err = peak_rss_run(_command(how, model, part), env)
                if "Traceback" in err or "error" in err.lower():
                    raise SystemExit(f"{how}: {err[-2000:]}")
            else:
                rss, _, err = peak_rss_run([sys.executable, "-c", ENCODE_PATH, part, cache, how], env)
                try:
                    t = float(err.split()[-2])
                except (IndexError, ValueError):
                    raise SystemExit(f"{how}: {err[-2000:]}")
            cpu = peak_rss_run.cpu
            times.append(cpu - startup[how] if how in ("eval", "score") else t)
            ratio = f"{times[1] / times[0]:.2f}" if len(times) == 2 else ""
            print(f"| {PATHS[how]} | {os.path.getsize(part) / 1e6:.1f} | {t:.1f} | {cpu:.1f} | {ratio} | "
                  f"{rss / 1e9:.2f} GB | < 1.5 GB, ratio ~4 |", flush=True)
            shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=100.0)
    ap.add_argument("--workdir", default="/tmp/charrnn-large")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", action="store_true",
                    help="measure records, fine-tuning, bpe on text8-like text, eval --file and score")
    ap.add_argument("--only", default="", help="with --paths: a comma-separated subset of " + ",".join(PATHS))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    corpus = os.path.join(args.workdir, "pystdlib100.txt")
    ckdir = os.path.join(args.workdir, "checkpoints")
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": str(args.threads)}
    size, files = build_corpus(corpus, args.mb)
    if args.paths:
        return paths(args, corpus, env)
    subprocess.run([sys.executable, "-m", "charrnn", "cache", "--clear", "--checkpoint-dir", ckdir], env=env,
                   check=True, capture_output=True)

    rss_old, _, err_old = peak_rss_run([sys.executable, "-c", ENCODE_OLD, corpus], env)
    t_old, c_old, vocab, n_old = err_old.split()[-4:]
    rss_new, _, err_new = peak_rss_run([sys.executable, "-c", ENCODE_NEW, corpus, os.path.join(ckdir, ".cache")], env)
    t_new, c_new, vocab_new, n_new = err_new.split()[-4:]
    assert (vocab, n_old) == (vocab_new, n_new), (err_old, err_new)

    metrics = os.path.join(ckdir, "bench", "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)

    def lines():
        try:
            return [json.loads(x) for x in open(metrics)]
        except (OSError, ValueError):
            return []

    t_start = time.perf_counter()
    first = {}

    def watch():
        got = lines()
        if got and "first" not in first:
            first["first"] = time.perf_counter() - t_start
        return any(x["split"] == "val" for x in got)

    cmd = [sys.executable, "-m", "charrnn", "train", corpus, "--checkpoint-dir", ckdir, "--name", "bench",
           "--max-steps", "1000", "--log-every", "1", "--eval-every", "3", "--save-every", "1000"]
    rss_train, wall, err = peak_rss_run(cmd, env, until=watch)
    got = lines()
    train2 = next(x for x in got if x["split"] == "train" and x["step"] == 3)
    val = next(x for x in got if x["split"] == "val")
    eval_s = val["elapsed"] - train2["elapsed"]
    step_s = (train2["elapsed"] - next(x for x in got if x["step"] == 1)["elapsed"]) / 2

    mb = size / 1e6
    print(f"# large corpus: {mb:.1f} MB of Python source ({files} files), {int(n_new):,} characters, "
          f"{int(vocab):,} distinct")
    print(f"# CPU: {cpu_model()}, {args.threads} threads; {time.strftime('%Y-%m-%d')}; load {os.getloadavg()[0]:.1f}")
    print("| measure | charrnn | reference (same run) | target |")
    print("|---|---:|---:|---|")
    print(f"| char encoding, cold, wall clock (MB/s) | {mb / float(t_new):.1f} | {mb / float(t_old):.1f} (whole text "
          f"in memory) | >= 50 |")
    print(f"| char encoding, cold, per CPU second (MB/s) | {mb / float(c_new):.1f} | {mb / float(c_old):.1f} | |")
    print(f"| peak RSS while encoding | {rss_new / 1e9:.2f} GB | {rss_old / 1e9:.2f} GB | |")
    print(f"| process start to first training step (cache in place) | {first.get('first', float('nan')):.1f} s | "
          f"| <= 10 s |")
    print(f"| peak RSS of charrnn train (default model, through one evaluation) | {rss_train / 1e9:.2f} GB | "
          f"| < 1.5 GB |")
    print(f"| one periodic evaluation ({val['tokens']:,} of {int(n_new) // 20:,} val tokens) | {eval_s:.1f} s "
          f"| {step_s:.2f} s per training step | a few seconds |")


if __name__ == "__main__":
    main()
