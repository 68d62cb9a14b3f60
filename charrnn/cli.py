"""Command line: a thin click layer that parses, calls the pipeline and prints."""

from __future__ import annotations

import json
import math
import os
import sys

import click

from charrnn import __version__
from charrnn.errors import CharrnnError, Interrupted
from charrnn.train import TrainConfig


class FiniteFloat(click.ParamType):
    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


NUMBER = FiniteFloat()
CKPT_DIR = click.option("--checkpoint-dir", default="checkpoints", show_default=True, metavar="DIR",
                        help="Directory that holds the runs (used to find the latest run).")


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Train, sample and evaluate character-level LSTM/GRU language models.

    \b
      charrnn train corpus.txt       train a model (no file: the built-in 'pystdlib' corpus)
      charrnn sample --temp 0.8      generate text from the latest model
      charrnn eval                   loss, perplexity and bits per character
    """


d = TrainConfig()  # the defaults live in one place


@cli.command()
@click.argument("corpus", required=False, metavar="[CORPUS]")
@click.option("--resume", "resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR|CKPT]",
              help="Continue a run exactly where it stopped (no value: the latest run).")
@click.option("--tokenizer", type=click.Choice(["char", "byte", "bpe", "unigram"]), default=d.tokenizer,
              show_default=True, help="char: Unicode characters; byte: UTF-8 bytes; bpe/unigram: sentencepiece.")
@click.option("--vocab-size", type=int, default=d.vocab_size, show_default=True,
              help="Vocabulary size of a bpe/unigram tokenizer.")
@click.option("--val-frac", type=NUMBER, default=d.val_frac, show_default=True,
              help="Fraction of the text (after train) held out for validation.")
@click.option("--test-frac", type=NUMBER, default=d.test_frac, show_default=True,
              help="Fraction of the text (at the end) held out for testing.")
@click.option("--val-file", type=str, default=None, metavar="PATH",
              help="Validate on this file instead of a slice of the corpus.")
@click.option("--batch-size", type=int, default=d.batch_size, show_default=True,
              help="Parallel streams per step (B).")
@click.option("--seq-len", type=int, default=d.seq_len, show_default=True,
              help="Window length T of truncated backprop through time.")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default=d.cell, show_default=True,
              help="Recurrent cell.")
@click.option("--layers", type=int, default=d.layers, show_default=True, help="Stacked recurrent layers.")
@click.option("--hidden", type=int, default=d.hidden, show_default=True, help="Hidden units per layer.")
@click.option("--emb", type=int, default=d.emb, show_default=True, help="Embedding size.")
@click.option("--dropout", type=NUMBER, default=d.dropout, show_default=True,
              help="Dropout on embeddings, between layers and before the output layer.")
@click.option("--tie-weights/--no-tie-weights", default=d.tie_weights, show_default=True,
              help="Share embedding and output weights (needs --emb equal to --hidden).")
@click.option("--head", type=click.Choice(["auto", "full", "adaptive"]), default=d.head, show_default=True,
              help="Output layer: full softmax, or adaptive softmax (cheap for big vocabularies, e.g. "
                   "Chinese); auto: adaptive above 1024 tokens.")
@click.option("--lr", type=NUMBER, default=d.lr, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--min-lr-frac", type=NUMBER, default=d.min_lr_frac, show_default=True,
              help="Final learning rate as a fraction of --lr (cosine decay).")
@click.option("--warmup", type=int, default=d.warmup, show_default=True, help="Linear warmup steps.")
@click.option("--weight-decay", type=NUMBER, default=d.weight_decay, show_default=True,
              help="AdamW weight decay on weight matrices.")
@click.option("--grad-clip", type=NUMBER, default=d.grad_clip, show_default=True,
              help="Clip the global gradient norm to this (0: off).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--max-epochs", type=NUMBER, default=None,
              help="Stop after this many passes over the training text (10 if no limit is given).")
@click.option("--max-time", type=NUMBER, default=None, metavar="SECONDS",
              help="Stop after this much wall-clock training time; the LR schedule fits the budget.")
@click.option("--patience", type=int, default=d.patience, show_default=True,
              help="Stop after this many evaluations without improvement (0: never).")
@click.option("--eval-every", type=int, default=d.eval_every, show_default=True,
              help="Evaluate on the whole validation text every N steps.")
@click.option("--save-every", type=int, default=d.save_every, show_default=True,
              help="Write last.pt every N steps (also at the end and on Ctrl-C).")
@click.option("--log-every", type=int, default=d.log_every, show_default=True,
              help="Record train loss to metrics.jsonl every N steps.")
@click.option("--seed", type=int, default=d.seed, show_default=True, help="Random seed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=d.device, show_default=True,
              help="auto picks CUDA when present.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=d.precision,
              show_default=True, help="auto: bf16 autocast on CPUs with AMX, fp32 (TF32 matmuls) elsewhere.")
@click.option("--skip-nonfinite", is_flag=True, default=False,
              help="Skip (and count) batches with a non-finite loss or gradient instead of stopping.")
@click.option("--name", type=str, default=None, help="Run name (default: from the corpus file name).")
@CKPT_DIR
@click.pass_context
def train(ctx, corpus, resume, **opts):
    """Train a model on CORPUS, a UTF-8 text file (default: 'pystdlib', this Python's stdlib source).

    Checkpoints go to CHECKPOINT_DIR/<name>/ (best.pt, last.pt, config.json, metrics.jsonl).
    """
    from charrnn.train import resume as resume_run, train as train_run

    if resume is not None:
        given = {k: v for k, v in opts.items()
                 if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
        if corpus is not None:
            given["corpus"] = _corpus_path(corpus)
        summary = resume_run(resume or None, given, checkpoint_dir=opts["checkpoint_dir"], log=_log)
    else:
        cfg = TrainConfig(corpus=_corpus_path(corpus or "pystdlib"), **opts)
        if cfg.val_file:
            cfg.val_file = os.path.abspath(cfg.val_file)
        summary = train_run(cfg, log=_log)
    best, run_dir = summary["best"], summary["run_dir"]
    _log(f"done ({summary['stop']}) after {summary['step']} steps, {summary['elapsed']:.0f}s")
    if best:
        _log(f"best val: loss {best['loss']:.4f} nats/token, {best['bpc']:.4f} bits/char at step {best['step']} "
             f"-> {os.path.join(run_dir, 'best.pt')}")
    if summary.get("skipped"):
        _log(f"skipped {summary['skipped']} batches with non-finite loss or gradient")
    _log(f"sample with: charrnn sample {run_dir}")


def _corpus_path(corpus: str) -> str:
    from charrnn.data import BUILTIN_CORPORA

    if corpus in BUILTIN_CORPORA and not os.path.exists(corpus):
        return corpus
    return os.path.abspath(corpus)


@cli.command()
@click.argument("checkpoint", required=False)
@click.option("--temp", type=NUMBER, default=0.8, show_default=True,
              help="Sampling temperature; 0 is greedy (always the most likely token).")
@click.option("--length", type=int, default=1000, show_default=True, help="Tokens to generate.")
@click.option("--prime", type=str, default="", help="Text to start from (printed first).")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample among the k most likely (0: all).")
@click.option("--seed", type=int, default=None, help="Random seed: the same seed gives the same text.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="Device for generation (one token at a time: the CPU is usually fastest).")
@click.option("--skip-unknown", is_flag=True, default=False, help="Drop prime characters the model never saw.")
@CKPT_DIR
def sample(checkpoint, temp, length, prime, top_k, seed, device, skip_unknown, checkpoint_dir):
    """Generate text from CHECKPOINT (a .pt file or run directory; default: best.pt of the latest run)."""
    from charrnn.checkpoint import load_model, resolve_checkpoint
    from charrnn.runtime import resolve_device
    from charrnn.sample import check_sample_args, generate, start_ids

    check_sample_args(length, temp, top_k)  # before loading anything
    path = resolve_checkpoint(checkpoint, checkpoint_dir)
    dev = resolve_device(device)
    model, tok, _ = load_model(path, dev)
    start_ids(tok, prime, skip_unknown)  # reject a bad --prime before printing anything
    _log(f"sampling from {path}")
    out = sys.stdout
    for piece in generate(model, tok, length, temp, prime, top_k, seed, dev, skip_unknown):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()


@cli.command(name="eval")
@click.argument("checkpoint", required=False)
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Which held-out part of the run's corpus to score.")
@click.option("--file", "file", type=str, default=None, metavar="PATH", help="Score this text file instead.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the results as one JSON object on stdout.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto picks CUDA when present.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: the precision the run trained with on this device.")
@click.option("--skip-unknown", is_flag=True, default=False, help="Drop characters of --file the model never saw.")
@CKPT_DIR
def evaluate(checkpoint, split, file, as_json, device, precision, skip_unknown, checkpoint_dir):
    """Cross-entropy, perplexity and bits per character of CHECKPOINT on a whole text."""
    from charrnn.checkpoint import resolve_checkpoint
    from charrnn.evaluate import evaluate_checkpoint

    path = resolve_checkpoint(checkpoint, checkpoint_dir)
    m = evaluate_checkpoint(path, split, file, device, precision, skip_unknown, progress=True)
    if as_json:
        click.echo(json.dumps(m))
        return
    click.echo(f"{m['text']} ({m['tokens']:,} {m['tokenizer']} tokens, {m['chars']:,} characters)")
    click.echo(f"  loss        {m['loss']:.4f} nats/token")
    click.echo(f"  perplexity  {m['perplexity']:.3f} per token")
    click.echo(f"  bits/char   {m['bpc']:.4f}")
    click.echo(f"  bits/byte   {m['bpb']:.4f}")


def main(argv=None) -> None:
    """Entry point: one-line errors, conventional exit codes, no tracebacks for user mistakes."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=args or ["--help"], prog_name="charrnn", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        msg = e.format_message()
        if isinstance(e, click.UsageError) and e.ctx is not None:
            msg += f" (see '{e.ctx.command_path} --help')"
        click.echo(f"error: {msg}", err=True)
        sys.exit(e.exit_code)
    except CharrnnError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except Interrupted as e:
        click.echo(str(e), err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # e.g. charrnn sample | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)


from charrnn.see_commands import inspect_cmd, plot_cmd, runs_cmd, viz_cmd  # noqa: E402
for _cmd in (inspect_cmd, runs_cmd, plot_cmd, viz_cmd):
    cli.add_command(_cmd)
