"""charrnn: train, sample and evaluate character-level RNN language models.

    import charrnn
    run = charrnn.train("corpus.txt", max_time=60)
    model = charrnn.load(run.run_dir)
    print(model.sample("ROMEO:", length=200))

The API lives in charrnn.api; it is imported on first use, so `charrnn --help` stays fast.
"""

__all__ = ["train", "resume", "load", "Model", "TrainResult", "CharrnnError", "Interrupted", "__version__"]

from charrnn.errors import CharrnnError, Interrupted  # noqa: E402  (no torch)
from charrnn.version import __version__  # noqa: E402


def __getattr__(name):
    if name in ("train", "resume", "load", "Model", "TrainResult"):
        from charrnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
