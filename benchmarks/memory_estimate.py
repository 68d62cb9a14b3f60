"""The memory estimate (charrnn/memory.py) against the peak resident memory of real steps.

    python benchmarks/memory_estimate.py

Each shape runs in a fresh interpreter: after imports and the data, the resident set size is
the baseline; then the model and AdamW are built, two training steps run as the trainer runs
them (loss, backward, clipping, step) and one evaluation window (32 streams x 512 tokens) is
scored. The peak (VmHWM) minus the baseline is compared with memory.estimate's total. Prints a
markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SHAPES = [  # cell, layers, hidden, emb, vocab, batch, window
    ("lstm", 2, 128, 64, 65, 16, 64),
    ("lstm", 2, 512, 64, 65, 32, 128),
    ("lstm", 2, 512, 64, 65, 64, 256),
    ("lstm", 1, 8, 8, 10, 1, 8),
    ("lstm", 3, 1024, 64, 165, 64, 128),
    ("gru", 2, 512, 64, 65, 64, 128),
    ("lstm", 2, 256, 64, 3636, 32, 128),
]

CHILD = r"""
import json, sys, torch
from charrnn.model.network import ModelConfig, RNNLM
from charrnn.model.heads import resolve_head
from charrnn.training.step import make_optimizer
torch.set_num_threads(2)
cell, L, H, E, V, B, T = json.loads(sys.argv[1])
def vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
zipf = 1.0 / torch.arange(1, V + 1)  # text-like targets: an adaptive head computes a tail only for its tokens
x, y, xe, ye = (torch.multinomial(zipf, n, replacement=True).view(*shape)
                for shape in ((B, T), (B, T), (32, 512), (32, 512)) for n in [shape[0] * shape[1]])
base = vm("VmRSS:")
head, cutoffs = resolve_head("auto", V, False)
m = RNNLM(ModelConfig(V, cell, L, H, E, 0.1, False, head, cutoffs))
opt = make_optimizer(m, 1e-3, 0.01, torch.device("cpu"))  # the trainer's AdamW
params, state = list(m.parameters()), None
for _ in range(2):
    loss, state = m.loss(x, y, state)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
train_peak = vm("VmHWM:") - base
m.eval()
with torch.no_grad():
    m.token_nll(xe, ye)
print(json.dumps({"train": train_peak, "peak": vm("VmHWM:") - base, "head": head, "cutoffs": list(cutoffs)}))
"""


def main() -> None:
    from charrnn.training import memory
    from charrnn.model.heads import resolve_head

    rows = []
    for shape in SHAPES:
        cell, L, H, E, V, B, T = shape
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(shape)], capture_output=True, text=True,
                             check=True, cwd=os.path.dirname(HERE)).stdout
        got = json.loads(out.strip().splitlines()[-1])
        head, cutoffs = resolve_head("auto", V, False)
        est = memory.estimate(vocab=V, cell=cell, layers=L, hidden=H, emb=E, batch=B, window=T, head=head,
                              cutoffs=cutoffs)
        rows.append((shape, head, est, got))
    import torch
    print(f"\n{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32\n")
    print("| model | vocab (head) | batch x window | estimate | measured peak RSS increase | estimate / measured |")
    print("|---|---|---|---:|---:|---:|")
    for (cell, L, H, E, V, B, T), head, est, got in rows:
        print(f"| {cell} {L}x{H} | {V} ({head}) | {B} x {T} | {memory.human(est['total'])} | "
              f"{memory.human(got['peak'])} | {est['total'] / got['peak']:.2f} |")


if __name__ == "__main__":
    main()
