"""The experiment scripts end to end: outputs, learning, and a clean Ctrl-C."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, script_env

pytestmark = pytest.mark.slow  # subprocesses, signals and learning runs

LOSS_COLUMNS = ("policy_loss", "value_loss", "entropy", "grad_norm", "lr", "sps", "walltime")


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def finished_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("arch", ["nips", "nature"])
def test_atari_smoke_writes_finite_outputs(script, tmp_path, arch):
    out = script(
        "atari.py", "--env", "Pong-v5", "--arch", arch, "--n-envs", "4", "--t-max", "5",
        "--total-steps", "60", "--log-interval", "20", "--out-dir", str(tmp_path),
        "--run-name", "smoke",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "Pong-v5" / "smoke"
    assert finished_line(out.stderr).endswith(f"outputs in {run_dir}")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"] == "Pong-v5" and config["arch"] == arch and config["n_envs"] == 4
    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    assert [int(r["update"]) for r in rows] == [1, 2, 3]
    for row in rows:
        for col in LOSS_COLUMNS:
            assert math.isfinite(float(row[col])), (col, row)
        assert row["score"] == "" or math.isfinite(float(row["score"]))
    assert float(rows[0]["entropy"]) == pytest.approx(math.log(6), abs=0.01)
    assert float(rows[0]["lr"]) == pytest.approx(0.0224)  # first update, before any anneal
    events = [p for p in run_dir.iterdir() if p.name.startswith("events.out.tfevents")]
    assert events and events[0].stat().st_size > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_control_learns_cartpole(script, tmp_path, seed):
    """Learning test: mean raw score >= 450 over the last 20 episodes within 500k steps."""
    out = script(
        "control.py", "--env", "CartPole-v1", "--seed", str(seed), "--target-score", "450",
        "--out-dir", str(tmp_path), "--run-name", "learn",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = read_metrics(tmp_path / "CartPole-v1" / "learn")
    last = rows[-1]
    steps, score = int(last["step"]), float(last["score_last20"])
    print(f"seed {seed}: last-20 mean score {score} at step {steps}")
    assert score >= 450 and steps < 500_000, last
    # --target-score stopped it at the first row that reached the target.
    assert all(r["score_last20"] == "" or float(r["score_last20"]) < 450 for r in rows[:-1])
    # CartPole pays 1 per step, so each row's mean game score is its mean game length.
    scored = [r for r in rows if r["score"] != ""]
    assert len(scored) > len(rows) // 2
    for r in scored:
        assert float(r["score"]) == pytest.approx(float(r["episode_length"])), r
    assert int(rows[-1]["episodes"]) >= 20
    # The console progress bar: steps of the total, elapsed<ETA, steps/s, last-20 score.
    bars = [ln for ln in re.split(r"[\r\n]", out.stderr) if ln.startswith("CartPole-v1:")]
    bar = bars[-1] if bars else out.stderr
    assert re.search(r"CartPole-v1: .*/500k \[\d\d:\d\d<\d\d:\d\d, .*step/s, score=", bar), bar


def test_ctrl_c_stops_cleanly(tmp_path):
    run_dir = tmp_path / "CartPole-v1" / "intr"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "control.py"),
         "--total-steps", "100000000", "--log-interval", "2000",
         "--out-dir", str(tmp_path), "--run-name", "intr"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=script_env(),
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (run_dir / "metrics.csv").exists() and len(read_metrics(run_dir)) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("training never logged")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = finished_line(stderr)
    assert "interrupted at step" in last and last.endswith(f"outputs in {run_dir}")
    rows = read_metrics(run_dir)
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and all(r["policy_loss"] for r in rows)
    assert f"at step {steps[-1]:,}" in last


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Python installs none by default)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(ln.split()[1], 16) for ln in f if ln.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def test_sigterm_at_any_moment_of_start_up_stops_with_one_line(tmp_path):
    """SIGTERM at moments spread over the start-up once paac's handler is in place
    (parsing, environments, compilation of the network's initialisation and of the first
    update, how far it gets depending on the machine's speed): every time exit 143 and a
    last line saying what stopped. An exception raised from the handler used to land inside XLA's
    compilation (the process then crashed at exit) or in a garbage-collection callback
    (Python dropped it and the run trained to its end, exit 0)."""
    results = []
    for i, delay in enumerate((0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 2.0, 2.5)):
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "experiments", "control.py"),
             "--total-steps", "100000000", "--out-dir", str(tmp_path), "--run-name", f"r{i}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=script_env(),
        )  # fmt: skip
        try:
            deadline = time.time() + 60
            while not _catches_sigterm(proc.pid):  # paac's handler is in place
                assert time.time() < deadline and proc.poll() is None, "no SIGTERM handler"
                time.sleep(0.01)
            time.sleep(delay)
            proc.send_signal(signal.SIGTERM)
            try:
                _, stderr = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:  # the signal was lost: still training
                results.append((delay, "still running 120 s after SIGTERM", []))
                continue
        finally:
            proc.kill()
            proc.communicate()
        results.append((delay, proc.returncode, stderr.strip().splitlines()[-1:]))
    for delay, rc, last in results:
        assert rc == 128 + signal.SIGTERM, (delay, rc, last)
        assert last[0] == "paac: terminated before any checkpoint of this start" or (
            last[0].startswith("paac: interrupted at step ")
        ), (delay, last)


def test_a_signal_while_the_run_is_set_up_stops_before_it_trains(tmp_path, monkeypatch):
    """A signal while the network is initialised is acted on once that is done, before
    anything of the run is written; the training loop never starts."""
    import importlib

    from paac import Config
    from paac.run import signals
    from paac.tools.cli import main

    setup_module = importlib.import_module("paac.run.setup")
    train_module = importlib.import_module("paac.run.train")
    real_init = setup_module.init_state

    def init_state(*args):  # the signal comes in the middle of it
        os.kill(os.getpid(), signal.SIGTERM)
        return real_init(*args)

    monkeypatch.setenv("PAAC_XLA_CPU_YNN", "0")  # main() must not change this process's XLA
    monkeypatch.setattr(setup_module, "init_state", init_state)
    monkeypatch.setattr(train_module, "collect_rollout", lambda *a: pytest.fail("trained"))
    config = Config(
        env="CartPole-v1", arch="mlp", n_envs=4, total_steps=1000, out_dir=str(tmp_path)
    )
    assert main(config, ["--run-name", "r"]) == 128 + signal.SIGTERM
    assert not os.path.exists(tmp_path / "CartPole-v1" / "r" / "metrics.csv")
    assert signals.take_pending() is None
    # A signal whose exception was dropped on the way (as inside a gc callback) still stops
    # the run at the first safe point.
    signals.note(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config)
    assert signals.take_pending() is None


@pytest.mark.parametrize("seed", [0, 3])
def test_nstep_q_learns_cartpole(script, tmp_path, seed):
    """n-step Q (Mnih et al. 2016) in the same loop: its greedy policy scores >= 400 on
    CartPole-v1 (mean of 20 games) after 300k steps. Seeds 0-4 scored 497-500 here."""
    from paac.tools.evaluate import evaluate

    out = script(
        "control.py", "--algo", "nstep_q", "--seed", str(seed), "--total-steps", "300000",
        "--out-dir", str(tmp_path), "--run-name", "q",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    stats = evaluate(str(tmp_path / "CartPole-v1" / "q"), episodes=20)
    print(f"seed {seed}: greedy mean {stats['mean']} (min {stats['min']})")
    assert stats["policy"] == "greedy" and stats["mean"] >= 400, stats["scores"]


@pytest.mark.parametrize("algo", ["q", "sarsa"])
def test_one_step_methods_run(script, tmp_path, algo):
    out = script(
        "control.py", "--algo", algo, "--total-steps", "4000", "--log-interval", "1000",
        "--out-dir", str(tmp_path), "--run-name", algo,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = read_metrics(tmp_path / "CartPole-v1" / algo)
    assert len(rows) >= 4 and all(math.isfinite(float(r["value_loss"])) for r in rows)
    assert float(rows[0]["epsilon"]) > float(rows[-1]["epsilon"])  # annealing
    assert rows[-1]["policy_loss"] == ""  # no policy head
