"""Stable-Baselines3 A2C on a MuJoCo task: the SB3 side of the side-by-side
timing in docs/continuous.md.

Standalone (it imports nothing from ``paac``). It trains SB3's ``A2C`` with the
settings rl-baselines3-zoo uses for HalfCheetah-v4 (``hyperparams/a2c.yml`` in
DLR-RM/rl-baselines3-zoo, commit 22e3ff2450fd92033f7f032915e1f64894a09584; the
``HalfCheetah-v4: &mujoco-defaults`` entry):

    normalize: true          -> VecNormalize(norm_obs=True, norm_reward=True), its defaults
    n_timesteps: 1e6         -> --steps default
    policy: 'MlpPolicy'
    (no n_envs)              -> rl-zoo's default of 1 environment (DummyVecEnv)

Everything else is SB3 A2C's own default (n_steps=5, lr=7e-4 constant,
gamma=0.99, gae_lambda=1.0, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
RMSprop with eps=1e-5, no advantage normalisation, 64x64 tanh MLPs). It runs on
the CPU with torch's default thread count unless --threads is given.

At the end it prints one JSON line: wall seconds of ``model.learn``, steps/s,
the mean undiscounted raw return (from the Monitor wrapper, i.e. before
VecNormalize) of the last 20 finished episodes, the hyperparameters used and
the versions.

It lives outside ``experiments/`` (whose scripts only build a paac config), and needs
the optional ``sb3`` extra (torch's CPU wheel is the smaller download):

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # optional
    pip install -e ".[sb3]"

Usage:

    python benchmarks/sb3_a2c.py --env HalfCheetah-v4 --steps 1000000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads; default: leave torch's own",
    )
    args = parser.parse_args()

    import gymnasium as gym
    import mujoco
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    n_envs = 1  # rl-zoo's default when a2c.yml gives no n_envs
    normalize_kwargs: dict = {}  # `normalize: true` -> VecNormalize defaults
    venv = make_vec_env(
        args.env, n_envs=n_envs, seed=args.seed, vec_env_cls=DummyVecEnv
    )  # each env is Monitor-wrapped
    venv = VecNormalize(venv, **normalize_kwargs)

    model = A2C("MlpPolicy", venv, seed=args.seed, device="cpu", verbose=0)

    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    wall = time.perf_counter() - t0

    # Raw (unnormalised) episode returns recorded by the Monitor wrappers.
    returns: list[float] = []
    for r in venv.env_method("get_episode_rewards"):
        returns.extend(float(x) for x in r)
    last = returns[-20:]

    opt = model.policy.optimizer
    hyper = {
        "policy": "MlpPolicy",
        "n_envs": n_envs,
        "vec_env": "DummyVecEnv",
        "normalize": {
            "norm_obs": venv.norm_obs,
            "norm_reward": venv.norm_reward,
            "clip_obs": venv.clip_obs,
            "clip_reward": venv.clip_reward,
            "gamma": venv.gamma,
            "epsilon": venv.epsilon,
        },
        "n_steps": model.n_steps,
        "learning_rate": model.learning_rate,
        "gamma": model.gamma,
        "gae_lambda": model.gae_lambda,
        "ent_coef": model.ent_coef,
        "vf_coef": model.vf_coef,
        "max_grad_norm": model.max_grad_norm,
        "normalize_advantage": model.normalize_advantage,
        "use_sde": model.use_sde,
        "optimizer": type(opt).__name__,
        "optimizer_kwargs": {
            k: v for k, v in opt.defaults.items() if isinstance(v, (int, float, bool, type(None)))
        },
        "policy_kwargs": model.policy_kwargs,
        "net_arch": str(model.policy.net_arch),
        "activation_fn": model.policy.activation_fn.__name__,
        "ortho_init": model.policy.ortho_init,
        "log_std_init": model.policy.log_std_init,
    }
    out = {
        "env": args.env,
        "steps": args.steps,
        "timesteps_done": int(model.num_timesteps),
        "seed": args.seed,
        "learn_wall_s": round(wall, 2),
        "steps_per_s": round(model.num_timesteps / wall, 1),
        "episodes": len(returns),
        "last20_mean_return": float(np.mean(last)) if last else None,
        "last20_std_return": float(np.std(last)) if last else None,
        "hyperparameters": hyper,
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "stable_baselines3": sb3.__version__,
        "gymnasium": gym.__version__,
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
