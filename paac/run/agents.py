"""Trained agents as small folders: what playing needs of a run, without its checkpoints.

An agent folder holds ``agent.json`` (the run's config, the environment's spec, the step,
where it came from, a checksum) and ``params.msgpack`` (the network's parameters and the
normalisation statistics, Flax's msgpack). No optimiser state, no RNG: it cannot resume
training, only play (``experiments/evaluate.py AGENT_DIR``). A Pong nips agent is 2.7 MB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, NamedTuple

import flax.serialization
import jax
import numpy as np

from paac.algorithms.build import network_for, state_template
from paac.core.config import Config, ConfigError, WriteError, first_line
from paac.core.types import EnvSpec
from paac.run.checkpoints import CheckpointError, config_from_meta, read_meta, restore
from paac.run.envs import env_spec, make_env

AGENT_FILE = "agent.json"
PARAMS_FILE = "params.msgpack"
AGENT_FORMAT = 1
"""The version of the folder's layout; :func:`load_agent` reads this one."""


class Agent(NamedTuple):
    """A trained agent: its config, environment spec, parameters and statistics."""

    config: Config
    spec: EnvSpec
    params: Any
    norm: dict
    step: int  # the training step of the checkpoint it was exported from
    info: dict  # agent.json as written


def is_agent_dir(path: str) -> bool:
    """Whether ``path`` is an agent folder (it holds ``agent.json``)."""
    return os.path.isfile(os.path.join(path, AGENT_FILE))


def _spec_dict(spec: EnvSpec) -> dict:
    return {
        "obs_shape": list(spec.obs_shape),
        "obs_dtype": np.dtype(spec.obs_dtype).name,
        "num_actions": spec.num_actions,
        "is_image": spec.is_image,
        "continuous": spec.continuous,
    }


def _spec_of(values: dict) -> EnvSpec:
    return EnvSpec(
        tuple(int(d) for d in values["obs_shape"]),
        np.dtype(values["obs_dtype"]),
        int(values["num_actions"]),
        bool(values["is_image"]),
        bool(values.get("continuous", False)),  # agents exported before continuous actions
    )


def export_agent(path: str, out_dir: str, *, force: bool = False, note: str = "") -> dict:
    """Writes the agent of the checkpoint at ``path`` (a run or checkpoint directory) to
    ``out_dir``, and returns its ``agent.json``.

    The folder is written whole into a temporary sibling and renamed into place, so it is
    never half there. An ``out_dir`` that exists is refused unless ``force`` (it is then
    replaced). ``note`` is kept in ``agent.json`` (e.g. how the agent scores).
    """
    meta, directory, step = read_meta(path)
    where = os.path.join(directory, str(step))
    config = config_from_meta(meta, where)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not force:
        raise ConfigError(f"{out_dir!r} exists; pass --force to replace it")
    parent = os.path.dirname(out_dir)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ConfigError(f"{out_dir!r} is invalid: its parent {parent!r} is not a directory")
    env = make_env(config.env, 1, config.seed, training=False)
    try:
        spec = env_spec(env, config.env)
    finally:
        env.close()
    state = restore(directory, step, state_template(config, network_for(config, spec), spec))
    payload = flax.serialization.to_bytes(
        jax.device_get({"params": state.state.params, "norm": state.state.norm})
    )
    portable = dataclasses.replace(config, resume=None, run_name=None, out_dir="checkpoints")
    info = {
        "format": AGENT_FORMAT,
        "env": config.env,
        "step": step,
        "source": where,
        "config": portable.to_dict(),
        "spec": _spec_dict(spec),
        "params_sha256": hashlib.sha256(payload).hexdigest(),
        "params_bytes": len(payload),
        "note": note,
    }
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".agent-", dir=parent)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # as a folder made by mkdir (mkdtemp's is 0700)
            with open(os.path.join(tmp, PARAMS_FILE), "wb") as f:
                f.write(payload)
            with open(os.path.join(tmp, AGENT_FILE), "w") as f:
                f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
            if os.path.exists(out_dir):
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as e:
        raise WriteError.of(out_dir, e) from None
    return info


def load_agent(path: str) -> Agent:
    """The agent in the folder ``path`` (:func:`export_agent`); a CheckpointError names what
    is missing, damaged or of another format."""
    agent_file = os.path.join(path, AGENT_FILE)
    try:
        with open(agent_file) as f:
            info = json.load(f)
        with open(os.path.join(path, PARAMS_FILE), "rb") as f:
            payload = f.read()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"agent {path!r} is unreadable ({first_line(e)})") from None
    if not isinstance(info, dict) or info.get("format") != AGENT_FORMAT:
        got = info.get("format") if isinstance(info, dict) else None
        raise CheckpointError(
            f"agent {path!r} has format {got!r}; this paac reads format {AGENT_FORMAT}"
        )
    if hashlib.sha256(payload).hexdigest() != info.get("params_sha256"):
        raise CheckpointError(
            f"agent {path!r} is damaged: {PARAMS_FILE} does not match the checksum in {AGENT_FILE}"
        )
    try:
        config = Config.from_dict(info["config"])
        spec = _spec_of(info["spec"])
        values = flax.serialization.from_bytes(_template_arrays(config, spec), payload)
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"agent {path!r} does not load ({first_line(e)})") from None
    return Agent(config, spec, values["params"], values["norm"], int(info["step"]), info)


def check_agent_spec(agent: Agent, spec: EnvSpec, path: str) -> None:
    """The environment must give what the agent was trained on (named when it does not)."""
    if agent.spec.continuous != spec.continuous:
        kinds = {False: "discrete", True: "continuous"}
        raise CheckpointError(
            f"agent {path!r} plays {kinds[agent.spec.continuous]} actions, and "
            f"{agent.config.env} made here has {kinds[spec.continuous]} ones"
        )
    if agent.spec != spec:
        raise CheckpointError(
            f"agent {path!r} was trained on {agent.config.env} with {agent.spec}, and the "
            f"environment made here gives {spec}"
        )


def _template_arrays(config: Config, spec: EnvSpec) -> dict:
    """Zero arrays of an agent's parameters and statistics (what Flax's msgpack restores
    into)."""
    state = state_template(config, network_for(config, spec), spec)
    zeros = {"params": state.params, "norm": state.norm}
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), zeros)
