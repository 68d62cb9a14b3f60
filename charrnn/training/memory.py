"""Memory first, never an allocator traceback: estimate what a run needs before anything is
allocated, compare it with what the device has, and refuse an impossible run in one line.

The estimate (bytes), for P parameters, n = batch x window tokens per step, V output classes:

    weights, gradients, AdamW's two moments     16 P   (+ 2 P bf16 weight copies under autocast)
    optimizer/clipping temporaries               4 P
    the runtime (kernels, workspaces)            128 MB (CPU), 512 MB (CUDA), 256 MB (MPS)
    activations kept for backward               n (e + L (ACT_PER_H h)) s   (gates, cell, hidden, masks)
    output layer                                3 n V' 4   (logits, log-softmax, their gradient)
    evaluation (weights stay resident)          S streams x 512 (2 V' + 4 h) 4 + 16 bytes per val token
    attention (--attention M)                   n (8 h + 3 (M + C)) 4 + B (M + T) 4 h 4
                                                (query, normed keys/values, the band of scores and
                                                their softmax per token; C = max(M, 64) queries a chunk)

s is 4 bytes (fp32) or 2 (bf16), V' is V for a full softmax and the shortlist plus clusters of
an adaptive one, S = batching.eval_stream_count (up to 32). benchmarks/memory_estimate.py checks it
against the peak RSS of real steps (docs/BENCHMARKS.md: 1.0-1.3x).
"""

from __future__ import annotations


from charrnn.errors import CharrnnError
from charrnn.model.sizes import n_parameters, output_width

ACT_PER_H = {"lstm": 12, "gru": 16, "rnn": 6,  # floats kept per hidden unit, layer and token (measured);
             "qrnn": 10, "sru": 12, "indrnn": 4,  # model/cells: counted from the tensors autograd keeps
             "janet": 12, "lstm-peephole": 18}    # (gates, their activations, c, h), not measured
RUNTIME = {"cpu": 128e6, "cuda": 512e6, "mps": 256e6}  # kernels' code and workspaces, allocator slack
EVAL_STREAMS, EVAL_WINDOW = 32, 512  # batching.eval_stream_count / evaluate.EVAL_WINDOW at most
FIT_FRACTION = 0.9  # refuse above this fraction of the available memory


def estimate(*, vocab: int, cell: str, layers: int, hidden: int, emb: int, batch: int, window: int,
             head: str = "full", cutoffs=(), tied: bool = False, precision: str = "fp32",
             val_tokens: int = 0, device_data_tokens: int = 0, device: str = "cpu", ema: bool = False,
             attention: int = 0) -> dict:
    """Bytes a training run needs at its peak, by part (see the module docstring) and in total.
    ``ema``: an fp32 copy of the weights more (--ema).

    device_data_tokens: token ids that will be copied to the device (the training streams on a GPU);
    on the CPU they are already in memory.
    """
    P = n_parameters(vocab, cell, layers, hidden, emb, head, cutoffs, tied, attention)
    n, s, w = batch * window, (2 if precision == "bf16" else 4), output_width(vocab, head, cutoffs)
    state = 16 * P + 4 * P + (2 * P if precision == "bf16" else 0) + (4 * P if ema else 0)
    acts = n * (2 * emb + layers * ACT_PER_H[cell] * hidden) * s + n * hidden * 2 * 4
    logits = 3 * n * w * 4 + (n * w * s if s != 4 else 0)
    attn = attention_bytes(attention, hidden, batch, window)
    from charrnn.data.batching import eval_stream_count  # here: importing this module stays torch-free

    streams = eval_stream_count(val_tokens - 1, max_streams=EVAL_STREAMS) if val_tokens else EVAL_STREAMS
    evaluation = streams * EVAL_WINDOW * (2 * w + 4 * hidden) * 4 + 16 * val_tokens
    data = 4 * device_data_tokens
    fixed = int(RUNTIME.get(device, RUNTIME["cpu"]))
    parts = {"weights and optimizer state": state, "activations": acts, "attention": attn, "output logits": logits,
             "evaluation": evaluation, "data": data, "runtime": fixed}
    total = fixed + state + data + max(acts + attn + logits, evaluation)
    return {"parts": parts, "parameters": P, "val_bytes": 16 * val_tokens, "total": total}


def attention_bytes(span: int, hidden: int, batch: int, window: int) -> int:
    """What --attention M keeps for backward (module docstring); 0 without it."""
    if not span:
        return 0
    return batch * window * (8 * hidden + 3 * (span + max(span, 64))) * 4 + batch * (span + window) * 4 * hidden * 4


def available_bytes(device) -> int | None:
    """Memory this device can still give (None: unknown, then nothing is refused)."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch
        return int(torch.cuda.mem_get_info(device)[0])
    if kind == "mps":
        import torch
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            pass
    return _ram_available()


def _ram_available() -> int | None:
    """Available RAM on any OS, through psutil (on Linux its figure is /proc/meminfo's MemAvailable)."""
    try:
        import psutil
    except ImportError:  # a broken install: psutil is a dependency; estimate without refusing
        return None
    try:
        return int(psutil.virtual_memory().available)
    except (OSError, RuntimeError, AttributeError):
        return None


def fits(est: dict, available: int | None) -> bool:
    return available is None or est["total"] <= FIT_FRACTION * available


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"  # pragma: no cover


def advice(est: dict, cfg) -> str:
    """What to lower: the flags behind the largest part of the estimate."""
    part = max(("weights and optimizer state", "activations", "output logits", "evaluation", "attention"),
               key=lambda k: est["parts"].get(k, 0))
    if part == "attention":
        return (f"lower --attention (now {cfg.attention}), --batch-size (now {cfg.batch_size}) or --seq-len "
                f"(now {cfg.seq_len})")
    if part == "weights and optimizer state":
        return f"lower --hidden (now {cfg.hidden}) or --layers (now {cfg.layers})"
    if part == "evaluation":
        return "lower --val-frac or give a shorter --val-file" if est.get("val_bytes", 0) > est["parts"][
            "evaluation"] / 2 else f"lower --hidden (now {cfg.hidden})"
    fix = f"lower --batch-size (now {cfg.batch_size}) or --seq-len (now {cfg.seq_len})"
    if part == "output logits" and getattr(cfg, "head", "auto") != "adaptive":
        fix += ", or use --head adaptive"
    return fix


def device_name(device) -> str:
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return {"mps": "Apple GPU (MPS)"}.get(kind, "CPU")


def check(est: dict, available: int | None, cfg, device, log=None) -> None:
    """A one-line CharrnnError when the run cannot fit; a note on stderr when it only just fits."""
    if available is None:
        return
    if not fits(est, available):
        top = sorted(((k, v) for k, v in est["parts"].items() if k != "runtime"), key=lambda kv: -kv[1])[:2]
        detail = ", ".join(f"{k} {human(v)}" for k, v in top)
        raise CharrnnError(f"this run needs about {human(est['total'])} of memory ({detail}) but the "
                           f"{device_name(device)} has {human(available)} available; {advice(est, cfg)}")
    if log and est["total"] > 0.5 * available:
        log(f"note: this run needs about {human(est['total'])} of the {human(available)} available")
