#!/usr/bin/env python3
"""Checks the dependency direction of a crate's top-level modules.

Reads every `crate::x` and `super::x` path in `src/` (comments aside) and builds the graph of
which top-level module uses which. It fails when the graph has a cycle, and, when the crate's
`lib.rs` documents its floors, when a module uses one on its own floor or above it.

The floors are a table in lib.rs's module docs, highest first:

    //! | floor | modules |
    //! |---|---|
    //! | 3 | `api` |
    //! | 2 | `registry`, `proxy` |
    //! | 1 | `storage` |

Usage: check-layers.py CRATE_DIR...
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*|::\{)+)")
FLOOR_ROW = re.compile(r"^//!\s*\|\s*(\d+)\s*\|(.*)\|\s*$")


def module_path(src: Path, file: Path) -> list[str]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return parts


def code_lines(text: str):
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("//"):
            continue
        yield line.split("//", 1)[0] if "\"" not in line else line


def targets(src: Path, file: Path, tops: set[str]) -> set[str]:
    """The top-level modules `file` refers to."""
    here = module_path(src, file)
    found = set()
    text = "\n".join(code_lines(file.read_text()))
    # `use crate::{a::x, b}` and `use super::{...}` name several modules at once.
    for match in re.finditer(r"\b(crate|super)::\{([^}]*)\}", text):
        base = [] if match.group(1) == "crate" else here[:-1]
        if len(base) == 0:
            for item in re.findall(r"(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)", match.group(2)):
                if item in tops:
                    found.add(item)
    for match in re.finditer(r"\b((?:super::)+|crate::)([A-Za-z_][A-Za-z0-9_]*)", text):
        prefix, name = match.group(1), match.group(2)
        if prefix == "crate::":
            base = []
        else:
            ups = prefix.count("super::")
            # A file's own module is `here`; `super` from `a/b.rs` is `a`.
            base = here[: max(len(here) - ups, 0)] if len(here) >= ups else None
            if base is None:
                continue
        if not base and name in tops:
            found.add(name)
        elif base:
            found.add(base[0])
    return found


def floors(lib: Path) -> dict[str, int]:
    result = {}
    for line in lib.read_text().splitlines():
        row = FLOOR_ROW.match(line)
        if row:
            for name in re.findall(r"`([a-z_]+)`", row.group(2)):
                result[name] = int(row.group(1))
    return result


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def check(crate: Path) -> list[str]:
    src = crate / "src"
    files = [f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts]
    tops = {module_path(src, f)[0] for f in files if module_path(src, f)}
    graph: dict[str, set[str]] = {top: set() for top in tops}
    uses: dict[tuple[str, str], str] = {}
    for file in files:
        here = module_path(src, file)
        if not here:
            continue
        for target in targets(src, file, tops) - {here[0]}:
            graph[here[0]].add(target)
            uses.setdefault((here[0], target), str(file.relative_to(crate)))
    problems = []
    for component in cycles(graph):
        edges = [f"{a} → {b} ({uses[(a, b)]})" for a in component for b in sorted(graph[a]) if b in component]
        problems.append(f"{crate.name}: an import cycle among {', '.join(component)}:\n    " + "\n    ".join(edges))
    lib = src / "lib.rs"
    floor = floors(lib) if lib.exists() else {}
    if floor:
        for top in sorted(tops - set(floor)):
            problems.append(f"{crate.name}: `{top}` is on no floor of {lib.relative_to(crate.parent)}")
        for (a, b), where in sorted(uses.items()):
            if a in floor and b in floor and floor[b] >= floor[a]:
                problems.append(
                    f"{crate.name}: `{a}` (floor {floor[a]}) uses `{b}` (floor {floor[b]}), not below it: {where}"
                )
    return problems


def main() -> int:
    problems = [p for crate in sys.argv[1:] for p in check(Path(crate))]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
