"""Command-line entry: parse a Config with tyro, train, and turn bad input into one line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

import tyro

from paac.core.config import Config, ConfigError, WriteError, flag
from paac.core.xla_cpu import enable_ynn
from paac.run.checkpoints import (
    CheckpointError,
    config_from_meta,
    location_of,
    read_meta,
    run_dir_of,
)
from paac.run.distributed import initialize
from paac.run.signals import Terminated, caught, raising
from paac.run.train import TrainResult, train
from paac.tools.presets import PRESETS, defaults_for, preset_config


def parse_config(
    default: Config,
    args: Sequence[str] | None = None,
    description: str = "",
    presets: bool = False,
) -> Config:
    """Parses the command line over ``default``; exits 2 with one line on an impossible value.

    With ``presets``, the command line is parsed over a preset instead (flags override it,
    and ``--help`` shows its values): the one ``--preset`` names, else the task's
    (:func:`paac.tools.presets.preset_of`), the task being ``--env`` or ``default.env``.
    With ``--resume`` the saved run's config is the default either way.
    """
    try:
        default, run_dir = _resume_default(default, args)
        if presets and run_dir is None:
            default = _preset_default(default, args)
            description = f"{description.rstrip()}\n\n{_preset_line(default)}".strip()
        config = tyro.cli(Config, default=default, args=args, description=description or None)
        if config.resume is not None and run_dir is not None:
            _check_location(config, default, run_dir)
            _check_preset(config, default)
        return config
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_location(config: Config, default: Config, run_dir: str) -> None:
    """``--out-dir`` / ``--run-name`` given with ``--resume`` must name the run's directory."""
    for field in ("out_dir", "run_name"):
        if getattr(config, field) == getattr(default, field):
            continue
        named = os.path.join(config.out_dir, config.env, config.run_name or "")
        if os.path.realpath(named) != os.path.realpath(run_dir):
            raise ConfigError(
                f"{flag(field)}={getattr(config, field)!r} is invalid with --resume: the run "
                f"goes on in its own directory {run_dir!r} (copy the run directory to go on "
                "elsewhere)"
            )


def _preset_default(default: Config, args: Sequence[str] | None) -> Config:
    """The preset ``--preset`` names (for ``--env``), else ``--env``'s; ``--env`` or
    ``default.env`` is the task."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--env")
    pre.add_argument("--preset")
    try:
        known, _ = pre.parse_known_args(args)
    except argparse.ArgumentError:  # a flag without its value: tyro names it
        return default
    env = known.env or default.env
    if known.preset and known.preset != "None":
        return preset_config(known.preset, env if known.env else None)
    return defaults_for(env)


def _preset_line(config: Config) -> str:
    """What ``--help`` says of the preset its defaults come from."""
    return (
        f"Defaults: preset {config.preset!r} for {config.env} (--preset NAME picks another: "
        f"{', '.join(PRESETS)}); flags override it."
    )


def _check_preset(config: Config, default: Config) -> None:
    """``--preset`` given with ``--resume`` must be the run's own."""
    if config.preset != default.preset:
        raise ConfigError(
            f"{flag('preset')}={config.preset!r} is invalid with --resume: the run goes on "
            f"with the settings it started with (preset {default.preset!r}); override flags "
            "one by one"
        )


def _resume_default(default: Config, args: Sequence[str] | None) -> tuple[Config, str | None]:
    """``(default, run_dir)``: with ``--resume PATH``, the saved run's config and directory.

    With ``--resume PATH`` the saved run's config is the default (flags only override),
    returned with the run's directory; ``(default, None)`` without.
    """
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--resume")
    try:
        known, _ = pre.parse_known_args(args)
    except argparse.ArgumentError:
        raise ConfigError("--resume needs a value: a run directory or a checkpoint") from None
    if not known.resume or known.resume == "None":
        return default, None
    try:
        meta, directory, step = read_meta(known.resume)
    except CheckpointError as e:
        raise ConfigError(f"--resume={known.resume!r}: {e}") from None
    saved = config_from_meta(meta, f"{directory}/{step}")
    # Where the run runs is not inherited: a run saved on two hosts resumes on one.
    placement = {f: getattr(default, f) for f in PLACEMENT_FIELDS}
    run_dir = run_dir_of(directory)
    where = location_of(run_dir, saved.env)  # wherever the run directory is now
    return dataclasses.replace(saved, resume=known.resume, **placement, **where), run_dir


NONFINITE_EXIT = 3
"""Exit status of a run stopped because an update went non-finite (docs/faults.md)."""
WRITE_ERROR_EXIT = 4
"""Exit status of a run stopped because a file could not be written (docs/faults.md)."""

PROCESS_FIELDS = ("coordinator_address", "num_processes", "process_id")
PLACEMENT_FIELDS = ("devices", *PROCESS_FIELDS)


def join_processes(default: Config, args: Sequence[str] | None = None) -> bool:
    """Joins a multi-process run (``jax.distributed.initialize``) when one is asked for.

    The command line or the environment (``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) asks for one; returns whether it did.

    Runs before the full parse: reading a ``--resume`` checkpoint starts JAX's backends,
    after which a process can no longer join.
    """
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for field in PROCESS_FIELDS:
        pre.add_argument(flag(field), dest=field)
    try:
        known, _ = pre.parse_known_args(args)
    except argparse.ArgumentError as e:
        raise ConfigError(f"{e}") from None
    values = {}
    for field in PROCESS_FIELDS:
        raw = getattr(known, field)
        if raw is None or raw == "None":
            values[field] = getattr(default, field)
        elif field == "coordinator_address":
            values[field] = raw
        else:
            try:
                values[field] = int(raw)
            except ValueError:
                raise ConfigError(f"{flag(field)}={raw!r} is invalid: must be an integer") from None
    return initialize(**values)


def main(
    default: Config,
    args: Sequence[str] | None = None,
    description: str = "",
    presets: bool = False,
) -> int:
    """Trains the run the command line asks for, over ``default``; returns the exit status.

    With ``presets``, over the task's preset instead (:func:`parse_config`). 0 when
    training ends, 2 (after one line on stderr) for an impossible value, ``128 + signum``
    when SIGINT or SIGTERM stopped the start-up or the training. A value refused while the
    command line is parsed exits with 2 itself (SystemExit).
    """
    enable_ynn()  # before JAX starts its backends (reading a --resume checkpoint starts them)
    try:
        # Likewise. Outside the handlers below: jax.distributed waits for the other
        # processes in C++, where a Python handler would hold a SIGTERM back until it ends.
        join_processes(default, args)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    # Until training installs its own handlers (which stop at safe points while the run is
    # set up, then after the update in progress, and save), Ctrl-C and SIGTERM stop the
    # start-up with a line saying so.
    try:
        with raising():
            return _main(default, args, description, presets)
    except (KeyboardInterrupt, Terminated) as e:  # before training started (or a 2nd Ctrl-C)
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"paac: {what} before any checkpoint of this start", file=sys.stderr)
        return 128 + caught(e)


def _main(default: Config, args: Sequence[str] | None, description: str, presets: bool) -> int:
    config = parse_config(default, args, description, presets)
    try:
        result = train(config)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        return 2
    except WriteError as e:  # config.json, before training
        print(f"paac: error: {e}; nothing was trained", file=sys.stderr)
        return WRITE_ERROR_EXIT
    return exit_status(result)


def exit_status(result: TrainResult) -> int:
    """The exit status of a run that ended as ``result`` says (docs/faults.md): 0 at its end,
    4 after a failed write, 3 after a non-finite update, ``128 + signum`` when stopped."""
    if result.write_error is not None:
        return WRITE_ERROR_EXIT
    if result.nonfinite is not None:
        return NONFINITE_EXIT
    return 128 + int(result.signal) if result.signal is not None else 0
