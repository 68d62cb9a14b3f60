"""charrnn: train, sample and evaluate character-level RNN language models.

    import charrnn
    run = charrnn.train("corpus.txt", max_time=60)     # or text="...", or texts=[...] (records)
    model = charrnn.load(run.run_dir)
    print(model.sample("ROMEO:", length=200))
    run.plot(); charrnn.inspect(run); charrnn.runs()   # what the CLI's see-inside commands show
    model.viz("some text")                             # the neuron page, inline in a notebook

The API lives in charrnn.api (the report calls in charrnn.reports.calls, which it re-exports); both
are imported on first use, so `charrnn --help` stays fast.
"""

__all__ = ["train", "resume", "load", "Model", "TrainResult", "inspect", "runs", "plot", "corpora", "fetch_corpus",
           "cache", "CharrnnError", "Interrupted", "__version__"]

from charrnn.errors import CharrnnError, Interrupted  # noqa: E402  (no torch)
from charrnn.version import __version__  # noqa: E402

_API = ("train", "resume", "load", "Model", "TrainResult")
_CALLS = ("inspect", "runs", "plot", "corpora", "fetch_corpus", "cache")  # torch only when a checkpoint is read


def __getattr__(name):
    if name in _API:
        from charrnn import api

        return getattr(api, name)
    if name in _CALLS:
        from charrnn.reports import calls

        return getattr(calls, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
