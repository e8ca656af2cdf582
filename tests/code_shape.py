"""The code's shape, for the renovation's evidence: `python tests/code_shape.py [ROOT]` prints, for the
product's folders under ROOT (default: this checkout), each folder's modules and lines, the functions
over 50 lines, the imports inside functions (each counted once, in its innermost function) and the
`noqa: E402` lines. `make shape` runs it; point ROOT at another checkout to compare."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

FOLDERS = ("tfdata", "cloud", "beam", "models", "serving", "benchmarks", "cli")
LONG = 50  # lines


def _inner_imports(function: ast.AST) -> int:
    """Imports in `function`'s own body (not in functions nested in it)."""
    count, stack = 0, list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            count += 1
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return count


def shape(root: Path) -> dict:
    files = sorted(p for folder in FOLDERS for p in (root / folder).glob("*.py"))
    files += sorted(p for p in root.glob("*.py") if p.name != "setup.py")
    folders, long, inner, e402 = {}, [], 0, 0
    for path in files:
        text = path.read_text()
        key = path.parent.name if path.parent != root else "(top)"
        modules, lines = folders.get(key, (0, 0))
        folders[key] = (modules + 1, lines + len(text.splitlines()))
        e402 += text.count("noqa: E402")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner += _inner_imports(node)
                length = node.end_lineno - node.lineno + 1
                if length > LONG:
                    long.append((length, f"{path.relative_to(root)}:{node.lineno}", node.name))
    return {"folders": folders, "long": sorted(long, reverse=True), "inner_imports": inner, "noqa_e402": e402}


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    result = shape(root)
    print(f"code shape of {root}")
    for folder, (modules, lines) in result["folders"].items():
        print(f"  {folder:<11} {modules:3d} modules {lines:6d} lines")
    total = sum(lines for _, lines in result["folders"].values())
    print(f"  {'total':<11} {sum(m for m, _ in result['folders'].values()):3d} modules {total:6d} lines")
    print(f"functions over {LONG} lines: {len(result['long'])}")
    for length, where, name in result["long"]:
        print(f"  {length:4d}  {where}  {name}")
    print(f"imports inside functions: {result['inner_imports']}; `noqa: E402` lines: {result['noqa_e402']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
