"""--max-time is the wall time of the whole run: `charrnn train CORPUS --max-time T` as a fresh process,
timed from outside, against T.

    nice python benchmarks/max_time.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--budgets 60 300]
        [--keep-probe] [-- extra train options]

Each budget runs `python -m charrnn train CORPUS --max-time T` in a new process with a fresh checkpoint
directory (so the probe runs: its seconds are part of the budget; --keep-probe shares one cache), and
prints the process's wall time (start to exit), the time from its start to the last file written in
the run directory, the run's own account (elapsed in metrics.jsonl) and the ratio to the budget.
The load average before each run is printed: on a shared machine a step's time varies between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_CORPUS = os.path.join(ROOT, "..", "shared", "corpora", "tinyshakespeare.txt")


def run_once(corpus: str, budget: float, ck: str, name: str, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "charrnn", "train", corpus, "--max-time", f"{budget:g}", "--checkpoint-dir", ck,
           "--name", name, *extra]
    load = os.getloadavg()[0]
    wall_t0 = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    run_dir = os.path.join(ck, name)
    last_file = max(os.path.getmtime(os.path.join(run_dir, f)) for f in os.listdir(run_dir)) - wall_t0
    lines = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]
    steps = max((r["step"] for r in lines), default=0)
    budget_line = next((x for x in proc.stderr.splitlines() if x.startswith("budget: ")), "")
    return {"budget": budget, "wall": wall, "last_file": last_file, "elapsed": lines[-1].get("elapsed"),
            "steps": steps, "load": load, "budget_line": budget_line, "done": proc.stderr.splitlines()[-3:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--budgets", type=float, nargs="+", default=[60.0, 300.0])
    ap.add_argument("--keep-probe", action="store_true", help="one checkpoint directory (probe cache) for all runs")
    ap.add_argument("--out", help="keep the runs in this directory (default: a temporary one, removed)")
    ap.add_argument("extra", nargs="*", help="more `charrnn train` options (after --)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = a.out or tmp
        print(f"corpus {a.corpus}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
        print(f"{'budget s':>9} {'wall s':>8} {'to last file s':>15} {'wall / budget':>14} {'steps':>6} {'load':>5}")
        for i, b in enumerate(a.budgets):
            ck = os.path.join(tmp, "ck" if a.keep_probe else f"ck{i}")
            r = run_once(a.corpus, b, ck, f"run{i}-{b:g}s", a.extra)
            print(f"{b:>9g} {r['wall']:>8.1f} {r['last_file']:>15.1f} {r['wall'] / b:>14.3f} {r['steps']:>6} "
                  f"{r['load']:>5.1f}", flush=True)
            print(f"          {r['budget_line']}\n          " + "\n          ".join(r["done"]), flush=True)


if __name__ == "__main__":
    main()
