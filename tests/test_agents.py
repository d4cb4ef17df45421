"""Exported agents: a small folder that plays exactly as the checkpoint it came from."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from paac import Config, train
from paac.run.agents import AGENT_FILE, PARAMS_FILE, export_agent, load_agent
from paac.run.checkpoints import CheckpointError
from paac.tools.evaluate import evaluate
from tests.conftest import ROOT, script_env

RUN = dict(
    env="CartPole-v1", arch="mlp", n_envs=8, t_max=5, total_steps=4000, lr=0.01,
    entropy_coef=0.01, checkpoint_interval=0, log_interval=1000, normalize_obs=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return train(Config(**RUN, out_dir=str(out), run_name="r"), progress=False)


def test_an_agent_plays_as_its_checkpoint(run, tmp_path):
    out = tmp_path / "agent"
    info = export_agent(run.run_dir, str(out), note="a test agent")
    assert sorted(os.listdir(out)) == [AGENT_FILE, PARAMS_FILE]
    assert info["step"] == 4000 and info["note"] == "a test agent"
    agent = load_agent(str(out))
    assert agent.config.normalize_obs and agent.config.resume is None
    for a, b in zip(jax.tree.leaves(agent.params), jax.tree.leaves(run.state.params), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    np.testing.assert_array_equal(agent.norm["obs"].mean, np.asarray(run.state.norm["obs"].mean))
    # The same games, game for game, from the folder and from the checkpoint.
    for greedy in (False, True):
        ours = evaluate(str(out), episodes=4, greedy=greedy, seed=5)
        theirs = evaluate(run.run_dir, episodes=4, greedy=greedy, seed=5, write_json=False)
        assert ours["scores"] == theirs["scores"] and ours["lengths"] == theirs["lengths"]
        assert ours["step"] == 4000 and "json" not in ours
    assert sorted(os.listdir(out)) == [AGENT_FILE, PARAMS_FILE]  # nothing written into it


def test_bad_agent_folders_are_named(run, tmp_path):
    out = tmp_path / "agent"
    export_agent(run.run_dir, str(out))
    with pytest.raises(Exception, match="exists; pass --force"):
        export_agent(run.run_dir, str(out))
    export_agent(run.run_dir, str(out), force=True)
    nested = tmp_path / "new" / "folders" / "agent"  # made as needed
    assert export_agent(run.run_dir, str(nested))["step"] == 4000 and load_agent(str(nested))
    payload = (out / PARAMS_FILE).read_bytes()
    (out / PARAMS_FILE).write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="is damaged: params.msgpack does not match"):
        load_agent(str(out))
    (out / PARAMS_FILE).write_bytes(payload)
    info = json.loads((out / AGENT_FILE).read_text())
    (out / AGENT_FILE).write_text(json.dumps(dict(info, format=7)))
    with pytest.raises(CheckpointError, match="has format 7; this paac reads format 1"):
        load_agent(str(out))
    (out / AGENT_FILE).write_text(json.dumps(info))
    os.remove(out / PARAMS_FILE)
    with pytest.raises(CheckpointError, match="is unreadable .*No such file"):
        load_agent(str(out))


@pytest.mark.slow
def test_the_scripts_export_and_play(run, tmp_path):
    out = tmp_path / "agent"
    env = script_env(dict(os.environ))
    done = subprocess.run(
        [sys.executable, "experiments/export.py", run.run_dir, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exported CartPole-v1 (mlp) at step 4,000" in done.stdout
    again = subprocess.run(
        [sys.executable, "experiments/export.py", run.run_dir, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"paac: error: {str(out)!r} exists; pass --force to replace it"
    ]
    played = subprocess.run(
        [sys.executable, "experiments/evaluate.py", str(out), "--episodes", "2",
         "--video", str(tmp_path / "cartpole.gif")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert played.returncode == 0, played.stderr
    assert os.path.getsize(tmp_path / "cartpole.gif") > 0
