"""Generation: one-token stepping (stepper, CUDA graphs), sampling, stop rules, beam search, the interactive prompt."""
