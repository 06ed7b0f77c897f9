"""`python -m bench`: list the benchmarks; `python -m bench NAME [ARGS...]` runs one (`make bench NAME=... ARGS=...`).

Every module of this package is a benchmark (`bench/<name>.py`, run as `python -m bench.<name>`);
the list is read from the files, one line each from the module's docstring, without importing
them (some pull in the whole stack). Running one replaces this process with
`python -m bench.<name> ARGS...`, so its options, output, exit code and Ctrl-C are its own.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__init__", "__main__"}


def benchmarks() -> dict[str, str]:
    """{name: one-line summary} of every benchmark module, sorted by name."""
    found = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem in NOT_BENCHMARKS or path.stem.startswith("_"):
            continue
        found[path.stem] = summary(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "")
    return found


def summary(docstring: str) -> str:
    """The docstring's first line, without a leading "`python -m bench.x ...`:" usage prefix."""
    line = docstring.strip().splitlines()[0] if docstring.strip() else "(no description)"
    line = re.sub(r"^`python -m bench\.\w+[^`]*`:\s*", "", line)
    return line[:1].upper() + line[1:]


def print_list(out=sys.stdout) -> None:
    found = benchmarks()
    width = max(map(len, found), default=0)
    print("benchmarks (run one: make bench NAME=<name> ARGS='...'  or  python -m bench <name> [args]):", file=out)
    for name, text in found.items():
        print(f"  {name:<{width}}  {text}", file=out)
    print("each takes --help for its options", file=out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "list"):
        print_list()
        return 0
    name, rest = args[0], args[1:]
    if name.startswith("bench."):
        name = name.removeprefix("bench.")
    if name not in benchmarks():
        print(f"error: no benchmark named {name!r}", file=sys.stderr)
        print_list(sys.stderr)
        return 2
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{name}", *rest])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
