"""Layer 1: pure numerics (returns, advantages, losses), jittable functions over arrays."""
