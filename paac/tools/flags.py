"""The flag reference, docs/flags.md, generated from :class:`~paac.core.config.Config`.

``python -m paac.tools.flags docs/flags.md`` rewrites the page; a test checks that the
page in the repository is what this module generates, so flags are documented once, by
their docstrings in ``Config``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys

from paac.core.config import Config, flag
from paac.tools.presets import ATARI, CONTROL

HEADER = """\
# Command-line flags

Generated from the docstrings of `paac.Config` by `python -m paac.tools.flags docs/flags.md`;
do not edit by hand. `experiments/atari.py` and `experiments/control.py` take every flag below
(`--help` prints the same text); the two columns are the `atari` and `control` presets, and
`experiments/control.py` changes only those it lists. Each script trains `--env`'s own preset
when it has one (Acrobot-v1, LunarLander-v3, ...: [presets](presets.md)), whose values
`--help` then shows. A boolean flag `--x` has its opposite `--no-x`. Impossible values
stop the run before any work, with one line naming the flag, the value and what is allowed, and
exit code 2. `experiments/evaluate.py`, `plot.py`, `benchmark.py` and `compare_async.py` take
their own flags: see their `--help`.

| flag | `atari.py` | `control.py` | meaning |
|---|---|---|---|
"""


def field_docs(cls: type = Config) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _value(x) -> str:
    if isinstance(x, bool):
        return "on" if x else "off"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, tuple):
        return " ".join(str(v) for v in x)
    return "None" if x is None else str(x)


def flags_page() -> str:
    """The Markdown of docs/flags.md."""
    docs = field_docs()
    rows = []
    for field in dataclasses.fields(Config):
        atari, control = getattr(ATARI, field.name), getattr(CONTROL, field.name)
        same = "" if control == atari else f"`{_value(control)}`"
        meaning = docs[field.name].replace("|", "\\|")
        rows.append(f"| `{flag(field.name)}` | `{_value(atari)}` | {same} | {meaning} |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Writes the page to the path given (or prints it)."""
    argv = sys.argv[1:] if argv is None else argv
    page = flags_page()
    if not argv:
        print(page, end="")
        return 0
    with open(argv[0], "w") as f:
        f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
