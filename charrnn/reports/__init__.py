"""Reports: what is inside a model and a run (inspect, runs), learning curves (plot), activations (viz)."""


class Shown:
    """Data that prints as its report (``str()``, and in IPython/Jupyter): ``render()`` makes the text."""

    def render(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.render()

    def _repr_pretty_(self, p, cycle) -> None:  # IPython / Jupyter
        p.text(self.render())
