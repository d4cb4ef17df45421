"""Layer 3: the algorithms, each a set of pure functions plugged into the one loop.

Each is an ``Algorithm(init, act, update, policy, lookahead)``; build.py chooses between them.
"""
