"""Command-line entry: parse a Config with tyro, train, and turn bad input into one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from paac.config import Config, ConfigError


def parse_config(
    default: Config, args: Sequence[str] | None = None, description: str = ""
) -> Config:
    """Parses the command line over ``default``; exits 2 with one line on an impossible value."""
    import tyro

    try:
        return tyro.cli(Config, default=default, args=args, description=description or None)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def main(default: Config, args: Sequence[str] | None = None, description: str = "") -> int:
    config = parse_config(default, args, description)
    from paac.xla_cpu import enable_ynn

    enable_ynn()  # before JAX starts its backends
    from paac.train import train

    try:
        result = train(config)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0
