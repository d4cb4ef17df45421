"""experiments/reproduce.py: the results table's rows as commands, and their figures."""

import json
import os

from paac.tools.reproduce import ROWS, commands, main, marks_reached, report

HEADER = "step,walltime,score_last20,episodes\n"


def _run(tmp_path, rows: str):
    run_dir = tmp_path / "Pong-v5" / "pong-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text(HEADER + rows)
    return run_dir


def test_marks_count_only_whole_windows(tmp_path):
    run_dir = _run(
        tmp_path,
        "100,60,12.0,5\n"  # above every mark, but over 5 games only
        "200,120,-3.0,20\n"
        "300,180,0.0,31\n"  # reaches 0 here
        "400,240,9.9,40\n"
        "500,300,18.5,52\n",  # reaches 10 and 18 at once
    )
    assert marks_reached(str(run_dir), (0.0, 10.0, 18.0, 21.0)) == {
        0.0: (300, 180.0),
        10.0: (500, 300.0),
        18.0: (500, 300.0),
        21.0: None,
    }


def test_rows_train_then_evaluate_and_resume_what_exists(tmp_path):
    out = str(tmp_path)
    first = commands("pong-s0", out)
    assert first[0][1:] == [
        "experiments/atari.py",
        "--env",
        "Pong-v5",
        "--seed",
        "0",
        "--out-dir",
        out,
        "--run-name",
        "pong-s0",
        "--stop-at",
        "18000000",
    ]
    assert [c[1] for c in first[1:]] == ["experiments/evaluate.py"] * 2
    assert "--greedy" in first[1] and "--greedy" not in first[2]
    (tmp_path / "Pong-v5" / "pong-s0" / "checkpoints").mkdir(parents=True)
    resumed = commands("pong-s0", out)[0]
    assert resumed[1:] == [
        "experiments/atari.py",
        "--resume",
        os.path.join(out, "Pong-v5", "pong-s0"),
        "--stop-at",
        "18000000",
    ]
    assert set(ROWS) >= {"pong-s0", "pong-s1", "breakout-s0"}


def test_report_and_bad_names(tmp_path, capsys):
    run_dir = _run(tmp_path, "300,600,19.0,25\n")
    for policy, mean in (("greedy", 20.5), ("sampled", 19.25)):
        stats = dict(policy=policy, mean=mean, std=0.5, episodes=20, step=18_000_000)
        (run_dir / f"eval-18000000-{policy}.json").write_text(json.dumps(stats))
    table = report(["pong-s0"], str(tmp_path))
    assert (
        "| pong-s0 | 18000000 | +0: 0.00M, 10 min, +10: 0.00M, 10 min, +18: 0.00M, 10 min |"
        in table
    )
    assert "+20.5 ± 0.5 (20 games, step 18,000,000) | +19.2 ± 0.5" in table
    assert main(["nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("paac: error: 'nope' is not a row or figure")
    assert main(["--list", "--out-dir", str(tmp_path), "pong-s1"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("python experiments/atari.py --env Pong-v5 --seed 1")
