"""Layer 0: the configuration and the types every layer shares; no computation."""
