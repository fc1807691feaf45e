"""Fail when the top-level modules of a crate depend on each other in a cycle.

A module depends on another when any of its files names `crate::<other>` (in a `use` or a path).
Each top-level module is a file `src/<m>.rs` or a directory `src/<m>/`. Items defined in `lib.rs`
itself are ignored (the facade of the crate). Usage: module_cycles.py CRATE_DIR...
"""

import pathlib
import re
import sys

PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def edges(src: pathlib.Path) -> dict:
    modules = {p.stem for p in src.glob("*.rs") if p.stem not in ("lib", "main")}
    modules |= {p.name for p in src.iterdir() if p.is_dir()}
    deps = {m: set() for m in modules}
    for f in src.rglob("*.rs"):
        top = f.relative_to(src).parts[0].removesuffix(".rs")
        if top not in deps:
            continue
        for used in PATH.findall(f.read_text()):
            if used in modules and used != top:
                deps[top].add(used)
    return deps


def cycles(deps: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    failed = False
    for crate in sys.argv[1:]:
        deps = edges(pathlib.Path(crate) / "src")
        for comp in cycles(deps):
            failed = True
            detail = "; ".join(f"{m} -> {', '.join(sorted(deps[m] & set(comp)))}" for m in comp)
            print(f"{crate}: module cycle {{{', '.join(comp)}}}: {detail}")
        if not failed:
            print(f"{crate}: {len(deps)} top-level modules, no cycle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
