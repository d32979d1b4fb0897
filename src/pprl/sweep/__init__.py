"""Sweeps of training runs: a sweep folder read as data (`jobs`: each job's settings, status and Table 2, the
Pareto front) and GPU placement for parallel jobs (`gpu_pool`, `hydra/launcher=gpus`)."""
