"""Environment factory, EnvPool's semantics that paac relies on, and whole-game statistics."""

import numpy as np
import pytest

from paac.core.config import Config, ConfigError
from paac.core.tasks import is_atari
from paac.core.types import EnvSpec
from paac.run.envs import EpisodeStats, check_arch, env_spec, make_env, make_training_env


def test_envpool_resets_on_the_step_after_done():
    """The contract the returns and the mask are built on (see paac/returns.py)."""
    env = make_env("CartPole-v1", 1, seed=0, max_episode_steps=6)
    env.reset()
    flags = []
    for _ in range(14):
        _, r, term, trunc, info = env.step(np.ones(1, np.int32))  # always push right
        flags.append((float(r[0]), bool(term[0]), bool(trunc[0]), int(info["elapsed_step"][0])))
    env.close()
    done_at = [i for i, (_, te, tr, _) in enumerate(flags) if te or tr]
    assert done_at, "pushing right must end an episode within 14 steps"
    i = done_at[0]
    assert flags[i][0] == 1.0
    # The next step is the reset step: reward 0, neither flag, a fresh episode counter.
    assert flags[i + 1] == (0.0, False, False, 0)
    # Truncation by the time limit is reported as truncated, not terminated.
    env = make_env("CartPole-v1", 1, seed=0, max_episode_steps=3)
    env.reset()
    out = [env.step(np.array([i % 2], np.int32)) for i in range(4)]
    env.close()
    assert bool(out[2][3][0]) and not bool(out[2][2][0])
    assert float(out[3][1][0]) == 0.0


def test_atari_training_and_evaluation_settings():
    c = Config(env="Pong-v5", n_envs=2)
    train_env = make_training_env(c)
    eval_env = make_env("Pong-v5", 2, seed=0, training=False)
    tc, ec = train_env.spec.config, eval_env.spec.config
    assert (tc.episodic_life, tc.reward_clip) == (True, True)
    assert (ec.episodic_life, ec.reward_clip) == (False, False)
    for cfg in (tc, ec):
        assert (cfg.frame_skip, cfg.stack_num, cfg.img_height, cfg.img_width) == (4, 4, 84, 84)
        assert cfg.noop_max == 30 and cfg.gray_scale
        assert cfg.repeat_action_probability == 0.0  # no sticky actions, as the paper
        assert cfg.max_episode_steps == 27_000  # agent steps: 108k frames
    # The training flags reach EnvPool.
    flags = make_training_env(Config(env="Pong-v5", n_envs=2, episodic_life=False))
    assert (flags.spec.config.episodic_life, flags.spec.config.reward_clip) == (False, True)
    flags.close()
    flags = make_training_env(Config(env="Pong-v5", n_envs=2, reward_clip=False))
    assert (flags.spec.config.episodic_life, flags.spec.config.reward_clip) == (True, False)
    flags.close()
    # More threads than environments: as many as there are (EnvPool aborted the process
    # when it could not start 100,000).
    flags = make_training_env(Config(env="Pong-v5", n_envs=2, num_threads=100_000))
    assert flags.spec.config.num_threads == 2
    flags.close()
    spec = env_spec(train_env)
    assert spec.obs_shape == (4, 84, 84) and spec.obs_dtype == np.uint8
    assert spec.num_actions == 6 and spec.is_image
    obs, _ = train_env.reset()
    assert obs.shape == (2, 4, 84, 84)
    train_env.close()
    eval_env.close()


def test_arch_must_match_observations():
    pong = env_spec(make_env("Pong-v5", 1, 0))
    cart = env_spec(make_env("CartPole-v1", 1, 0))
    check_arch(Config(env="Pong-v5", arch="nature"), pong)
    check_arch(Config(env="CartPole-v1", arch="mlp"), cart)
    with pytest.raises(ConfigError, match="--arch='nips'.*CartPole"):
        check_arch(Config(env="CartPole-v1", arch="nips"), cart)
    with pytest.raises(ConfigError, match="--arch='mlp'.*Pong"):
        check_arch(Config(env="Pong-v5", arch="mlp"), pong)


@pytest.mark.parametrize(
    "arch,smallest", [("nips", 20), pytest.param("nature", 36, marks=pytest.mark.slow)]
)
def test_frames_too_small_for_the_torso_are_refused(arch, smallest):
    """Frames smaller than the convolutions can take (or channels-last frames such as
    gfootball's (72, 96, 4), read as 72 frames of 96 x 4) left a torso of zero size that
    trained nothing and then failed to save. The smallest size is checked against the
    network itself: its dense layer gets inputs at that size, none one pixel below."""
    import jax

    from paac.core.types import EnvSpec
    from paac.nets.networks import make_torso

    def spec(shape):
        return EnvSpec(shape, np.dtype("uint8"), 4, True)

    def dense_inputs(size):
        params = make_torso(arch).init(jax.random.PRNGKey(0), np.zeros((1, 4, size, size)))
        return params["params"]["Dense_0"]["kernel"].shape[0]

    assert dense_inputs(smallest) > 0 and dense_inputs(smallest - 1) == 0
    config = Config(env="gfootball/academy_empty_goal-v1", arch=arch)
    check_arch(config, spec((4, smallest, smallest)))
    for shape in ((4, smallest - 1, 84), (4, 84, smallest - 1), (72, 96, 4)):
        with pytest.raises(ConfigError, match=f"--arch='{arch}' is invalid") as e:
            check_arch(config, spec(shape))
        assert f"at least {smallest} x {smallest}" in str(e.value) and str(shape) in str(e.value)
    with pytest.raises(ConfigError, match="torsos take vectors or frames stacked first"):
        check_arch(Config(env="gfootball/academy_empty_goal-v1", arch="mlp"), spec((72, 96, 4)))


def test_continuous_actions_are_a_vector_of_floats():
    env = make_env("Pendulum-v1", 1, 0)
    assert env_spec(env, "Pendulum-v1") == EnvSpec((3,), np.dtype("float32"), 1, False, True)
    env.close()


def _info(raw, game_over):
    return {"reward": np.asarray(raw, np.float32), "terminated": np.asarray(game_over, np.int32)}


def test_episode_stats_score_whole_games_with_episodic_life():
    """Life losses end training episodes, not games; scores are raw, not clipped."""
    stats = EpisodeStats(num_envs=2, window=3)
    zero = np.zeros(2, bool)
    # env 0: +7 raw (clipped to 1), loses a life (terminated, game goes on), reset step,
    # then +5 raw and the real game over. env 1: one truncated game worth -2.
    stats.step([1, 0], [False, False], zero, _info([7, 0], [0, 0]), [1, 1])
    stats.step([0, -1], [True, False], zero, _info([0, -2], [0, 0]), [1, 1])
    stats.step([0, 0], zero, [False, True], _info([0, 0], [0, 0]), [0, 1])  # env 0 reset step
    assert stats.episodes == 1  # env 1 truncated
    stats.step([1, 0], [True, False], zero, _info([5, 0], [1, 0]), [1, 0])
    scores, lengths = stats.drain()
    assert scores == [-2.0, 12.0]
    assert lengths == [3, 3]  # env 0: four steps, one of them a reset step
    assert stats.drain() == ([], [])
    assert stats.recent_mean == pytest.approx(5.0)
    assert not stats.recent_full


def test_episode_stats_window_keeps_the_last_games():
    stats = EpisodeStats(num_envs=1, window=3)
    for score in [1, 2, 3, 4, 5]:
        stats.step([score], [True], [False], {}, [1])  # no info: reward and flags are raw
    assert stats.recent_full
    assert stats.recent_mean == pytest.approx(4.0)
    assert stats.episodes == 5


def test_episode_stats_on_real_atari_lives():
    """EnvPool's real keys, on SpaceInvaders (3 lives, aliens worth 5-30): with episodic
    life every lost life is ``terminated`` (training episodes end) but only the last one is
    ``info["terminated"]``; rewards are clipped for training while ``info["reward"]`` is the
    raw score. EpisodeStats counts one whole game worth the raw score, against a sum kept
    here from the raw rewards."""
    env = make_training_env(Config(env="SpaceInvaders-v5", n_envs=1, seed=3))
    env.reset()
    stats = EpisodeStats(num_envs=1)
    rng = np.random.default_rng(0)
    life_losses, raw_total, clipped_total, done_before = 0, 0.0, 0.0, False
    for _ in range(5000):
        _, r, term, trunc, info = env.step(rng.integers(0, 6, size=1, dtype=np.int32))
        stats.step(r, term, trunc, info, [not done_before])
        raw_total += float(info["reward"][0])
        clipped_total += float(r[0])
        assert float(r[0]) == np.clip(float(info["reward"][0]), -1, 1)
        done_before = bool(term[0] or trunc[0])
        if bool(info["terminated"][0]) or bool(trunc[0]):
            break
        life_losses += bool(term[0])
    env.close()
    assert bool(info["terminated"][0]), "a random game must end within 5000 steps"
    assert life_losses == 2  # three lives: two losses end training episodes, not the game
    assert stats.episodes == 1 and stats.drain()[0] == [raw_total]
    assert raw_total > clipped_total > 0


def test_atari_is_told_by_all_of_its_options():
    assert is_atari("Pong-v5") and is_atari("Breakout-v5")
    assert not is_atari("CartPole-v1")
    assert not is_atari("Basic-v1")  # VizDoom: episodic_life and frame_skip, but no noop_max


def test_a_task_that_cannot_be_built_here_is_one_line(monkeypatch):
    """EnvPool lists tasks it cannot build without system libraries (Procgen needs Qt):
    one line naming the reason, not a traceback from reading the task's spec."""
    import envpool

    def needs_qt(*args, **kwargs):
        raise ImportError("EnvPool Procgen requires the system Qt 5 runtime\nmore detail")

    monkeypatch.setattr(envpool, "make_spec", needs_qt)
    monkeypatch.setattr(envpool, "make", needs_qt)
    is_atari.cache_clear()
    try:
        with pytest.raises(ConfigError) as err:
            make_env("BigfishEasy-v0", 2, 0)
    finally:
        is_atari.cache_clear()
    assert str(err.value) == (
        "--env='BigfishEasy-v0' is invalid: EnvPool could not create it "
        "(ImportError: EnvPool Procgen requires the system Qt 5 runtime)"
    )
