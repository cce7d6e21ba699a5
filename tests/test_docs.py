"""Every ```python block in README.md and docs/*.md is checked: executed, or compiled and matched.

The convention (also stated in docs/index.md, for authors):

* Each block runs on its own, as a reader who copies just that block would run it: in a fresh
  namespace whose ``__name__`` is ``"__main__"``, in a worker thread with no trio run of its own
  (a block may end with ``trio.run(main)``, exactly as a user's script would). The blocks of one
  Markdown file run in order; nothing carries from one block to the next unless the block is
  marked as continuing the previous one (below).
* While a file runs, the environment points at a fresh local backend: ``ARKOR_CLOUD_API_URL`` and
  ``ARKOR_TOKEN`` are set, so ``ArkorClient()`` and ``create_trainer(...)`` without ``client=``
  talk to it; ``HOME`` and the working directory are an empty temporary directory (no stray
  ``~/.arkor`` or ``.arkor/state.json``); ``SLACK_WEBHOOK_URL``, ``DISCORD_WEBHOOK_URL``,
  ``TEAMS_WEBHOOK_URL`` and ``WEBHOOK_URL`` point at a recording HTTP receiver (paths ``/slack``,
  ``/discord``, ``/teams``, ``/hook``). Blocks may also start their own ``open_local_backend()``.
* An HTML comment on the line before a block (blank lines between are fine) changes that:
  ``<!-- no-run -->``: only compiled (for what cannot run here, such as a cloud-only dataset);
  ``<!-- continues -->``: runs in the namespace the previous runnable block left (the prose must
  say so, for the reader);
  ``<!-- excerpt: examples/NAME.py -->``: not compiled (it may be a fragment with ``await`` or
  ``return``), only checked to appear verbatim (up to indentation) in that file, which
  tests/test_examples.py runs.
* Blocks use small step counts so a page runs in seconds; prose gives realistic values.
"""

from __future__ import annotations

import re
import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from arkor_trio.server import open_local_backend
from tests._receiver import Receiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
EXCERPT = re.compile(r"^excerpt:\s*(?P<path>\S+)$")
#: How long one Markdown file's blocks may run in total.
FILE_TIMEOUT = 120.0


@attrs.frozen
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


def doc_files() -> list[Path]:
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.exists()]


def extract(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, with the marker comment before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if opening["lang"] == "python":
            body = "\n".join(lines[i + 1 : end])
            blocks.append(Block(path, i + 2, textwrap.dedent(body), _marker(lines, i)))
        i = end + 1
    return blocks


def _marker(lines: list[str], fence: int) -> str | None:
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    found = MARKER.match(lines[j]) if j >= 0 else None
    return found["text"] if found else None


def mode(block: Block) -> str:
    """``"run"``, ``"continues"``, ``"no-run"`` or ``"excerpt"``; a mistyped marker fails.

    Other comments before a block (``<!-- prettier-ignore -->``, ...) leave it runnable.
    """
    text = block.marker
    if text is None:
        return "run"
    if text == "no-run":
        return "no-run"
    if text == "continues":
        return "continues"
    if EXCERPT.match(text):
        return "excerpt"
    if re.search(r"run|skip|excerpt|doctest|contin", text, re.IGNORECASE):
        raise AssertionError(f"{block.where}: unknown doc-test marker <!-- {text} -->")
    return "run"


def check_excerpt(block: Block, target: str) -> None:
    """The block's lines appear consecutively in ``target``, each shifted by one indentation."""
    source = (ROOT / target).read_text(encoding="utf-8").splitlines()
    wanted = block.code.strip("\n").splitlines()
    first = wanted[0].strip()
    for start, line in enumerate(source):
        if line.strip() != first:
            continue
        window = source[start : start + len(wanted)]
        if textwrap.dedent("\n".join(window)) == "\n".join(wanted):
            return
    raise AssertionError(f"{block.where}: this excerpt is not (or no longer) in {target}")


def run_blocks(blocks: list[Block]) -> None:
    """In order: check excerpts, compile the rest, run each runnable one in a fresh namespace.

    A ``continues`` block runs in the namespace of the runnable block before it.
    """
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        kind = mode(block)
        if kind == "run":
            namespace = {"__name__": "__main__"}
        if kind == "excerpt":  # a fragment (it may hold `await` or `return`): not compiled
            assert block.marker is not None
            check_excerpt(block, block.marker.partition(":")[2].strip())
            continue
        # Pad so that tracebacks show the Markdown file's own line numbers.
        padded = "\n" * (block.line - 1) + block.code
        try:
            code = compile(padded, str(block.path), "exec")
        except SyntaxError as exc:
            raise AssertionError(f"{block.where}: does not compile: {exc}") from exc
        if kind == "no-run":
            continue
        try:
            exec(code, namespace)
        except Exception as exc:
            detail = "".join(traceback.format_exception(exc))
            raise AssertionError(f"{block.where}: the block raised\n{detail}") from exc


def test_convention_holds_for_every_page() -> None:
    files = doc_files()
    assert ROOT / "README.md" in files
    for path in files:
        text = path.read_text(encoding="utf-8")
        fences = sum(1 for line in text.splitlines() if FENCE.match(line))
        assert fences % 2 == 0, f"{path}: unbalanced code fences"
        for block in extract(path):
            mode(block)


def test_extract_reads_markers_and_line_numbers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- no-run -->\n\n```python\nboom()\n```\n"
        "```bash\nls\n```\n  ```python\n  y = 2\n  ```\n",
        encoding="utf-8",
    )
    blocks = extract(page)
    assert [(b.line, b.code, b.marker) for b in blocks] == [
        (4, "x = 1", None),
        (10, "boom()", "no-run"),
        (16, "y = 2", None),
    ]
    assert [mode(b) for b in blocks] == ["run", "no-run", "run"]
    assert mode(attrs.evolve(blocks[0], marker="prettier-ignore")) == "run"
    assert mode(attrs.evolve(blocks[0], marker="excerpt: examples/ci_run.py")) == "excerpt"
    assert mode(attrs.evolve(blocks[0], marker="continues")) == "continues"
    for typo in ("norun", "no_run", "skip", "excerpt examples/x.py", "continue", "continued"):
        with pytest.raises(AssertionError, match="unknown doc-test marker"):
            mode(attrs.evolve(blocks[0], marker=typo))


def test_excerpts_must_match_the_file_up_to_indentation() -> None:
    lines = (ROOT / "examples" / "ci_run.py").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if "move_on_after(timeout)" in line)
    window = textwrap.dedent("\n".join(lines[start : start + 2]))
    block = Block(ROOT / "docs" / "x.md", 1, window, "excerpt: examples/ci_run.py")
    check_excerpt(block, "examples/ci_run.py")
    with pytest.raises(AssertionError, match="not \\(or no longer\\) in"):
        check_excerpt(attrs.evolve(block, code=window + "  # edited"), "examples/ci_run.py")


def test_each_block_runs_in_a_fresh_namespace_unless_it_continues(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 1\n```\n<!-- continues -->\n```python\nassert x == 1\n```\n"
        "<!-- no-run -->\n```python\nx\n```\n<!-- continues -->\n```python\nx += 1\n```\n"
        "```python\nprint(x)\n```\n",
        encoding="utf-8",
    )
    blocks = extract(page)
    run_blocks(blocks[:4])  # a no-run block in between does not break the continuation
    with pytest.raises(AssertionError, match=r"page.md:17: the block raised(.|\n)*NameError"):
        run_blocks(blocks)


@pytest.fixture
async def doc_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> AsyncIterator[Receiver]:
    receiver = await Receiver().start(nursery)
    home = tmp_path / "home"
    home.mkdir()
    async with open_local_backend(tmp_path / "backend") as backend:
        monkeypatch.setenv("ARKOR_CLOUD_API_URL", backend.base_url)
        monkeypatch.setenv("ARKOR_TOKEN", backend.token)
        monkeypatch.setenv("HOME", str(home))
        for name in ("SLACK", "DISCORD", "TEAMS"):
            monkeypatch.setenv(f"{name}_WEBHOOK_URL", receiver.url(f"/{name.lower()}"))
        monkeypatch.setenv("WEBHOOK_URL", receiver.url("/hook"))
        monkeypatch.delenv("NOTIFY_PROGRESS", raising=False)
        monkeypatch.chdir(home)
        yield receiver


PAGES = [p for p in doc_files() if extract(p)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
async def test_page_code_blocks_run(page: Path, doc_env: Receiver) -> None:
    blocks = extract(page)
    with trio.fail_after(FILE_TIMEOUT):
        await trio.to_thread.run_sync(run_blocks, blocks, abandon_on_cancel=True)
    assert blocks  # (the page was collected because it has some)
    if page.name == "notifications.md":  # its blocks post to the recording receiver
        paths = {r.path for r in doc_env.requests}
        assert {"/slack", "/discord", "/teams", "/hook"} <= paths
