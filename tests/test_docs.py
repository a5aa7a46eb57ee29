"""Every fenced code block in README.md and docs/*.md runs, so the docs cannot drift from the code.

A block may be marked by an HTML comment on the line before its fence (blank lines between are
allowed):

- ``<!-- doc-test: skip REASON -->`` with REASON from ``SKIP_REASONS``: the block cannot run
  here (it needs Google, or minutes, or a server left running in a terminal);
- ``<!-- doc-test: continue -->``: a Python fragment that uses names from the block before it;
  the two run as one script, in one process.

```python blocks run as a script in a fresh interpreter, in a temporary directory (a chain of
continued blocks as one script); a script that defines ``test_*`` functions runs under pytest, so
the fixtures the docs show are exercised. ```bash and ```console blocks run their ``python`` and
``colabremote`` commands with the repository as the working directory. Install lines (``python3
-m venv``, ``pip install``) are left out: CI's own setup runs them. Blocks without a language, or
```text, are prose (diagrams, command synopses). Nothing here can reach Google: credentials are
looked up in an empty directory, and every HTTP proxy variable points at a closed local port.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Why a block may be left out. Keep this list short: every other block runs.
SKIP_REASONS = {
    "needs-google": "a Google account, gcloud, or Google's sign-in pages",
    "long-running": "minutes of work that CI runs as its own step (the test suite, benchmarks)",
    "foreground": "a server that runs until Ctrl-C, or commands that use the address it printed "
    "(tests/test_cli.py runs `colabremote emulator`)",
}
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PROSE_LANGS = {"", "text"}

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[^`\s]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
# The colab backend against Google (an emulator's base URL makes it runnable here).
_COLAB = re.compile(
    r"""backend\s*=\s*["']colab["']|Session\(\s*["']colab["']|COLABREMOTE_BACKEND=colab\b"""
)
_BASE_URL = re.compile(r"base_url\s*=|COLABREMOTE_BASE_URL=")
_INSTALL = re.compile(r"^(\S*/)?pip3?$")


def _name(path: Path) -> str:
    """A file's name as failure messages show it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@dataclass
class Block:
    """One fenced block: where it is, its language, its text and its marker (if any)."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None = None
    marker_line: int = 0

    @property
    def where(self) -> str:
        return f"{_name(self.path)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        if self.marker is None or not self.marker.startswith("skip"):
            return None
        return self.marker.removeprefix("skip").strip()

    @property
    def continues(self) -> bool:
        return self.marker == "continue"


@dataclass
class Parsed:
    """The blocks of one file, and what is wrong with its markers and fences."""

    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse(path: Path) -> Parsed:
    """The fenced blocks of a Markdown file, each with the doc-test marker just before it."""
    parsed = Parsed()
    lines = path.read_text(encoding="utf-8").splitlines()
    name = _name(path)
    pending: tuple[str, int] | None = None
    index = 0
    while index < len(lines):
        text = lines[index]
        marker = _MARKER.match(text)
        if marker:
            if pending is not None:
                parsed.problems.append(f"{name}:{pending[1]}: a marker not followed by a block")
            pending = (marker.group("body"), index + 1)
            index += 1
            continue
        fence = _FENCE.match(text)
        if fence is None:
            if text.strip() and pending is not None:
                parsed.problems.append(f"{name}:{pending[1]}: a marker not followed by a block")
                pending = None
            index += 1
            continue
        indent, mark, start = len(fence.group("indent")), fence.group("fence"), index + 1
        body: list[str] = []
        index += 1
        while index < len(lines) and not (
            lines[index].strip().startswith(mark[0] * len(mark))
            and not lines[index].strip().strip(mark[0])
        ):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        if index == len(lines):
            parsed.problems.append(f"{name}:{start}: a fence that is never closed")
        block = Block(path, start, fence.group("lang").lower(), "\n".join(body))
        if pending is not None:
            block.marker, block.marker_line = pending
            pending = None
        parsed.blocks.append(block)
        index += 1
    if pending is not None:
        parsed.problems.append(f"{name}:{pending[1]}: a marker not followed by a block")
    return parsed


PARSED = {path: parse(path) for path in DOC_FILES}
BLOCKS = [block for parsed in PARSED.values() for block in parsed.blocks]


def marker_problems(block: Block) -> list[str]:
    """What is wrong with a block's marker, its language, or its use of the colab backend."""
    problems = []
    if block.marker is not None and not block.continues:
        reason = block.skip_reason
        if reason is None or reason not in SKIP_REASONS:
            known = ", ".join(f"'skip {r}'" for r in SKIP_REASONS)
            problems.append(
                f"{block.where}: unknown marker 'doc-test: {block.marker}' (line "
                f"{block.marker_line}); use 'continue' or one of {known}"
            )
    if block.lang not in PYTHON_LANGS | SHELL_LANGS | PROSE_LANGS:
        problems.append(
            f"{block.where}: the doc test cannot run ```{block.lang} blocks; use ```python, "
            "```bash or ```console, or ```text for prose"
        )
    if block.continues and block.lang not in PYTHON_LANGS:
        problems.append(f"{block.where}: only ```python blocks can continue another")
    if (
        block.lang not in PROSE_LANGS
        and block.skip_reason is None
        and _COLAB.search(block.code)
        and not _BASE_URL.search(block.code)
    ):
        problems.append(
            f"{block.where}: uses the colab backend without a marker; use backend='emulator' "
            "where the point survives, or mark it <!-- doc-test: skip needs-google -->"
        )
    return problems


@dataclass
class Chain:
    """Blocks that run together: one block, and the ones that continue it."""

    blocks: list[Block]

    @property
    def first(self) -> Block:
        return self.blocks[0]

    @property
    def where(self) -> str:
        return self.first.where + "".join(f"+{b.line}" for b in self.blocks[1:])


def chains(parsed: Parsed) -> Iterator[Chain | str]:
    """The file's runnable chains, or a problem where a continuation has nothing to continue."""
    previous: Chain | None = None
    for block in parsed.blocks:
        if block.lang in PROSE_LANGS:
            continue
        if block.continues:
            if previous is None or previous.first.lang not in PYTHON_LANGS:
                yield f"{block.where}: 'continue' with no ```python block before it to continue"
                continue
            if previous.first.skip_reason is not None:
                yield f"{block.where}: 'continue' after a skipped block; mark it skipped too"
                continue
            previous.blocks.append(block)
            continue
        if previous is not None:
            yield previous
        previous = Chain([block])
    if previous is not None:
        yield previous


CHAINS: list[Chain] = []
CHAIN_PROBLEMS: list[str] = []
for _parsed in PARSED.values():
    for _item in chains(_parsed):
        if isinstance(_item, str):
            CHAIN_PROBLEMS.append(_item)
        else:
            CHAINS.append(_item)


def test_markers_fences_and_colab_blocks() -> None:
    """Markers name a known reason and sit right before a block; no unmarked block needs Google."""
    problems = [p for parsed in PARSED.values() for p in parsed.problems]
    problems += [p for block in BLOCKS for p in marker_problems(block)]
    problems += CHAIN_PROBLEMS
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """A colab block without a marker, an unknown reason and a stray marker are all reported."""
    page = tmp_path / "_doc_test_probe.md"
    page.write_text(
        "<!-- doc-test: skip because -->\n```python\nprint(1)\n```\n\n"
        '```python\nimport colabremote as cr\ncr.Session(backend="colab", gpu="T4")\n```\n\n'
        "<!-- doc-test: skip needs-google -->\n\nsome prose\n\n"
        "<!-- doc-test: continue -->\n```toml\nx = 1\n```\n",
        encoding="utf-8",
    )
    parsed = parse(page)
    problems = parsed.problems + [p for block in parsed.blocks for p in marker_problems(block)]
    text = "\n".join(problems)
    assert "_doc_test_probe.md:2: unknown marker 'doc-test: skip because'" in text
    assert "_doc_test_probe.md:6: uses the colab backend without a marker" in text
    assert "_doc_test_probe.md:11: a marker not followed by a block" in text
    assert "cannot run ```toml blocks" in text
    assert "only ```python blocks can continue another" in text


# -- running the blocks -----------------------------------------------------------------------

_DEAD_PROXY = "http://127.0.0.1:9"  # discard: nothing listens, so a request for Google fails fast


def environment(tmp_path: Path) -> dict[str, str]:
    """This environment without the user's colabremote and Google settings, sealed off from
    the network: credentials are looked for in empty directories, proxies lead nowhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COLABREMOTE_", "PYTEST_", "GOOGLE_"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    for name in ("config", "gcloud"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(
        COLABREMOTE_CONFIG_DIR=str(tmp_path / "config"),
        COLABREMOTE_TOKEN_STORE="file",
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        HTTP_PROXY=_DEAD_PROXY,
        HTTPS_PROXY=_DEAD_PROXY,
        ALL_PROXY=_DEAD_PROXY,
        NO_PROXY="127.0.0.1,localhost,::1",
        PYTHONUNBUFFERED="1",
    )
    return env


def check(result: subprocess.CompletedProcess[str], what: str, where: str) -> None:
    """A block passes when it exits 0 and prints no traceback (even one it survived)."""
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{where}: {what} exited with {result.returncode}\n{output}"
    assert "Traceback" not in result.stderr, f"{where}: {what} printed a traceback\n{output}"


def run_python(chain: Chain, tmp_path: Path) -> None:
    """The chain as one script (under pytest if it defines tests), in a temporary directory."""
    script = tmp_path / ("test_doc_snippet.py" if _defines_tests(chain) else "doc_snippet.py")
    lines: list[str] = []
    origin: list[tuple[str, int]] = []  # the doc file and line of each script line
    for block in chain.blocks:
        for offset, text in enumerate(block.code.splitlines(), start=1):
            lines.append(text)
            origin.append((_name(block.path), block.line + offset))
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if script.name.startswith("test_"):
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    else:
        argv = [sys.executable, script.name]
    result = subprocess.run(
        argv, cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=240
    )

    def to_doc(match: re.Match[str]) -> str:  # a script line, as the line of the docs
        number = int(match.group("line"))
        if not 0 < number <= len(origin):
            return match.group(0)
        doc, line = origin[number - 1]
        return f"{doc}{match.group('sep')}{line}"

    pattern = re.compile(
        rf"(?:{re.escape(str(tmp_path))}/)?{re.escape(script.name)}"
        r"(?P<sep>\", line |:)(?P<line>\d+)"
    )
    result.stdout = pattern.sub(to_doc, result.stdout)
    result.stderr = pattern.sub(to_doc, result.stderr)
    check(result, "the block" if len(chain.blocks) == 1 else "the chain of blocks", chain.where)


def _defines_tests(chain: Chain) -> bool:
    return any(re.search(r"^def test_", b.code, re.MULTILINE) for b in chain.blocks)


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell block: ``$`` lines of a console transcript (the rest is output),
    every line of a script; a trailing backslash continues a line."""
    commands: list[str] = []
    carry = ""
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if not carry:
            if block.lang == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            carry += line[:-1] + " "
            continue
        commands.append(carry + line)
        carry = ""
    return commands


def argv_of(words: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """Environment and argv for one command, or None for an install step CI runs itself."""
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    program, args = Path(words[0]).name, words[1:]
    is_python = re.fullmatch(r"python(3(\.\d+)?)?", program) is not None
    if _INSTALL.match(words[0]) or (is_python and args[:2] in (["-m", "venv"], ["-m", "pip"])):
        return None
    if is_python:
        return env, [sys.executable, *args]
    if program == "colabremote":
        return env, [sys.executable, "-m", "colabremote", *args]
    raise AssertionError(
        f"the doc test runs only python and colabremote commands, not {words[0]!r}; "
        "mark the block with a reason if it cannot run here"
    )


def run_shell(block: Block, tmp_path: Path) -> None:
    """Each command of the block, from the repository's directory."""
    ran = 0
    for command in shell_commands(block):
        words = shlex.split(command, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            part, words = words[:end], words[end + 1 :]
            found = argv_of(list(part))
            if found is None:
                continue
            extra, argv = found
            env = environment(tmp_path) | extra
            result = subprocess.run(
                argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240
            )
            check(result, f"`{shlex.join(part)}`", block.where)
            ran += 1
    assert ran, f"{block.where}: no command to run here; mark it with a reason if it cannot run"


# Each block starts kernels, emulators or servers (about a minute in all): the fast subset keeps
# only the checks of markers and fences above.
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("chain", CHAINS, ids=[chain.where for chain in CHAINS])
def test_block_runs(chain: Chain, tmp_path: Path) -> None:
    """The block (with the blocks that continue it) runs as the docs show it."""
    reason = chain.first.skip_reason
    if reason is not None:
        pytest.skip(f"{chain.where}: {reason} ({SKIP_REASONS.get(reason, 'unknown reason')})")
    if chain.first.lang in PYTHON_LANGS:
        run_python(chain, tmp_path)
    else:
        run_shell(chain.first, tmp_path)
