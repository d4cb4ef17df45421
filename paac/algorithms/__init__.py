"""Layer 3: the algorithms, each an Algorithm(init, act, update, policy) of pure functions
for the one loop; build.py chooses between them."""
