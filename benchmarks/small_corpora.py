"""Small corpora under --max-time (issue #24): today's defaults against the new plan, same seconds.

Six corpora of 100-500 kB (or a word list of <= 50k records), of different kinds, built from local
files only (nothing is downloaded): verse (the first 200 kB of tinyshakespeare), Chinese verse
(zh_poems), the built-in corpus (the first 300 kB of pystdlib: Python's top-level stdlib modules),
code (the first 300 kB of stdlib packages' sources: json, email, ... not the built-in's files),
prose (the first 300 kB of the Python reference's help topics, pydoc_data) and a word list as
records (the unique words of tinyshakespeare, shuffled, one per line, `--records '\\n'`).

For each corpus two `charrnn train CORPUS --max-time SECONDS` processes run at the same time (one
intra-op thread each; at most --jobs at once): "today" is the code of --today (a git ref, exported
with git archive: the branch point with main by default) and "new" this tree. Both choose their
own settings (the budget), each in its own checkpoint directory (each probes this machine as a
new user's first run would). The table: the budget line's planned steps and epochs, the steps made,
whether the run stopped early, the best validation loss (best.pt on the whole split, nats/token),
and the load average while the pair ran. --noise CORPUS runs both arms again with --seed 7
on it (the spread of one figure). --fit runs the grid benchmarks/fit_generalise.py fits instead.

    OMP_NUM_THREADS=1 python3 benchmarks/small_corpora.py --work /tmp/small --seconds 250
    OMP_NUM_THREADS=1 python3 benchmarks/small_corpora.py --work /tmp/smallfit --fit --steps 400 --fraction 0.3

Finished runs are reused from --work (delete it to measure again).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import glob
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from charrnn.system import rundir  # noqa: E402
from charrnn.system.device import cpu_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "corpora")
KINDS = {"shakespeare": "verse (drama)", "zh_poems": "Chinese verse", "pystdlib": "built-in (Python)",
         "code": "code (Python packages)", "prose": "prose (Python reference)", "words": "word list, records"}
RECORDS = {"words": "\\n"}
FIT_STRENGTHS = (0.0, 0.2, 0.4)  # --fit: --weight-drop s and --dropout max(0.1, s)
FIT_SHAPE = ["--layers", "2", "--hidden", "128", "--batch-size", "16", "--seq-len", "64", "--eval-every", "50"]
# --fit: step budgets, not seconds (a busy machine moves no point), with the shape the budget picks here


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def corpus_text(name: str) -> str:
    stdlib = sysconfig.get_paths()["stdlib"]
    if name == "shakespeare":
        return _read(os.path.join(SHARED, "tinyshakespeare.txt"))[:200_000]
    if name == "zh_poems":
        return _read(os.path.join(SHARED, "zh_poems.txt"))
    if name == "pystdlib":
        sys.path.insert(0, ROOT)
        from charrnn.data.corpus import read_pystdlib
        return read_pystdlib()[:300_000]
    if name == "code":
        files = sorted(glob.glob(os.path.join(stdlib, "*", "*.py")))
        files = [f for f in files if os.sep + "test" not in f and "site-packages" not in f]
        return "".join(_read(f) for f in files)[:300_000]
    if name == "prose":
        import pydoc_data.topics as t
        return "\n\n".join(t.topics[k] for k in sorted(t.topics))[:300_000]
    if name == "words":
        words = sorted(set(re.findall(r"[A-Za-z']+", _read(os.path.join(SHARED, "tinyshakespeare.txt")))))
        random.Random(0).shuffle(words)
        return "\n".join(words) + "\n"
    raise SystemExit(f"unknown corpus {name!r}; one of {', '.join(KINDS)}")


def build(work: str, name: str, fraction: float = 1.0) -> str:
    """The corpus in work/corpora (--fit: its first ``fraction``, cut at a line end: more epochs in fewer seconds)."""
    path = os.path.join(work, "corpora", f"{name}{'' if fraction == 1 else f'-{fraction:g}'}.txt")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = corpus_text(name)
        if fraction < 1:
            text = text[:text.rfind("\n", 0, int(len(text) * fraction)) + 1]
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return path


def export_today(work: str, ref: str) -> str:
    """The code of ``ref`` in work/today (git archive), to run today's defaults from."""
    dest = os.path.join(work, "today")
    if not os.path.isdir(os.path.join(dest, "charrnn")):
        os.makedirs(dest, exist_ok=True)
        archive = subprocess.run(["git", "-C", ROOT, "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", ref], capture_output=True, text=True)
        with open(os.path.join(dest, "COMMIT"), "w") as f:
            f.write(commit.stdout)
    return dest


def run(work: str, code: str, corpus: str, name: str, label: str, seconds: float, flags: list[str]) -> dict:
    ck = os.path.join(work, "runs", label)
    done = os.path.join(ck, "done.json")
    if os.path.exists(done):  # finished: summarised again from its files (the reading may have changed)
        with open(done) as f, open(os.path.join(ck, "stderr.txt")) as e:
            kept = json.load(f)
            return {**kept, **summarise(os.path.join(ck, "run"), e.read())}
    os.makedirs(ck, exist_ok=True)
    rec = RECORDS.get(name)
    limit = ["--max-time", str(seconds)] if seconds else []  # --fit: --max-steps in the flags
    cmd = [sys.executable, "-m", "charrnn", "train", corpus, "--checkpoint-dir", ck, "--name", "run",
           *limit, *(["--records", rec] if rec else []), *flags]
    env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    wall = time.time() - t0
    with open(os.path.join(ck, "stderr.txt"), "w") as f:
        f.write(p.stderr)
    if p.returncode:
        raise SystemExit(f"{label} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    out = summarise(os.path.join(ck, "run"), p.stderr)
    out.update(label=label, wall=round(wall, 1), code=code)
    with open(done, "w") as f:
        json.dump(out, f)
    return out


def summarise(run_dir: str, err: str) -> dict:
    line = next((x for x in err.splitlines() if x.startswith("budget: ")), "")
    num = lambda pat: (float(m.group(1).replace(",", "")) if (m := re.search(pat, line)) else None)  # noqa: E731
    metrics = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    best = rundir.best_from_metrics(run_dir, metrics)  # best.pt's figure, as train, runs and inspect show it
    val = [m for m in metrics if m.get("split") == "val"]
    with open(os.path.join(run_dir, "config.json")) as f:
        cfg = json.load(f)
    steps = max(m["step"] for m in metrics if "step" in m)
    train = [m for m in metrics if m.get("split") == "train"]
    stop = re.search(r"^done \((.*)\) after", err, re.M)
    per_epoch = re.search(r"(\d+) steps per epoch", err)
    return {"per_epoch": int(per_epoch.group(1)) if per_epoch else None,
            "budget_line": line, "planned_steps": num(r"~([\d,]+) steps"), "planned_epochs": num(r"~([\d.]+) epochs"),
            "left": num(r"in the (\d+)s left"), "steps": steps, "epochs": train[-1]["epoch"] if train else None,
            "best_val": best["loss"], "best_step": best["step"], "stop": stop.group(1) if stop else "",
            "elapsed": val[-1]["elapsed"] if val else None,
            "shape": f"{cfg['layers']}x{cfg['hidden']} {cfg['batch_size']}x{cfg['seq_len']}",
            "lr": cfg.get("lr"), "dropout": cfg.get("dropout"), "weight_drop": cfg.get("weight_drop", 0.0),
            "raised": [(int(a.replace(",", "")), float(b)) for a, b in  # --adaptive-dropout's raises
                       re.findall(r"^step ([\d,]+): validation .* dropout [\d.]+ -> ([\d.]+)", err, re.M)]}


def pace_steps(r: dict, seconds: float) -> float | None:
    """The steps an early-stopped run would have made in its planned time, at the pace it made them."""
    if not r["left"] or not r["elapsed"]:
        return None
    start = seconds - r["left"]
    return r["steps"] * r["left"] / max(r["elapsed"] - start, 1e-9)


def pairs(a) -> list[list[tuple]]:
    """Jobs in slots of --jobs runs that start together (a corpus's two runs share the load)."""
    today = export_today(a.work, a.today)
    jobs = []
    for name in a.corpora:
        corpus = build(a.work, name, a.fraction if a.fit else 1.0)
        if a.fit:
            for s in FIT_STRENGTHS:
                flags = ["--patience", "0", "--weight-drop", str(s), "--dropout", str(max(0.1, s)),
                         "--max-steps", str(a.steps), *FIT_SHAPE]
                jobs.append((ROOT, corpus, name, f"{name}-fit-{s:g}", 0, flags))
        else:
            jobs.append((today, corpus, name, f"{name}-today", a.seconds, []))
            jobs.append((ROOT, corpus, name, f"{name}-new", a.seconds, []))
    for name in ([] if a.fit else a.noise):  # the spread of one figure: each arm again with another seed
        jobs.append((today, build(a.work, name), name, f"{name}-today-seed7", a.seconds, ["--seed", "7"]))
        jobs.append((ROOT, build(a.work, name), name, f"{name}-new-seed7", a.seconds, ["--seed", "7"]))
    return [jobs[i:i + a.jobs] for i in range(0, len(jobs), a.jobs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/small_corpora")
    ap.add_argument("--seconds", type=float, default=250.0, help="--max-time of each run")
    ap.add_argument("--corpora", default=",".join(KINDS))
    ap.add_argument("--noise", default="shakespeare,pystdlib", help="both arms again with --seed 7 on these")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--today", default="main", help="git ref of today's code (default: main)")
    ap.add_argument("--fit", action="store_true", help="the regularisation grid for benchmarks/fit_generalise.py")
    ap.add_argument("--steps", type=int, default=400, help="--fit: steps of each run")
    ap.add_argument("--fraction", type=float, default=1.0, help="--fit: train on this first part of each corpus")
    ap.add_argument("--out", default=None, help="--fit: append the runs to this JSON (default: benchmarks/data/"
                                                "generalise_runs.json)")
    a = ap.parse_args()
    a.corpora = [c for c in a.corpora.split(",") if c]
    a.noise = [c for c in a.noise.split(",") if c]
    os.makedirs(a.work, exist_ok=True)
    a.work = os.path.abspath(a.work)
    results, loads = {}, {}
    for slot in pairs(a):
        before = os.getloadavg()[0]
        with cf.ThreadPoolExecutor(len(slot)) as ex:
            for r in ex.map(lambda j: run(a.work, *j), slot):
                results[r["label"]] = r
        load = f"{before:.1f}-{os.getloadavg()[0]:.1f}"
        for j in slot:
            loads[j[3]] = load
        print(f"{', '.join(j[3] for j in slot)}: done (load {load})", file=sys.stderr, flush=True)
    if a.fit:
        write_fit(a, results)
    else:
        table(a, results, loads)


def write_fit(a, results: dict) -> None:
    out = a.out or os.path.join(ROOT, "benchmarks", "data", "generalise_runs.json")
    rows = json.load(open(out)) if os.path.exists(out) else []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for label, r in sorted(results.items()):
        name, s = label.split("-fit-")
        rows.append({"corpus": name, "kind": KINDS[name], "steps_budget": a.steps, "fraction": a.fraction,
                     "strength": float(s), "planned_epochs": round(a.steps / r["per_epoch"], 2), "epochs": r["epochs"], "shape": r["shape"],
                     "best_val": r["best_val"], "best_step": r["best_step"], "steps": r["steps"], "measured": stamp,
                     "cpu": cpu_model()})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    print(f"wrote {len(results)} runs to {out}")


def _dropout(r: dict) -> str:
    """The run's dropout, and where --adaptive-dropout raised it: 0.1 -> 0.2 (1,600) -> 0.3 (1,800)."""
    return " -> ".join([f"{r['dropout']:g}"] + [f"{p:g} ({s:,})" for s, p in r.get("raised", [])])


def table(a, res: dict, loads: dict) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        ref = open(os.path.join(a.work, "today", "COMMIT")).read()  # what was exported, whatever the ref is now
    except OSError:
        ref = "?"
    print(f"Small corpora, --max-time {a.seconds:g} s each, today = {a.today} ({ref.strip()}), new = this tree; "
          f"{cpu_model()}, "
          f"1 thread per run, {a.jobs} runs at once; {stamp}\n")
    print("| corpus | kind | run | shape | lr | dropout / weight drop | planned steps (epochs) | steps made | "
          "pace steps | best val (step) | stop | load |")
    print("|---|---|---|---|---:|---|---:|---:|---:|---:|---|---|")
    gains, errors = [], []
    for name in a.corpora:
        for which in ("today", "new", "today-seed7", "new-seed7"):
            r = res.get(f"{name}-{which}")
            if not r:
                continue
            pace = pace_steps(r, a.seconds) if "early" in r["stop"] else None
            ep = f" ({r['planned_epochs']:g})" if r["planned_epochs"] is not None else ""
            print(f"| {name} | {KINDS[name]} | {which} | {r['shape']} | {r['lr']:g} | {_dropout(r)} / {r['weight_drop']:g} | "
                  f"{r['planned_steps'] or 0:,.0f}{ep} | {r['steps']:,} ({r['epochs'] or 0:.1f} ep) | "
                  f"{'' if pace is None else f'{pace:,.0f}'} | {r['best_val']:.4f} ({r['best_step']:,}) | "
                  f"{r['stop']} | {loads.get(f'{name}-{which}', '')} |")
            if which == "new" and r["planned_steps"]:
                made = pace or r["steps"]
                errors.append((name, r["planned_steps"] / made - 1))
        if f"{name}-today" in res and f"{name}-new" in res:
            gains.append((name, res[f"{name}-today"]["best_val"] - res[f"{name}-new"]["best_val"]))
    print()
    for name, g in gains:
        print(f"- {name}: new plan {'lower' if g > 0 else 'NOT lower'} by {g:+.4f} nats/token")
    if gains:
        print(f"- mean gain {sum(g for _, g in gains) / len(gains):+.4f} nats/token over {len(gains)} corpora")
    for name, e in errors:
        print(f"- {name}: planned steps {e:+.0%} against those made (or, after an early stop, its pace)")
    for name in a.noise:
        for arm in ("today", "new"):
            if f"{name}-{arm}-seed7" in res and f"{name}-{arm}" in res:
                d = res[f"{name}-{arm}-seed7"]["best_val"] - res[f"{name}-{arm}"]["best_val"]
                print(f"- noise on {name}: {arm}, seed 7 against 1337: {d:+.4f} nats/token")
        if all(f"{name}-{arm}{s}" in res for arm in ("today", "new") for s in ("", "-seed7")):
            g = [res[f"{name}-today{s}"]["best_val"] - res[f"{name}-new{s}"]["best_val"] for s in ("", "-seed7")]
            print(f"- {name}: new plan lower by {g[0]:+.4f} (seed 1337) and {g[1]:+.4f} (seed 7) nats/token")


if __name__ == "__main__":
    main()
