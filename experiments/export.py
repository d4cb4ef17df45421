"""Export a trained agent: a small folder that experiments/evaluate.py plays, no checkpoint needed.

python experiments/export.py checkpoints/Pong-v5/<run> pretrained/Pong-v5
"""

from __future__ import annotations

import dataclasses
import sys

import tyro

from paac.core.config import ConfigError


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    """Export the network parameters, normalisation statistics and config of a checkpoint."""

    path: tyro.conf.Positional[str]
    """A run directory (its latest checkpoint) or one checkpoints/<step> directory."""
    out: tyro.conf.Positional[str]
    """The agent folder to write (agent.json and params.msgpack)."""
    force: bool = False
    """Replace the folder if it exists."""
    note: str = ""
    """A line kept in agent.json, e.g. how the agent scores."""


def main() -> int:
    args = tyro.cli(ExportArgs, description=__doc__)
    # Imported after parsing on purpose: --help and a bad flag answer without loading JAX.
    from paac.run.agents import export_agent
    from paac.run.memory import format_bytes

    try:
        info = export_agent(args.path, args.out, force=args.force, note=args.note)
    except (ConfigError, OSError) as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    print(
        f"paac: exported {info['env']} ({info['config']['arch']}) at step {info['step']:,} to "
        f"{args.out} ({format_bytes(info['params_bytes'])} of parameters and statistics)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
