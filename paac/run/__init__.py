"""Layer 4: the running system.

Environments, the rollout, checkpoints, devices, logs, signals, set-up and the training loop.
"""
