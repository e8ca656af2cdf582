"""The docs cannot go stale silently: README.md and docs/*.md checked against the code.

- every `us8k …` command line in a code block parses with the command's own parser (`cli.parse_args`),
  in every variant its notation allows: `[optional parts]` left out and put in, and each alternative
  of `a|b|c` and `[A | B]`; the options `ingest` and `label` hand to Beam must be Beam's own;
- every inline `us8k …` code span names a command and only options that command (or Beam) has;
- every `make TARGET` shown names a target of the Makefile;
- every relative link points to an existing file (and heading, for `#anchor`s);
- every repository path or module the docs name in a code span exists (`models/train.py`,
  `tfdata.contract`), and so does every module a folder's table row lists;
- README.md starts with the two set-up commands and stays within 200 lines.

Placeholders (FILE, DIR, BUCKET…) are fine as values: only flags and the shape of the line are checked.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
PACKAGES = ("beam", "benchmarks", "cli", "cloud", "models", "serving", "tfdata", "tests", "docs")

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
PROMPT = re.compile(r"^(?:\$\s+)?(?:\.venv/bin/)?")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _blocks(page: Path) -> list[str]:
    return FENCE.findall(_text(page))


def _prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", _text(page))


def _logical_lines(block: str) -> list[str]:
    """A code block's lines with `\\` continuations joined."""
    lines, current = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return lines


def _strip_prompt(line: str) -> str:
    return PROMPT.sub("", line.strip(), count=1)


def _is_command(line: str, program: str) -> bool:
    """A line that runs `program` (not an output line such as `us8k serve: serving …`)."""
    words = line.split()
    return len(words) >= 2 and words[0] == program and not words[1].endswith(":")


def _shown(program: str):
    """(page, line) for every line of a code block that runs `program`."""
    for page in PAGES:
        for block in _blocks(page):
            for line in map(_strip_prompt, _logical_lines(block)):
                if _is_command(line, program):
                    yield page, line


def _spans(program: str):
    """(page, text) for every inline code span of the prose that runs `program`."""
    for page in PAGES:
        for span in INLINE_CODE.findall(_prose(page)):
            span = _strip_prompt(span)
            if _is_command(span, program):
                yield page, span


# ---------------------------------------------------------------------------- the notation of optional parts
def _split_groups(line: str) -> list:
    """Text and `[…]` groups, in order: a group is the list of its ` | `-separated alternatives."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(line):
        if char == "[" and (i == 0 or line[i - 1] == " ") and depth == 0:
            parts.append(line[start:i])
            depth, start = 1, i + 1
        elif char == "[" and depth:
            depth += 1
        elif char == "]" and depth:
            depth -= 1
            if depth == 0:
                parts.append([alt.strip() for alt in line[start:i].split(" | ")])
                start = i + 1
    parts.append(line[start:])
    return parts


def variants(line: str) -> list[str]:
    """The concrete command lines one documented line stands for: every optional group in, with each of
    its ` | ` alternatives in turn (the others at their first), each with every `a|b` choice in turn;
    then every optional group left out."""
    parts = _split_groups(line)
    groups = [i for i, p in enumerate(parts) if isinstance(p, list)]

    def render(pick: dict, omit: bool = False) -> str:
        return " ".join(("" if omit else p[pick.get(i, 0)]) if isinstance(p, list) else p
                        for i, p in enumerate(parts))

    lines = [render({})]
    lines += [render({i: k}) for i in groups for k in range(1, len(parts[i]))]
    lines.append(render({}, omit=True))
    out = []
    for text in lines:
        tokens = shlex.split(text, comments=True)
        choices = [t.split("|") for t in tokens]
        out.append([c[0] for c in choices])
        for i, options in enumerate(choices):
            for option in options[1:]:
                out.append([c[0] if j != i else option for j, c in enumerate(choices)])
    return [[t for t in tokens if t not in ("…", "...")] for tokens in out]


def test_the_notation_expands_as_documented():
    assert variants("us8k x A [--b 1] [--c d|e] [--f | --g h]  # note") == [
        ["us8k", "x", "A", "--b", "1", "--c", "d", "--f"],
        ["us8k", "x", "A", "--b", "1", "--c", "e", "--f"],
        ["us8k", "x", "A", "--b", "1", "--c", "d", "--g", "h"],
        ["us8k", "x", "A", "--b", "1", "--c", "e", "--g", "h"],
        ["us8k", "x", "A"]]


# ---------------------------------------------------------------------------- us8k
def _parse(argv: list[str]) -> argparse.Namespace:
    """cli.parse_args, with argparse's usage error turned into an assertion that names it."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return cli.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue() else exc) from None


@functools.cache
def _beam_parser() -> argparse.ArgumentParser:
    """Beam's own parser of every PipelineOptions class (what `ingest` and `label` hand their options to)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    built = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=built.append)
    return built[0]


def _beam_option_strings() -> set[str]:
    return {s for action in _beam_parser()._actions for s in action.option_strings}


def _unknown_beam_options(extra: list[str]) -> list[str]:
    return [arg for arg in _beam_parser().parse_known_args(extra)[1] if arg.startswith("-")]


COMMAND_LINES = sorted({(str(page.relative_to(ROOT)), line) for page, line in _shown("us8k")})


def test_the_docs_show_command_lines():
    shown = {line.split()[1] for _, line in COMMAND_LINES}
    assert shown >= {"synth", "ingest", "train", "evaluate", "cv", "export", "package", "serve", "predict",
                     "label", "launch-training", "deploy", "undeploy"}, shown


@pytest.mark.parametrize("page, line", COMMAND_LINES)
def test_every_command_line_parses(page, line):
    for argv in variants(line):
        try:
            args = _parse(argv[1:])
        except AssertionError as exc:
            raise AssertionError(f"{page}: `{' '.join(argv)}`: {exc}") from None
        unknown = _unknown_beam_options(getattr(args, "extra_args", []))
        assert not unknown, f"{page}: `{' '.join(argv)}`: not options of us8k {argv[1]} nor Beam's: {unknown}"


def _option_strings(parser: argparse.ArgumentParser, path: list[str]) -> set[str]:
    """Every option of the (sub)command `path` names, e.g. ["bench", "serving"]."""
    options = {s for action in parser._actions for s in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            if path and path[0] in action.choices:
                return options | _option_strings(action.choices[path[0]], path[1:])
            return options | {s for sub in action.choices.values() for s in _option_strings(sub, [])}
    return options


INLINE_SPANS = sorted({(str(page.relative_to(ROOT)), span) for page, span in _spans("us8k")})


@pytest.mark.parametrize("page, span", INLINE_SPANS)
def test_every_inline_command_names_real_options(page, span):
    for argv in variants(span):
        words = argv[1:]
        if words[0].startswith("-"):  # `us8k --help`
            assert set(words) <= {"-h", "--help"}, f"{page}: `{span}`"
            continue
        assert words[0] in cli.COMMANDS, f"{page}: `{span}`: no command {words[0]!r}"
        known = _option_strings(cli.build_parser(words[0], words[1:]), [w for w in words if not w.startswith("-")])
        if getattr(cli.command_module(words[0]), "PASSES_UNKNOWN_ARGS", False):
            known |= _beam_option_strings()
        flags = {w.split("=", 1)[0] for w in words if w.startswith("-")}
        assert flags <= known, f"{page}: `{span}`: unknown option(s) {sorted(flags - known)}"


# ---------------------------------------------------------------------------- make
def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = {m for m in re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M)
    return targets | set(phony.group(1).split() if phony else ())


MAKE_LINES = sorted({(str(page.relative_to(ROOT)), line) for page, line in [*_shown("make"), *_spans("make")]})


@pytest.mark.parametrize("page, line", MAKE_LINES)
def test_every_make_target_exists(page, line):
    targets = [t for t in shlex.split(line, comments=True)[1:] if "=" not in t and not t.startswith("-")]
    assert targets and set(targets) <= _make_targets(), f"{page}: `{line}`: targets of the Makefile: {_make_targets()}"


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    lines = _text(README).splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    first = _logical_lines(_blocks(README)[0])
    assert first[0].startswith("make demo ") and first[1].startswith("make test "), first
    assert _text(README).index("```") < 40, "the two commands come first"
    assert {"demo", "test"} <= _make_targets()


# ---------------------------------------------------------------------------- links and paths
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors, seen = set(), {}
    for heading in HEADING.findall(_prose(page)):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links():
    for page in PAGES:
        for target in LINK.findall(_prose(page)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                yield str(page.relative_to(ROOT)), target


@pytest.mark.parametrize("page, target", sorted(set(_links())))
def test_every_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    resolved = (ROOT / page).parent / path if path else ROOT / page
    assert resolved.exists(), f"{page}: link to {target}: no {resolved.relative_to(ROOT)}"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{page}: link to {target}: no such heading in {path or page}"


def _named_paths():
    """(page, kind, name): repository paths (`models/train.py`, `serving/static/`) and modules
    (`tfdata.contract`) named in code spans, and the files a folder's table row lists."""
    path = re.compile(rf"^(?:{'|'.join(PACKAGES)})/[\w./*-]*$")
    # `beam.io.Write` and the like are Apache Beam's (imported as `beam`), not this package's modules
    module = re.compile(rf"^(?:{'|'.join(p for p in PACKAGES if p not in ('beam', 'tests', 'docs'))})\.[A-Za-z_]+")
    file_name = re.compile(r"^[\w-]+\.(?:py|md|sh|txt|json|jsonl)$")
    row = re.compile(r"^\|\s*`((?:" + "|".join(PACKAGES) + r")/)`\s*\|(.*)\|\s*$", re.M)
    for page in PAGES:
        where = str(page.relative_to(ROOT))
        for span in INLINE_CODE.findall(_prose(page)):
            first = span.split()[0] if span.split() else span
            if path.match(first):
                yield where, "path", first
            elif module.match(first) and not file_name.match(first):
                yield where, "module", module.match(first).group(0)
        for folder, cells in row.findall(_prose(page)):
            for name in INLINE_CODE.findall(cells):
                if re.fullmatch(r"[\w-]+\.(?:py|md|sh|txt)|[\w-]+/", name):
                    yield where, "path", folder + name


@pytest.mark.parametrize("page, kind, name", sorted(set(_named_paths())))
def test_every_named_path_exists(page, kind, name):
    if kind == "module":  # `package.module`, or `package.name` of something the package defines
        package, attribute = name.split(".")
        assert (ROOT / package / f"{attribute}.py").is_file() or (ROOT / package / attribute).is_dir() \
            or hasattr(importlib.import_module(package), attribute), f"{page}: `{name}` not found"
    elif "*" in name:
        assert list(ROOT.glob(name)), f"{page}: `{name}` matches nothing"
    else:
        assert (ROOT / name).exists(), f"{page}: `{name}` not found"


def test_the_checks_see_the_docs():
    """Guards against a regex that silently matches nothing."""
    assert len(COMMAND_LINES) >= 40 and len(INLINE_SPANS) >= 40 and len(MAKE_LINES) >= 3
    assert len(set(_links())) >= 20 and len(set(_named_paths())) >= 40
