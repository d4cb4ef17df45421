"""Layer 4: the running system: environments, rollout, checkpoints, devices, logs,
signals, set-up and the training loop."""
