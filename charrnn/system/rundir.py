"""The run directory: every file name of a run, naming new runs, locking, config.json and
metrics.jsonl, and finding the latest run or a checkpoint. Imports no torch.

    checkpoints/<name>/best.pt        lowest validation loss so far
                       last.pt        latest training position (resume from here)
                       config.json    the run's settings
                       metrics.jsonl  one JSON line per log point and per evaluation
                       lock           PID of the trainer that owns the run
    checkpoints/.cache/               encoded corpora, keyed by content and settings
"""

from __future__ import annotations

import glob
import json
import os

from charrnn.errors import CharrnnError
from charrnn.settings import CHECKPOINT_DIR
from charrnn.system.fileio import append_line, atomic_write_bytes

BEST, LAST, CONFIG, METRICS, LOCK, CACHE = "best.pt", "last.pt", "config.json", "metrics.jsonl", "lock", ".cache"
CHECKPOINTS = (BEST, LAST)


def corpus_name(path: str) -> str:
    """A run name from a corpus path: the file's stem, with only safe characters."""
    base = os.path.basename(os.path.normpath(path))
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return safe or "run"


def has_checkpoint(run_dir: str) -> bool:
    return any(os.path.exists(os.path.join(run_dir, f)) for f in CHECKPOINTS)


def new_run_dir(checkpoint_dir: str, corpus: str, name: str | None) -> str:
    """A fresh run directory: CHECKPOINT_DIR/<name>, or <corpus stem>(-2, -3, ...) when unnamed."""
    base = name or corpus_name(corpus)
    path = os.path.join(checkpoint_dir, base)
    if name is not None:
        if has_checkpoint(path):
            raise CharrnnError(f"run '{path}' already has checkpoints; continue it with --resume {path}, "
                               "or pick another --name")
    else:
        i = 1
        while has_checkpoint(path) or os.path.exists(os.path.join(path, LOCK)):
            i += 1
            path = os.path.join(checkpoint_dir, f"{base}-{i}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CharrnnError(f"cannot create run directory '{path}': {e.strerror}; choose another "
                           "--checkpoint-dir") from None
    if not os.access(path, os.W_OK):
        raise CharrnnError(f"run directory '{path}' is not writable; choose another --checkpoint-dir")
    return path


class RunLock:
    """A lock file holding the owner's PID; a lock left by a dead process is taken over."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK)
        self.held = False

    def __enter__(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._owner()
                if pid is not None and pid != os.getpid() and _pid_alive(pid):
                    raise CharrnnError(f"run directory '{os.path.dirname(self.path)}' is in use by another "
                                       f"charrnn train (pid {pid}); wait for it or use another --name") from None
                try:
                    os.unlink(self.path)  # stale: its owner is gone
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise CharrnnError(f"cannot create lock file '{self.path}': {e.strerror}; check that the run "
                                   "directory is writable") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise CharrnnError(f"could not take the lock '{self.path}'; remove it if no training is running")

    def _owner(self):
        return _lock_pid(self.path)

    def __exit__(self, *exc):
        if self.held and self._owner() == os.getpid():
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.held = False


def lock_alive(run_dir: str) -> bool:
    """Whether a live process holds the run's lock (a charrnn train is running there)."""
    pid = _lock_pid(os.path.join(run_dir, LOCK))
    return pid is not None and _pid_alive(pid)


def _lock_pid(path: str) -> int | None:
    """The PID a lock file holds (-1: empty), or None without a readable one."""
    try:
        with open(path) as f:
            return int(f.read().strip() or -1)
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # an empty or broken lock file: os.kill would signal a group (0) or every process (-1)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


# ----------------------------------------------------------------------------- config and metrics

def write_config(run_dir: str, settings: dict) -> None:
    """The run's settings, human-readable, next to its checkpoints."""
    atomic_write_bytes((json.dumps(settings, indent=2) + "\n").encode(), os.path.join(run_dir, CONFIG))


def read_config(run_dir: str) -> dict | None:
    try:
        with open(os.path.join(run_dir, CONFIG), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def append_metrics(run_dir: str, record: dict) -> None:
    append_line(os.path.join(run_dir, METRICS), json.dumps(record))


def read_metrics(run_dir: str) -> list[dict]:
    """Every well-formed line of metrics.jsonl (a line torn by a crash is skipped)."""
    out = []
    try:
        with open(os.path.join(run_dir, METRICS), encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("step"), int):
                    out.append(rec)
    except OSError:
        pass
    return out


def full_best(run_dir: str, best: dict | None) -> dict | None:
    """A run's best validation figure: best.pt scored on the whole validation split, the "scope":
    "all" line the trainer writes to metrics.jsonl when training ends (periodic evaluations under
    --eval-tokens are estimates on part of it); when --max-time left no time for that, the "scope":
    "estimate" line of the best periodic evaluation (shown as an estimate everywhere); ``best`` as it is
    when no such line is for its step."""
    if not best or not isinstance(best.get("step"), int):
        return best
    full = [r for r in read_metrics(run_dir) if r.get("split") == "val" and r.get("scope") in ("all", "estimate")
            and r["step"] == best["step"] and isinstance(r.get("bpc"), (int, float))]
    return full[-1] if full else best  # "scope": "estimate": --max-time left no time to score all of it


def comparable(m: dict, best: dict | None) -> bool:
    """Whether evaluation ``m`` may replace the best so far (like with like): one that --max-time cut
    short scored fewer (other) tokens than the best did, and is not compared with it."""
    return not best or m.get("tokens", 0) >= best.get("tokens", 0)


def best_from_metrics(run_dir: str, metrics: list[dict] | None = None) -> dict | None:
    """The best validation figure from metrics.jsonl alone: the evaluation best.pt holds (the lowest loss
    among those the trainer compared, in their order: ``comparable``), scored on the whole split when the
    run wrote that line (full_best)."""
    metrics = read_metrics(run_dir) if metrics is None else metrics
    best = None
    for r in metrics:
        if (r.get("split") == "val" and r.get("scope") not in ("all", "estimate") and isinstance(r.get("loss"), (
                int, float)) and isinstance(r.get("bpc"), (int, float)) and comparable(r, best)
                and (best is None or r["loss"] < best["loss"])):
            best = r
    return full_best(run_dir, best)


def truncate_metrics(run_dir: str, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be written again)."""
    if not os.path.exists(os.path.join(run_dir, METRICS)):
        return
    keep = [json.dumps(r) + "\n" for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_bytes("".join(keep).encode(), os.path.join(run_dir, METRICS))


# ----------------------------------------------------------------------------- finding runs

def latest_run(checkpoint_dir: str) -> str | None:
    """The run directory whose last.pt (or best.pt) was written most recently."""
    best, best_t = None, -1.0
    for d in glob.glob(os.path.join(checkpoint_dir, "*")):
        for name in CHECKPOINTS:
            p = os.path.join(d, name)
            if os.path.isfile(p) and os.path.getmtime(p) > best_t:
                best, best_t = d, os.path.getmtime(p)
    return best


def run_names(checkpoint_dir: str) -> list[str]:
    """The runs under checkpoint_dir (subdirectories with best.pt or last.pt), by name."""
    try:
        names = sorted(os.listdir(checkpoint_dir))
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and has_checkpoint(os.path.join(checkpoint_dir, n))]


def find_checkpoint(arg: str, checkpoint_dir: str = CHECKPOINT_DIR, prefer: str = BEST) -> str | None:
    """A checkpoint path from a .pt file, a run directory or a run name under checkpoint_dir; None if
    ``arg`` is none of these (a run directory without checkpoints is an error)."""
    if os.path.lexists(arg) and not os.path.isdir(arg):
        return arg  # any file: load_checkpoint names what is wrong with it
    for cand in (arg, os.path.join(checkpoint_dir, arg)):
        if os.path.isfile(cand) and cand.endswith(".pt"):
            return cand
        if os.path.isdir(cand) and has_checkpoint(cand):
            return next(os.path.join(cand, n) for n in (prefer, BEST, LAST) if os.path.isfile(os.path.join(cand, n)))
    if os.path.isdir(arg):
        raise CharrnnError(f"run directory '{arg}' has no {BEST} or {LAST}; train it first")
    return None


def as_arg(run) -> str | None:
    """A model argument as a string: a TrainResult's run directory, a Model's checkpoint file (duck-typed:
    charrnn.api is a layer above), a path or a run name as given; None stays None (the latest run)."""
    for attr in ("run_dir", "path"):
        if not isinstance(run, (str, os.PathLike)) and hasattr(run, attr):
            return getattr(run, attr)
    return None if run is None else os.fspath(run)


def resolve_checkpoint(arg: str | None, checkpoint_dir: str = CHECKPOINT_DIR, prefer: str = BEST) -> str:
    """The checkpoint every command reads a model from: ``arg`` is a run name under checkpoint_dir
    (what ``charrnn runs`` lists), a run directory (its ``prefer``, else the other), or a .pt file;
    None: the most recent run. Anything else is a one-line error listing the runs that exist."""
    if arg is None:
        run = latest_run(checkpoint_dir)
        if run is None:
            raise CharrnnError(f"no trained model found under '{checkpoint_dir}/'; run 'charrnn train' first "
                               "or give a checkpoint path")
        arg = run
    found = find_checkpoint(arg, checkpoint_dir, prefer)
    if found is None:
        raise CharrnnError(unknown_run(arg, checkpoint_dir))
    return found


def resolve_run_dir(arg: str | None, checkpoint_dir: str = CHECKPOINT_DIR) -> str:
    """A run directory from the same forms as resolve_checkpoint (a run still before its first save,
    with metrics.jsonl only, counts too)."""
    if arg is not None:
        for cand in (arg, os.path.join(checkpoint_dir, arg)):
            if os.path.isdir(cand) and os.path.exists(os.path.join(cand, METRICS)):
                return cand
    return os.path.dirname(resolve_checkpoint(arg, checkpoint_dir)) or "."


def unknown_run(arg: str, checkpoint_dir: str) -> str:
    """The one line for a model argument that names nothing: what it is not, and the runs that exist."""
    names = run_names(checkpoint_dir)
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    runs = (f"runs: {shown} (charrnn runs lists them)" if names else
            "there are no runs there yet (charrnn train makes one)")
    if os.sep in arg or arg.endswith(".pt") or (os.altsep and os.altsep in arg):
        return f"checkpoint '{arg}' does not exist (nor a run of that name in '{checkpoint_dir}/'); {runs}"
    return f"no run or checkpoint '{arg}' in '{checkpoint_dir}/'; {runs}"


def cache_dir(checkpoint_dir: str) -> str:
    return os.path.join(checkpoint_dir, CACHE)


def checkpoint_dir_of(ckpt_path: str) -> str:
    """The checkpoint directory a checkpoint file's run lives in (where its corpus cache is)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(ckpt_path)))
