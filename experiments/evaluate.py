"""Play a trained agent: restore a checkpoint and report raw scores of whole games.

python experiments/evaluate.py checkpoints/Pong-v5/<run> --episodes 10 --video pong.mp4
"""

from __future__ import annotations

import dataclasses
import sys

import tyro

from paac.core.config import ConfigError


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    """Evaluate a checkpoint (architecture and environment come from it)."""

    path: tyro.conf.Positional[str]
    """A run directory (its latest checkpoint) or one checkpoints/<step> directory."""
    episodes: int = 10
    """Whole games to play."""
    greedy: bool = False
    """Take the most probable action instead of sampling from the policy."""
    video: str | None = None
    """Record the first game to this .mp4 or .gif file (native frames, score burned in)."""
    seed: int | None = None
    """Environment and sampling seed (default: derived from the training seed)."""
    num_envs: int | None = None
    """Games played in parallel (default: min(episodes, 16))."""
    fps: float | None = None
    """Video frames (agent steps) per second (default: real time for Atari, 15 with frame
    skip 4; else 30)."""


def main() -> int:
    args = tyro.cli(EvalArgs, description=__doc__)
    # Imported after parsing on purpose: --help and a bad flag answer without loading JAX.
    from paac.core.xla_cpu import enable_ynn

    enable_ynn()
    from paac.tools.evaluate import evaluate, format_report

    try:
        stats = evaluate(
            args.path,
            args.episodes,
            args.greedy,
            args.seed,
            args.video,
            args.num_envs,
            fps=args.fps,
        )
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    print(format_report(stats))
    for problem in stats["problems"]:  # the games were played; an output was not written
        print(f"paac: error: {problem}", file=sys.stderr)
    return 1 if stats["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
