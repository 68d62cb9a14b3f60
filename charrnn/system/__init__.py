"""The machine underneath every stage: atomic files, run directories, random state, device and precision,
progress bars, and the private torch APIs behind one compat module."""
