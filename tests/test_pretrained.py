"""The shipped agent, pretrained/Pong-v5: it loads from a clone and wins a whole game."""

import os

import pytest

from paac.run.agents import load_agent
from paac.tools.evaluate import evaluate
from tests.conftest import ROOT

AGENT = os.path.join(ROOT, "pretrained", "Pong-v5")


def test_the_shipped_agent_loads_and_is_small():
    agent = load_agent(AGENT)
    assert (agent.config.env, agent.config.arch, agent.config.lstm_cells) == ("Pong-v5", "nips", 0)
    assert agent.spec.obs_shape == (4, 84, 84) and agent.spec.num_actions == 6
    size = sum(os.path.getsize(os.path.join(AGENT, f)) for f in os.listdir(AGENT))
    assert size < 10 * 2**20, size


@pytest.mark.slow
def test_the_shipped_agent_wins_a_game_against_the_built_in_opponent():
    """Pong's score is the agent's points minus the opponent's: above 0 is a win."""
    stats = evaluate(AGENT, episodes=1, greedy=True, seed=0, num_envs=1)
    assert stats["scores"][0] > 0, stats["scores"]
    assert sorted(os.listdir(AGENT)) == ["agent.json", "params.msgpack"]  # nothing written
