"""Data-parallel training under torchrun: ``torchrun --nproc-per-node N -m charrnn train ...``.

Rank r of W trains rows r*B/W .. (r+1)*B/W of the B streams one process would train
(batching.StreamBatcher); DistributedDataParallel averages the gradients, so a step is the
one-process step on all B streams up to the order of the sums. gloo on the CPU, nccl on CUDA
(LOCAL_RANK's GPU); control messages (loss, clock, signals, hidden state, RNG states) always go
through gloo on the CPU, so CUDA steps need no host sync for them. Rank 0's clock is everyone's
(the schedule and --max-time decide alike); a signal seen by any rank stops all after the same
step; rank 0 alone creates the run directory (its path broadcast), takes the lock, prints and
writes; evaluation streams are split across ranks and the sums reduced; a checkpoint holds the
hidden state of all B streams and every rank's RNG state, and on resume each rank takes its rows
(another world size re-slices the same streams and says the run is no longer bit-exact).

``session(cfg, device)`` (api.py) yields ``OneProcess`` (every hook the identity) outside torchrun,
or the ``ProcessGroup`` it starts inside it; api.py passes it to the Trainer.
"""

from __future__ import annotations

import contextlib
import datetime
import gc

import torch
import torch.distributed as dist

from charrnn.errors import CharrnnError, Interrupted
from charrnn.system.launch import check_settings, env_world, shared_error
from charrnn.system.rng import rng_state, seed_everything
from charrnn.training.signals import StopRequest

RANK_SEED = 1_000_003  # rank r > 0 draws dropout masks from seed + r * RANK_SEED (rank 0 keeps the seed's)
TIMEOUT = datetime.timedelta(minutes=30)


class OneProcess:
    """The context outside torchrun: every hook is the identity."""

    world, rank, main = 1, 0, True
    run_dir = note = None  # run_dir: set by api.py, named by the error when another rank is lost

    def _same(self, x, *_):
        return x

    device = rank0_first = main_only = shard = wrap = agree = state_out = rows = _same  # x back, as it came

    def describe(self) -> str | None:
        return None

    def from_main(self, fn):
        return fn()

    def write(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def sync(self, trainer, loss):
        return loss

    def stop_request(self) -> StopRequest:
        return StopRequest()

    def state_in(self, ts: dict, log) -> dict:
        return reslice(ts, 1, 0, log)

    def reduce(self, total: float, count: int) -> tuple[float, int]:
        return total, count


class ProcessGroup(OneProcess):
    """W ranks started by torchrun; collectives for the trainer's hooks."""

    def __init__(self, world: int, rank: int, local_rank: int, device: torch.device):
        self.world, self.rank, self.local_rank, self.main = world, rank, local_rank, rank == 0
        self.cuda = device.type == "cuda"
        if device.type == "mps":
            raise shared_error("torchrun with --device mps is not supported; use --device cpu (gloo) or CUDA GPUs")
        if self.cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if self.cuda else "gloo", timeout=TIMEOUT)
        self.ctrl = dist.new_group(backend="gloo") if self.cuda else None  # control messages on the CPU
        self.stop, self.wrapped = None, []

    def describe(self) -> str | None:
        backend = "nccl" if self.cuda else "gloo"
        return (f"torchrun: {self.world} processes ({backend}), each training 1/{self.world} of the streams; "
                "rank 0 writes the run" + (f"; {self.note}" if self.note else ""))

    def close(self, clean: bool) -> None:
        """After a run: the ranks meet once more, the DDP reducers that hold the group are freed, then
        the group is destroyed (a reducer outliving it may abort the process at exit)."""
        if not clean:  # an error: the process ends now (torchrun is about to stop the other ranks)
            return
        with contextlib.suppress(RuntimeError):
            dist.barrier(group=self.ctrl)
        for w in self.wrapped:
            w.ddp = None
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()

    # -- where things run
    def device(self, device: torch.device) -> torch.device:
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def rank0_first(self, fn):
        """fn runs on rank 0 first (it fills caches, e.g. the encoded corpus), then on the others; an
        error on rank 0 stops every rank with its message."""
        def run(*args, **kwargs):
            out = self.from_main(lambda: fn(*args, **kwargs), share=False)
            return out if self.main else fn(*args, **kwargs)
        return run

    def from_main(self, fn, share: bool = True):
        """fn() on rank 0; its result (``share``) or its one-line error broadcast to every rank."""
        out = err = None
        if self.main:
            try:
                out = fn()
            except CharrnnError as e:
                err = e
        sent, msg = self._objects([out if share else None, None if err is None else str(err)])
        if err is not None:
            raise err
        if msg is not None:
            raise shared_error(msg)
        return out if self.main else sent

    def main_only(self, cm):
        return cm if self.main else contextlib.nullcontext()

    def write(self, fn, *args, **kwargs):
        return fn(*args, **kwargs) if self.main else None

    # -- training
    def shard(self, batcher):
        sizes = [int(t) for t in self._gather(torch.tensor([batcher.B]))]  # chosen after the start (the
        if len(set(sizes)) > 1 or batcher.B % self.world:               # device's batch, or halved to fit)
            raise shared_error(f"the ranks' batches ({', '.join(map(str, sizes))}) do not make one batch divisible "
                               f"among {self.world} processes; give --batch-size, a multiple of {self.world}")
        return RankRows(batcher, self.rank * batcher.B // self.world, (self.rank + 1) * batcher.B // self.world)

    def wrap(self, model):
        """DistributedDataParallel around the model's loss; rank 0's weights are broadcast to all."""
        ddp = torch.nn.parallel.DistributedDataParallel(
            _Loss(model), device_ids=[self.local_rank] if self.cuda else None,
            find_unused_parameters=bool(model.cfg.cutoffs))  # adaptive softmax: a batch may miss a cluster
        if not self.main:  # its own dropout masks (a resumed run restores its saved RNG state after this)
            seed_everything(torch.initial_seed() + self.rank * RANK_SEED)
        self.wrapped.append(_Wrapped(ddp))
        return self.wrapped[-1]

    def sync(self, trainer, loss):
        """After each step: the mean loss over the ranks, rank 0's clock, and any rank's signal."""
        stop = trainer._stop_request
        pending = float(getattr(stop, "pending", None) or 0)
        if isinstance(loss, torch.Tensor):  # CUDA: stays on the GPU (nccl), no host sync
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= self.world
            rows = self._gather(torch.tensor([0.0, trainer.elapsed, pending], dtype=torch.float64))
        else:
            rows = self._gather(torch.tensor([loss, trainer.elapsed, pending], dtype=torch.float64))
            loss = float(sum(r[0] for r in rows)) / self.world  # rank order: the same sum on every rank
        trainer.elapsed = float(rows[0][1])
        signum = int(max(r[2] for r in rows))
        if signum and stop.signum is None:
            stop.signum = signum
        return loss

    def agree(self, value: float) -> float:
        return float(self._gather(torch.tensor([value], dtype=torch.float64))[0][0])

    def stop_request(self) -> StopRequest:
        self.stop = SharedStopRequest()
        return self.stop

    # -- checkpoints
    def state_out(self, ts: dict) -> dict:
        """The full hidden state of all B streams and every rank's RNG state (complete on rank 0)."""
        hidden = ts.get("hidden")
        if hidden is not None:
            ts["hidden"] = [torch.cat(self._gather(h.detach().float().cpu().contiguous()), 1).to(h.dtype)
                            for h in hidden]
        ts["world_size"] = self.world
        ts["rank_rng"] = self._objects_all(ts["rng"])
        return ts

    def state_in(self, ts: dict, log) -> dict:
        return reslice(ts, self.world, self.rank, log if self.main else None)

    # -- evaluation
    def rows(self, x):
        s = x.shape[0]
        return x[self.rank * s // self.world:(self.rank + 1) * s // self.world]

    def reduce(self, total: float, count: int) -> tuple[float, int]:
        rows = self._gather(torch.tensor([total, float(count)], dtype=torch.float64))
        return float(sum(r[0] for r in rows)), int(sum(r[1] for r in rows))

    # -- collectives
    def _gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.ctrl)
        return out

    def _objects(self, box: list) -> list:
        dist.broadcast_object_list(box, src=0, group=self.ctrl)
        return box

    def _objects_all(self, obj) -> list:
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.ctrl)
        return out


class _Loss(torch.nn.Module):
    """The model's loss as a forward, so that DistributedDataParallel sees (and syncs) it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y, state):
        return self.model.loss(x, y, state)


class _Wrapped:
    """What step.StepRunner calls: ``loss`` through DistributedDataParallel."""

    def __init__(self, ddp):
        self.ddp = ddp

    def loss(self, x, y, state):
        return self.ddp(x, y, state)


class SharedStopRequest(StopRequest):
    """A signal is only noted (``pending``); ``sync`` makes it every rank's ``signum`` after the same
    step. A second signal is ignored: torchrun forwards a Ctrl-C that the terminal already sent, and
    itself kills the workers if they do not stop in time."""

    def __init__(self):
        super().__init__()
        self.pending = None

    def _on_signal(self, signum, frame):
        if self.pending is None:
            self.pending = signum


@contextlib.contextmanager
def session(cfg, device: torch.device, resuming: bool = False, given: set = frozenset()):
    """The process group for one training run under torchrun (one process outside it). Inside it,
    a collective that fails because another rank is gone becomes a one-line error."""
    world, rank, local_rank = env_world()
    if world <= 1:
        yield OneProcess()
        return
    note = check_settings(cfg, world, resuming, given)
    try:
        group = ProcessGroup(world, rank, local_rank, device)
        group.note = note
    except (RuntimeError, ValueError) as e:
        raise _own(CharrnnError(f"could not join the process group ({str(e).splitlines()[0][:200]}); check "
                                "MASTER_ADDR/MASTER_PORT and that every node runs the same torchrun"), rank) from None
    clean = False
    try:
        yield group
        clean = True
    except Interrupted:  # every rank stopped after the same step and saved: an orderly end
        clean = True
        raise
    except CharrnnError as e:
        raise _own(e, rank)
    except RuntimeError as e:  # gloo/nccl: a peer exited or was killed
        if not _peer_lost(e):
            raise
        run = group.run_dir or "RUN_DIR"
        raise _own(CharrnnError(f"lost contact with another rank of this run (it failed or was stopped; its own "
                                f"message says why); continue from the last save with --resume {run}"), rank) from None
    finally:
        group.close(clean)


def _own(e: CharrnnError, rank: int) -> CharrnnError:
    """An error of this rank's own: a rank other than 0 prints it too, naming itself (cli.main)."""
    if rank and not getattr(e, "shared", False):
        e.rank = rank
    return e


def _peer_lost(e: BaseException) -> bool:
    dist_error = getattr(dist, "DistError", ())
    text = str(e).lower()
    return isinstance(e, dist_error) or any(w in text for w in ("connection", "gloo", "nccl", "peer", "timed out"))


# ----------------------------------------------------------------------------- a rank's rows
# What one rank of a torchrun group owns: its rows of the B training streams, and
# its part of a saved training state (the rows of the hidden state, its RNG state), re-sliced when
# the run resumes on another number of processes.

def reslice(ts: dict, world: int, rank: int, log) -> dict:
    """This rank's rows of the saved hidden state and its RNG state; another world size re-slices."""
    try:
        return _take_part(dict(ts), world, rank, log)
    except (TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise CharrnnError(f"checkpoint's training state is incomplete ({type(e).__name__}: {e}); "
                           "it cannot be resumed exactly") from None


def _take_part(ts: dict, world: int, rank: int, log) -> dict:
    saved = int(ts.get("world_size", 1) or 1)
    hidden = ts.get("hidden")
    if isinstance(hidden, list) and world > 1:
        b = hidden[0].shape[1]
        ts["hidden"] = [h[:, rank * b // world:(rank + 1) * b // world].contiguous() for h in hidden]
    rngs = ts.get("rank_rng")
    if saved == world and isinstance(rngs, list) and len(rngs) == world:
        ts["rng"] = rngs[rank]
    elif saved != world:
        if log:
            log(f"resuming a run trained by {saved} process(es) on {world}: the same streams continue, but "
                "dropout's random draws and the order of the gradient sums change (no longer bit-exact)")
        if rank >= saved or not isinstance(rngs, list) or rank >= len(rngs):
            if rank:  # a rank the saved run did not have: the RNG state wrap() seeded, as in a fresh run
                ts["rng"] = rng_state(torch.device("cpu")) | {"cuda": None, "mps": None}
        else:
            ts["rng"] = rngs[rank]
    return ts


class RankRows:
    """This rank's rows [a, b) of a StreamBatcher's windows; epochs and positions are the batcher's
    (a window of all B rows is a few kB: it is read whole and cut)."""

    def __init__(self, batcher, a: int, b: int):
        self.batcher, self.a, self.b = batcher, a, b
        self.B, self.T = b - a, batcher.T
        self.windows_per_epoch = batcher.windows_per_epoch

    def epoch_streams(self, epoch: int):
        return self.batcher.epoch_streams(epoch)

    def window(self, streams, k: int):
        x, y = self.batcher.window(streams, k)
        return x[self.a:self.b], y[self.a:self.b]

    def fresh(self, streams, k: int) -> bool:
        return self.batcher.fresh(streams, k)
