"""``charrnn sample --interactive``: a prompt on the terminal; each line typed is a prime, continued.

The model's state is kept from turn to turn (the conversation is one text), until ``/reset``.
``Session`` is the library half (no printing); ``repl`` reads lines and prints.
"""

from __future__ import annotations

import sys

from charrnn.errors import CharrnnError
from charrnn.generation.sample import Job, Sample, make_generator
from charrnn.settings import SAMPLE, check_values

HELP = """\
  TEXT        continue the conversation with TEXT (Enter alone: just continue)
  /reset      forget the conversation; the next turn starts from a fresh state
  /temp T     sampling temperature (0: greedy)
  /length N   tokens per turn
  /help       this list
  Ctrl-C stops a continuation; Ctrl-D (or /quit) quits"""


class Session:
    """A conversation with a model (a ``charrnn.Model``): its state and sampling options."""

    def __init__(self, model, opts: dict):
        self.model, self.opts = model, dict(opts)
        self.gen = make_generator(opts["seed"], model.device)
        self.context = None  # (state, next-token log-probabilities) after everything so far

    def reset(self) -> None:
        self.context = None

    def reply(self, prime: str):
        """The continuation of ``prime`` (which is not repeated) as pieces of text."""
        job = Job(self.model.module, self.model.tokenizer, prime, self.opts, self.model.device,
                  fresh=self.context is None)
        try:
            for e in job.events(self.context, self.gen, echo=False):
                if not isinstance(e, Sample):
                    yield e[1]
        finally:  # also after Ctrl-C: keep the state as of the last whole step
            if job.context is not None:
                self.context = job.context

    def command(self, line: str) -> str | None:
        """Run a /command; returns what to tell the user, or None to quit."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return None
        if name == "/reset":
            self.reset()
            return "state cleared"
        if name == "/help":
            return HELP
        if name in ("/temp", "/length"):
            key = name[1:]
            try:
                value = float(arg) if key == "temp" else int(arg)
            except ValueError:
                return f"error: {name} needs a number (e.g. {name} {'0.5' if key == 'temp' else '200'})"
            try:
                self.opts[key] = check_values(SAMPLE, {key: value}, "sampling option")[key]
            except CharrnnError as e:
                return f"error: {e}"
            return f"{'temperature' if key == 'temp' else 'length'} {self.opts[key]:g}"
        return f"error: unknown command {name}; /help lists them"


def repl(session: Session, out=None, err=None) -> None:
    """Read primes from the terminal until Ctrl-D; print each continuation as it is generated."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        import readline  # noqa: F401  line editing and history at the prompt
    except ImportError:
        pass
    while True:
        try:
            line = input("> ")
        except EOFError:  # Ctrl-D
            out.write("\n")
            return
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt
            out.write("\n")
            continue
        if line.startswith("/"):
            reply = session.command(line)
            if reply is None:
                return
            err.write(reply + "\n")
            err.flush()
            continue
        try:
            for piece in session.reply(line):
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            err.write("\n[stopped]")
        except CharrnnError as e:  # e.g. a character the model never saw: say so, keep the session
            err.write(f"error: {e}")
        out.write("\n")
        out.flush()
