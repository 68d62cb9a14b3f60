"""Training: the trainer and its state, the step, schedule, EMA, fine-tuning, torchrun, and the budget
(memory estimate, probe, planner) that chooses what a time limit can buy."""
