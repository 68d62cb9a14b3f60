"""Reports: what is inside a model and a run (inspect, runs), learning curves (plot), activations (viz)."""
