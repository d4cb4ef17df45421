"""experiments/benchmark.py at tiny size: the JSON line parses and every figure is positive."""

import json

import pytest

pytestmark = pytest.mark.slow  # the benchmark script in subprocesses


def test_benchmark_smoke(script):
    out = script(
        "benchmark.py", "--env", "CartPole-v1", "--arch", "mlp", "--n-envs", "4",
        "--t-max", "5", "--seconds", "2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("env_sps", "act_sps", "update_sps", "train_sps", "update_compile_s"):
        assert result[key] > 0, (key, result)
    assert 0 < result["train_vs_env"] < 10
    shares = [result[f"loop_{k}_share"] for k in ("env", "act", "update")]
    assert all(x > 0 for x in shares) and sum(shares) <= 1.0, shares
    assert result["peak_rss_mib"] > 0
    assert (result["env"], result["n_envs"], result["t_max"]) == ("CartPole-v1", 4, 5)
    assert any("whole training loop" in ln for ln in lines)
    # The update with and without its non-finite check: the same work but for one reduction.
    assert -0.5 < result["finite_check_cost"] < 0.5, result
    assert any("its non-finite check" in ln for ln in lines)


def test_benchmark_of_a_large_batch(script):
    """n_e x t_max = 2560, as on a GPU: its nominal run length (a million updates) would pass
    Config's 2**31 steps, a flag the benchmark does not have; it is shortened instead."""
    out = script(
        "benchmark.py", "--env", "CartPole-v1", "--arch", "mlp", "--n-envs", "512",
        "--t-max", "5", "--seconds", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n_envs"] == 512 and result["train_sps"] > 0


def test_benchmark_async_mode(script):
    out = script(
        "benchmark.py", "--env", "CartPole-v1", "--arch", "mlp", "--n-envs", "4",
        "--t-max", "5", "--seconds", "1", "--mode", "a3c", "--workers", "2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["mode"], result["workers"]) == ("a3c", 2) and result["train_sps"] > 0
    assert "mode=a3c(W=2)" in out.stdout


@pytest.mark.parametrize("mode", ["sync", "a3c"])
def test_benchmark_of_an_lstm(script, mode):
    out = script(
        "benchmark.py", "--env", "CartPole-v1", "--arch", "mlp", "--n-envs", "4",
        "--t-max", "5", "--seconds", "1", "--lstm-cells", "8", "--mode", mode,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["lstm_cells"] == 8 and result["train_sps"] > 0 and result["act_sps"] > 0
    assert "arch=mlp+lstm8" in out.stdout


def test_benchmark_bad_sizes_are_one_line(script):
    """Sizes the benchmark checks itself: they gave a ZeroDivisionError, a flag it does not
    have (--total-steps), or (--seconds nan) a measurement that never ended."""
    from paac.core.config import ConfigError
    from paac.tools.benchmark import BenchConfig, run_benchmark

    for kwargs, message in (
        (dict(n_envs=0), "--n-envs=0 is invalid"),
        (dict(t_max=-1), "--t-max=-1 is invalid"),
        (dict(t_max=10**8), "--t-max=100000000 is invalid: a batch of n_e x t_max"),
        (dict(seconds=float("nan")), "--seconds=nan is invalid"),
        (dict(seconds=0.0), "--seconds=0.0 is invalid"),
        (dict(seconds=-1.0), "--seconds=-1.0 is invalid"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            run_benchmark(BenchConfig(env="CartPole-v1", arch="mlp", **kwargs))
    out = script("benchmark.py", "--env", "CartPole-v1", "--arch", "mlp", "--n-envs", "0")
    assert (
        out.returncode == 2
        and out.stderr.strip() == "paac: error: --n-envs=0 is invalid: must be >= 1"
    )
