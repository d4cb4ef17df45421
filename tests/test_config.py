"""Config defaults, validation messages, and the command line's handling of bad input."""

import dataclasses
import json

import pytest

from paac.core.config import Config, ConfigError
from paac.tools.cli import parse_config


def test_defaults_are_paac_atari():
    c = Config()
    assert (c.env, c.n_envs, c.t_max, c.arch) == ("Pong-v5", 32, 5, "nips")
    assert c.total_steps == 80_000_000
    assert c.lr == pytest.approx(0.0007 * 32)
    assert c.lr_schedule == "linear"
    assert (c.rms_decay, c.rms_eps, c.clip_norm) == (0.99, 0.1, 3.0)
    assert (c.entropy_coef, c.value_coef, c.gamma) == (0.02, 0.5, 0.99)
    assert c.gae_lambda is None
    assert c.effective_loss_scale == 5.0
    assert c.batch_size == 160
    assert c.num_updates == 500_000


def test_config_is_frozen_and_round_trips_json():
    c = Config(n_envs=8, gae_lambda=0.95)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_envs = 4  # type: ignore[misc]
    assert Config(**json.loads(c.to_json())) == c


@pytest.mark.parametrize(
    "field, value, flag, allowed",
    [
        ("n_envs", 0, "--n-envs", ">= 1"),
        ("t_max", 0, "--t-max", ">= 1"),
        ("gamma", 1.5, "--gamma", "[0, 1]"),
        ("gamma", -0.1, "--gamma", "[0, 1]"),
        ("gae_lambda", 1.01, "--gae-lambda", "[0, 1]"),
        ("gae_lambda", -0.5, "--gae-lambda", "[0, 1]"),
        ("lr", -1e-3, "--lr", "> 0"),
        ("lr", float("nan"), "--lr", "> 0"),
        ("arch", "resnet", "--arch", "nips, nature, mlp"),
        ("env", "Pongg-v5", "--env", "EnvPool task id"),
        ("entropy_coef", -1.0, "--entropy-coef", ">= 0"),
        ("clip_norm", 0.0, "--clip-norm", "> 0"),
        ("lr_schedule", "cosine", "--lr-schedule", "linear, constant"),
        ("num_threads", -2, "--num-threads", ">= 0"),
        ("rms_decay", 1.0, "--rms-decay", "[0, 1)"),  # the accumulator would never move
        ("rms_eps", 0.0, "--rms-eps", "> 0"),
        ("loss_scale", 0.0, "--loss-scale", "> 0, or None"),
        ("seed", 2**31, "--seed", "[0, 2**31)"),
        ("run_name", "../../etc", "--run-name", "without '/'"),  # would leave --out-dir
        ("run_name", "..", "--run-name", "not '.' or '..'"),
        ("final_epsilon_probs", (0.9, 0.9, 0.9), "--final-epsilon-probs", "sum to 1"),
        ("final_epsilons", (0.1, 1.5, 0.5), "--final-epsilons", "numbers in [0, 1]"),
        ("keep", 0, "--keep", ">= 1"),
        ("total_steps", 10, "--total-steps", "n_envs * t_max = 160"),
        ("total_steps", 2**31, "--total-steps", "below 2**31"),
    ],
)
def test_impossible_values_name_field_value_and_allowed(field, value, flag, allowed):
    with pytest.raises(ConfigError) as err:
        Config(**{field: value})
    msg = str(err.value)
    assert msg.startswith(flag + "=")
    assert repr(value) in msg
    assert allowed in msg
    assert "\n" not in msg


def test_unknown_env_suggests_close_ids():
    with pytest.raises(ConfigError, match="Breakout-v5"):
        Config(env="breakout")


def test_flags_are_spelled_as_documented():
    c = parse_config(
        Config(),
        [
            "--env", "Breakout-v5", "--n-envs", "8", "--t-max", "10", "--total-steps", "1000",
            "--seed", "3", "--arch", "nature", "--lr", "0.001", "--gamma", "0.9",
            "--gae-lambda", "0.95", "--entropy-coef", "0.01", "--value-coef", "1.0",
            "--clip-norm", "40", "--num-threads", "2", "--out-dir", "/tmp/x",
            "--log-interval", "100", "--lr-schedule", "constant",
        ],
    )  # fmt: skip
    assert c == Config(
        env="Breakout-v5", n_envs=8, t_max=10, total_steps=1000, seed=3, arch="nature",
        lr=0.001, gamma=0.9, gae_lambda=0.95, entropy_coef=0.01, value_coef=1.0,
        clip_norm=40.0, num_threads=2, out_dir="/tmp/x", log_interval=100,
        lr_schedule="constant",
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--n-envs", "0"], "--n-envs"),
        (["--t-max", "0"], "--t-max"),
        (["--gamma", "1.5"], "--gamma"),
        (["--gae-lambda", "2"], "--gae-lambda"),
        (["--lr", "-1"], "--lr"),
        (["--arch", "foo"], "--arch"),
        (["--env", "Pongg-v5"], "--env"),
        (["--arch", "mlp"], "--arch"),  # vector torso on Atari frames
    ],
)
@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2(script, tmp_path, args, flag):
    out = script("atari.py", *args, "--out-dir", str(tmp_path), timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and "WARN" not in ln]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"paac: error: {flag}=")
    assert "Traceback" not in out.stderr and "jax" not in out.stderr.lower()
    assert not any(tmp_path.iterdir()), "bad input must not create outputs"


@pytest.mark.slow
def test_cli_unwritable_out_dir(script, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = script("control.py", "--out-dir", str(blocker), "--total-steps", "80", timeout=120)
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("paac: error: --out-dir=") and "cannot write" in last
    assert "Traceback" not in out.stderr
