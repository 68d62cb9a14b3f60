"""The version of charrnn, in one place (setup.cfg reads it; no imports)."""

__version__ = "0.3.0"
