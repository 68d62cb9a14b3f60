"""Command line: a thin click layer over the Python API (api.py) that parses, calls and prints.

The options of ``charrnn train`` come from the settings table (settings.TRAIN), those of sample and
eval partly from settings.SAMPLE / settings.EVAL. Importing this module imports no torch: the
library is imported inside each command, so ``--help`` is fast.
"""

from __future__ import annotations

import json
import os
import sys

import click

from charrnn.cli.options import CKPT_DIR, Command, log, model_doc, options
from charrnn.errors import CharrnnError, Interrupted
from charrnn.settings import DEVICES, EVAL, SAMPLE, TRAIN
from charrnn.system import clock
from charrnn.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Train, sample and evaluate character-level LSTM/GRU language models.

    \b
      charrnn train corpus.txt       train a model (no file: the built-in 'pystdlib' corpus)
      charrnn sample --temp 0.8      generate text from the latest model
      charrnn eval                   loss, perplexity and bits per character (--dynamic: adapting)
      charrnn score MODEL FILE       bits per character of every line of a text
      charrnn inspect / runs         what a checkpoint holds; a table of the runs
      charrnn plot / viz             learning curves; a neuron-activation page in the browser
      charrnn corpora                the named corpora (enwik8, text8, tinyshakespeare)
      charrnn export --format html   the model as ONNX, one web page that writes, or weights only

    Every command that reads a model takes it first, as MODEL: a run name (what 'charrnn runs'
    lists), a run directory or a .pt file; without one, the latest run under --checkpoint-dir.
    """


@cli.command(cls=Command, groups={"resume": "output"})
@click.argument("corpus", required=False, metavar="[CORPUS]")
@click.option("--resume", "resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR|CKPT]",
              help="Continue a run exactly where it stopped (no value: the latest run).")
@options(TRAIN, skip=("corpus",))
@click.pass_context
def train(ctx, corpus, resume, **settings):
    """Train a model on CORPUS: a UTF-8 text file, a named corpus (enwik8, text8, tinyshakespeare:
    see 'charrnn corpora'), or by default 'pystdlib', this Python's standard-library source.

    Checkpoints go to CHECKPOINT_DIR/<name>/ (best.pt, last.pt, config.json, metrics.jsonl).
    Data-parallel: 'torchrun --nproc-per-node N -m charrnn train ...' (each process trains 1/N of
    the --batch-size streams; see docs/guides/many-processes.md).
    """
    from charrnn import api

    given = {k: v for k, v in settings.items() if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    if resume is not None:
        if corpus is not None:
            given["corpus"] = corpus
        given.pop("checkpoint_dir", None)
        result = api.resume(resume or None, checkpoint_dir=settings["checkpoint_dir"], **given)
    else:
        result = api.train(corpus, **given)  # settings not given keep their defaults (or a named corpus's)
    if _other_rank():
        return  # under torchrun rank 0 alone reports
    log(f"done ({result.stop}) after {result.steps} steps, {result.elapsed:.0f}s")
    if result.best:
        est = f"~ (est. on {result.best['tokens']:,} tokens)" if result.best.get("scope") == "estimate" else ""
        log(f"best val{est}: loss {result.best['loss']:.4f} nats/token, {result.best['bpc']:.4f} bits/char at step "
             f"{result.best['step']}{' (whole split)' if result.best.get('scope') == 'all' else ''} -> "
             f"{result.best_path}")
    if result.skipped:
        log(f"skipped {result.skipped} batches with non-finite loss or gradient")
    log(f"sample with: charrnn sample {result.run_dir}")


@cli.command(cls=Command, groups={"prime": "prime", "as_json": "output", "interactive": "output", "device": "device"})
@click.argument("checkpoint", required=False, metavar="[MODEL]")
@options(SAMPLE[:2])
@click.option("--prime", type=str, default="", help="Text to start from (printed first).")
@options(SAMPLE[2:])
@click.option("--json", "as_json", is_flag=True, default=False,
              help="One JSON object per sample and line: index (1..N), text (the prime included), tokens "
                   "(generated), logprob (the model's own log-probability of them at temperature 1), end.")
@click.option("--interactive", is_flag=True, default=False,
              help="A prompt on the terminal: type a prime, get a continuation (the model's state is kept "
                   "across turns; /help lists the commands).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Device for generation (one token at a time: the CPU is usually fastest).")
@CKPT_DIR
@model_doc
def sample(checkpoint, prime, as_json, interactive, device, checkpoint_dir, **opts):
    """Generate text from MODEL (its best.pt when a run is given).

    {MODEL_HELP}.

    Several samples (--num-samples) are separated by a line '--- sample I ---' before each; a
    records run prints one record per line. Several temperatures (--temp 0.5,0.8,1.0): a line
    '--- temp T ---' before the samples of each.
    """
    from charrnn import api
    from charrnn.generation.sample import check_options
    from charrnn.settings import check_values

    opts = check_values(SAMPLE, opts)  # before loading anything
    temps = opts["temp"] if isinstance(opts["temp"], tuple) else None  # --temp 0.5,0.8,1.0
    check_options(prime, {**opts, "temp": opts["temp"] if temps is None else temps[0]})
    if interactive:
        _check_interactive(prime, as_json, opts, temps)
    model = api.load(checkpoint, device=device, checkpoint_dir=checkpoint_dir)
    if interactive:
        from charrnn.generation.interactive import Session, repl

        session = Session(model, opts)
        log(f"sampling from {model.path}; type a prime and Enter (/help: commands, Ctrl-D: quit)")
        repl(session)
        return
    from charrnn.data.records import records_separator

    sep = records_separator(model.config) if model.config else None
    if opts["novel"]:
        from charrnn.generation.novelty import check_records_run

        check_records_run(model.config)
    if opts["num_samples"] == 1 and opts["beam"] is None and not as_json and temps is None and not opts["novel"]:
        from charrnn.cli.samples import note_escapes

        pieces = model.stream(prime, **opts)  # a bad --prime fails here, before any output
        log(f"sampling from {model.path}")
        note_escapes(opts["stop"], log)
        last = ""
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            last = piece or last
        _end_line(last)
        return
    from charrnn.cli.samples import print_samples

    print_samples(model, prime, opts, temps, as_json, sep, log)


def _end_line(text: str) -> None:
    """Finish the output with a line break, unless the text ended with one."""
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def _check_interactive(prime, as_json, opts, temps=None) -> None:
    if temps is not None:
        raise CharrnnError("--interactive samples at one temperature; give --temp a single value")
    if not sys.stdin.isatty():
        raise CharrnnError("--interactive needs a terminal on stdin; pipe primes with --prime-file or --prime instead")
    for flag, bad in (("--prime", prime), ("--prime-file", opts["prime_file"] is not None), ("--json", as_json),
                      ("--num-samples", opts["num_samples"] != 1), ("--beam", opts["beam"] is not None),
                      ("--novel", opts["novel"])):
        if bad:
            raise CharrnnError(f"{flag} does not go with --interactive (type the prime at the prompt); drop it")


@cli.command(name="eval", cls=Command, groups={"file": "text", "as_json": "output", "device": "device"})
@click.argument("checkpoint", required=False, metavar="[MODEL]")
@options(EVAL[:1])
@click.option("--file", "file", type=str, default=None, metavar="PATH", help="Score this text file instead.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the results as one JSON object on stdout.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto: CUDA, then Apple MPS, then the CPU.")
@options(EVAL[1:])
@CKPT_DIR
@click.pass_context
@model_doc
def evaluate(ctx, checkpoint, file, as_json, device, checkpoint_dir, **opts):
    """Cross-entropy, perplexity and bits per character of MODEL (its best.pt when a run is given) on a
    whole text: by default its run's validation split (--split). {MODEL_HELP}.

    --dynamic: dynamic evaluation (Krause et al. 2018): the model adapts to the text as it reads it,
    each segment of --dyn-seq tokens scored before one SGD step is taken on it.
    """
    from charrnn import api
    from charrnn.settings import check_values

    given = {k: v for k, v in opts.items() if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    check_values(EVAL, given)  # before loading anything
    m = api.load(checkpoint, device=device, checkpoint_dir=checkpoint_dir).evaluate(file, **given)
    if as_json:
        click.echo(json.dumps(m))
        return
    click.echo(f"{m['text']} ({m['tokens']:,} {m['tokenizer']} tokens, {m['chars']:,} characters)")
    if m.get("dynamic"):
        click.echo(f"  dynamic evaluation: --dyn-lr {m['dyn_lr']:g}, --dyn-seq {m['dyn_seq']}, "
                   f"--dyn-decay {m['dyn_decay']:g}")
    click.echo(f"  loss        {m['loss']:.4f} nats/token")
    click.echo(f"  perplexity  {m['perplexity']:.3f} per token")
    click.echo(f"  bits/char   {m['bpc']:.4f}")
    click.echo(f"  bits/byte   {m['bpb']:.4f}")
    if m.get("baselines"):
        from charrnn.evaluation.baselines import describe, lines

        click.echo(f"  baselines on {describe(m['baselines'])}:")
        for line in lines(m["baselines"]):
            click.echo("  " + line)




def main(argv=None) -> None:
    """Entry point: one-line errors, conventional exit codes, no tracebacks for user mistakes."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:  # a process of its own: --max-time counts from its start (system/clock.py)
        clock.from_process_start()
    try:
        rv = cli.main(args=args or ["--help"], prog_name="charrnn", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except (click.ClickException, CharrnnError, Interrupted, KeyboardInterrupt) as e:
        if _other_rank(e):  # torchrun: an error all ranks meet alike is printed by rank 0 alone
            sys.exit(getattr(e, "exit_code", 130))
        _report(e)
    except BrokenPipeError:  # e.g. charrnn sample | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)


def _other_rank(e=None) -> bool:
    """Under torchrun, True on ranks other than 0 (unless ``e`` is an error of that rank's own)."""
    from charrnn.system.launch import is_other_rank

    return is_other_rank() and getattr(e, "rank", None) is None


def _report(e) -> None:
    """The one line for an error, its exit code."""
    if isinstance(e, click.ClickException):
        msg = e.format_message()
        if isinstance(e, click.UsageError) and e.ctx is not None:
            msg += f" (see '{e.ctx.command_path} --help')"
        click.echo(f"error: {msg}", err=True)
    elif isinstance(e, CharrnnError):
        rank = f"rank {e.rank}: " if getattr(e, "rank", None) is not None else ""
        click.echo(f"error: {rank}{e}", err=True)
    elif isinstance(e, Interrupted):
        click.echo(e.shell_message, err=True)  # the shell's resume command (str(e) names the Python call)
    else:
        click.echo("interrupted", err=True)
    sys.exit(getattr(e, "exit_code", 130))

from charrnn.cli.cache import cache_cmd  # noqa: E402
from charrnn.cli.corpora import corpora_cmd  # noqa: E402
from charrnn.cli.export import export_cmd  # noqa: E402
from charrnn.cli.score import score_cmd  # noqa: E402
from charrnn.cli.see import inspect_cmd, plot_cmd, runs_cmd, viz_cmd  # noqa: E402

for _cmd in (score_cmd, inspect_cmd, runs_cmd, plot_cmd, viz_cmd, corpora_cmd, cache_cmd):
    cli.add_command(_cmd)
cli.add_command(export_cmd)
