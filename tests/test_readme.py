"""The docs' promises: the library example runs, CI runs the README's test command, the
README stays short, and every relative link in the README and docs/ leads to a file."""

import glob
import os
import re

from tests.conftest import ROOT

README_MAX_BYTES = 10 * 1024


def _read(relpath: str) -> str:
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
        return f.read()


def _bash_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [ln.strip() for block in blocks for ln in block.splitlines()]


def test_library_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", _read(os.path.join("docs", "library.md")), re.S)
    assert blocks, "docs/library.md has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "docs/library.md", "exec"), scope)
    actions = scope["actions"]
    assert actions.shape == (8,) and int(actions.min()) >= 0 and int(actions.max()) < 2
    assert int(scope["state"].update_count) == 0


def test_ci_runs_the_readme_test_command():
    lines = _bash_lines(_read("README.md"))
    test_cmd = [ln for ln in lines if "pip install" in ln and "pytest" in ln]
    assert len(test_cmd) == 1, f"README needs one install-and-test line, has {test_cmd}"
    ci = [ln.strip() for ln in _read(os.path.join(".ci", "run")).splitlines()]
    assert test_cmd[0] in ci, f"{test_cmd[0]!r} is not a line of .ci/run"


def test_readme_is_short():
    size = os.path.getsize(os.path.join(ROOT, "README.md"))
    assert size < README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/"


def _relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images in ``text`` that name a local path
    (code blocks and code spans left out, as they are not rendered as links)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return [t for t in targets if not re.match(r"(https?|mailto):|#", t)]


def test_relative_links_lead_to_files():
    pages = ["README.md"] + sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
    )
    assert len(pages) > 1, "docs/ has no pages"
    broken = []
    for page in pages:
        for target in _relative_links(_read(page)):
            path = target.split("#", 1)[0]
            resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path))
            if not os.path.exists(resolved):
                broken.append(f"{page}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
