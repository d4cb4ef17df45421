"""Presets per task: chosen by --env or --preset before the command line is parsed, flags
over them, recorded in config.json; and, slow tier, that the presets learn their tasks."""

import csv
import dataclasses
import json
import re

import pytest

from paac.core.config import Config
from paac.run.train import train
from paac.tools.cli import parse_config
from paac.tools.presets import (
    ATARI,
    CONTINUOUS,
    CONTROL,
    PRESETS,
    SHARED_PRESETS,
    TASK_PRESETS,
    defaults_for,
    preset_config,
    preset_of,
)

DISCRETE_CONTROL_TASKS = (
    "CartPole-v0", "CartPole-v1", "phys2d/CartPole-v0", "phys2d/CartPole-v1", "Acrobot-v1",
    "MountainCar-v0", "LunarLander-v2", "LunarLander-v3",
)  # fmt: skip
"""EnvPool's classic-control and Box2D tasks with discrete actions: each has a preset."""


def parse(*args: str) -> Config:
    return parse_config(CONTROL, list(args), presets=True)


def refused(capsys, *args: str) -> str:
    """The one line parsing ``args`` prints before it exits 2."""
    with pytest.raises(SystemExit) as exit_:
        parse(*args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_every_preset_is_named_after_itself_and_the_tasks_have_theirs():
    for name, config in PRESETS.items():
        assert config.preset == name
    for task in DISCRETE_CONTROL_TASKS:
        name = preset_of(task)
        assert name in TASK_PRESETS, task
        assert name == SHARED_PRESETS.get(task, task)
    # A task preset gives only what differs from the control defaults.
    for task, values in TASK_PRESETS.items():
        assert PRESETS[task] == dataclasses.replace(CONTROL, env=task, preset=task, **values)
    assert PRESETS["atari"] == dataclasses.replace(ATARI, preset="atari")
    assert PRESETS["control"] == dataclasses.replace(CONTROL, preset="control")


@pytest.mark.parametrize("task", ["Acrobot-v1", "MountainCar-v0", "LunarLander-v3"])
def test_env_picks_its_preset(task):
    assert parse("--env", task) == PRESETS[task]


def test_a_gymnasium_task_and_an_older_version_take_the_same_tasks_preset():
    config = parse("--env", "gymnasium:Acrobot-v1")
    assert config == dataclasses.replace(PRESETS["Acrobot-v1"], env="gymnasium:Acrobot-v1")
    config = parse("--env", "LunarLander-v2")
    assert config == dataclasses.replace(PRESETS["LunarLander-v3"], env="LunarLander-v2")


def test_tasks_without_a_preset_get_the_control_continuous_or_atari_defaults():
    assert parse("--env", "Pendulum-v1") == dataclasses.replace(
        CONTINUOUS, env="Pendulum-v1", preset="continuous"
    )
    assert parse("--env", "gymnasium:tests.gym_envs:Corridor-v0") == dataclasses.replace(
        CONTROL, env="gymnasium:tests.gym_envs:Corridor-v0", preset="control"
    )
    assert parse("--env", "Breakout-v5") == dataclasses.replace(
        ATARI, env="Breakout-v5", preset="atari"
    )
    assert parse() == PRESETS["CartPole-v1"]  # control.py's task when --env is not given
    assert parse_config(ATARI, [], presets=True) == PRESETS["atari"]  # atari.py's
    assert defaults_for("Breakout-v5") == parse("--env", "Breakout-v5")
    assert defaults_for("Acrobot-v1") == PRESETS["Acrobot-v1"]
    assert defaults_for("NoSuchTask-v0") == PRESETS["control"]  # parsing then names it


def test_flags_override_the_preset():
    acrobot = PRESETS["Acrobot-v1"]
    config = parse("--env", "Acrobot-v1", "--n-envs", "4", "--gamma", "0.9", "--seed", "7")
    assert config == dataclasses.replace(acrobot, n_envs=4, gamma=0.9, seed=7)
    # Without presets the command line is parsed over the default given, as before.
    assert parse_config(CONTROL, ["--env", "Acrobot-v1"]) == dataclasses.replace(
        CONTROL, env="Acrobot-v1"
    )


def test_preset_by_name():
    assert parse("--preset", "LunarLander-v3") == PRESETS["LunarLander-v3"]  # and its task
    config = parse("--preset", "Acrobot-v1", "--env", "CartPole-v0", "--lr", "0.5")
    assert config == dataclasses.replace(PRESETS["Acrobot-v1"], env="CartPole-v0", lr=0.5)
    config = parse("--env=Acrobot-v1", "--preset=control")
    assert config == dataclasses.replace(CONTROL, env="Acrobot-v1", preset="control")


def test_an_unknown_preset_exits_2_with_one_line_naming_it_and_the_names(capsys):
    err = refused(capsys, "--env", "Acrobot-v1", "--preset", "acrobot")
    assert "--preset='acrobot' is invalid" in err
    assert all(name in err for name in PRESETS), err


@pytest.mark.parametrize(
    "env, preset", [("Pong-v5", "Acrobot-v1"), ("Pong-v5", "control"), ("CartPole-v1", "atari")]
)
def test_a_preset_that_does_not_fit_the_task_is_refused_in_one_line(capsys, env, preset):
    err = refused(capsys, "--env", env, "--preset", preset)
    assert f"--preset={preset!r} is invalid for --env={env}" in err
    assert repr(preset_of(env)) in err  # the task's own preset is named
    with pytest.raises(Exception, match="is invalid for"):
        preset_config(preset, env)


def test_an_impossible_env_is_named_before_any_preset(capsys):
    err = refused(capsys, "--env", "Acrobot-v9", "--preset", "Acrobot-v1")
    assert "--env='Acrobot-v9' is invalid" in err


@pytest.mark.parametrize("task", list(TASK_PRESETS))
def test_help_shows_the_presets_values_as_the_defaults(capsys, task):
    preset = PRESETS[task]
    with pytest.raises(SystemExit) as exit_:
        parse("--env", task, "--help")
    assert exit_.value.code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    assert f"Defaults: preset {task!r} for {task}" in text
    fields = [f.name for f in dataclasses.fields(Config)]
    differ = [f for f in fields if getattr(preset, f) != getattr(CONTROL, f)]
    for field in differ + ["n_envs", "lr", "entropy_coef"]:
        value = getattr(preset, field)
        shown = str(value)
        # The flag, then its own default: the first "(default: ...)" after it.
        flag = field.replace("_", "-")
        pattern = rf"--{flag}[ ,](?:(?!\(default: ).)*\(default: {re.escape(shown)}\)"
        assert re.search(pattern, text), (field, shown)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One update of Acrobot-v1 with its preset and --n-envs 2 over it."""
    out = tmp_path_factory.mktemp("presets")
    config = parse(
        "--env", "Acrobot-v1", "--n-envs", "2", "--t-max", "5", "--total-steps", "10",
        "--log-interval", "10", "--out-dir", str(out), "--run-name", "tiny",
    )  # fmt: skip
    result = train(config, progress=False)
    assert result.steps == 10 and result.nonfinite is None
    return out / "Acrobot-v1" / "tiny"


def test_config_json_records_the_preset_and_the_values_used(tiny_run):
    saved = json.loads((tiny_run / "config.json").read_text())
    expected = dataclasses.replace(
        PRESETS["Acrobot-v1"], n_envs=2, t_max=5, total_steps=10, log_interval=10,
        out_dir=str(tiny_run.parent.parent), run_name="tiny",
    )  # fmt: skip
    assert saved == json.loads(expected.to_json())
    assert saved["preset"] == "Acrobot-v1"
    with open(tiny_run / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [10]


def test_resume_keeps_the_saved_config_and_refuses_another_preset(tiny_run, capsys):
    saved = Config.from_dict(json.loads((tiny_run / "config.json").read_text()))
    config = parse("--resume", str(tiny_run))
    assert config == dataclasses.replace(saved, resume=str(tiny_run))
    assert parse("--resume", str(tiny_run), "--preset", "Acrobot-v1").preset == "Acrobot-v1"
    err = refused(capsys, "--resume", str(tiny_run), "--preset", "control")
    assert "--preset='control' is invalid with --resume" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, target, stop", [("CartPole-v1", 500.0, True), ("Acrobot-v1", -100.0, False)]
)
def test_the_preset_learns_its_task(script, tmp_path, task, target, stop):
    """Learning test: ``control.py --env TASK`` with its preset, seed 0, reaches the target
    (a last-20 mean of the training games) within the preset's budget of 500k steps, and its
    greedy policy scores at least the target over 20 games. CartPole-v1 stops at the target
    (--target-score; about 170k steps), Acrobot-v1 trains its whole budget."""
    from paac.tools.evaluate import evaluate

    stopping = ["--target-score", str(target)] if stop else []
    out = script(
        "control.py", "--env", task, "--seed", "0", *stopping, "--out-dir", str(tmp_path),
        "--run-name", "learn",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / task / "learn"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"] == task and config["total_steps"] == 500_000
    with open(run_dir / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    steps, score = int(last["step"]), float(last["score_last20"])
    stats = evaluate(str(run_dir), episodes=20, greedy=True)
    print(f"{task}: last-20 mean {score} at step {steps}; greedy {stats['mean']}")
    assert score >= target and steps <= 500_000, last
    assert stats["mean"] >= target, stats["scores"]


@pytest.mark.slow
def test_presets_table_trains_tabulates_and_reads_a_finished_run_back(script, tmp_path):
    """A smoke run of experiments/presets_table.py at minimal size, run twice: the second
    time the finished run is only read (resumed at its end) and gives the same row."""
    args = ["--tasks", "CartPole-v1", "--seeds", "0", "--episodes", "2", "--total-steps",
            "800", "--log-interval", "400", "--out-dir", str(tmp_path)]  # fmt: skip
    first = script("presets_table.py", *args)
    assert first.returncode == 0, first.stderr
    table = (tmp_path / "presets.md").read_text().splitlines()
    assert table[0].startswith("| task | preset | seed | steps | wall time | last-20 mean |")
    assert len(table) == 3 and table[2].startswith("| CartPole-v1 | CartPole-v1 | 0 | 800 | ")
    config = json.loads((tmp_path / "CartPole-v1" / "CartPole-v1-s0" / "config.json").read_text())
    assert config["preset"] == "CartPole-v1" and config["total_steps"] == 800
    again = script("presets_table.py", *args)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "presets.md").read_text().splitlines() == table
