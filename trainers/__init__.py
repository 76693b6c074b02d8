"""Ray Train jobs: one module per job, each with a per-worker `train_loop(config)` and a typed driver `run(cfg)`."""
