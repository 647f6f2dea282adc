#!/usr/bin/env python3
"""Reports module cycles inside each crate of the workspace; exits 1 if there is one.

A module depends on another when its non-test code names it (`crate::a::b`, `super::x`,
`self::x`). Comments, doc comments and `#[cfg(test)]` modules are left out: a test may use any
module. Re-exports (`pub use …`) are left out too: they shape the public paths, not what the
module's own code needs. Each file is one module; inline `mod x { … }` blocks belong to their
file. Usage: tools/modcycles/modcycles.py [CRATE_DIR ...] (default: crates/* and the facade).
"""
import pathlib
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def module_of(src: pathlib.Path, f: pathlib.Path) -> tuple:
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text: str) -> str:
    # Drop `#[cfg(test)]` items (almost always a trailing `mod tests { … }`), by brace matching.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    text = "".join(out)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        line = re.sub(r"//.*", "", line)
        if re.match(r"\s*pub(\([^)]*\))?\s+use\b", line):
            continue  # a re-export; multi-line ones are joined below
        lines.append(line)
    text = "\n".join(lines)
    # Multi-line `pub use a::{…};` re-exports.
    text = re.sub(r"\bpub(\([^)]*\))?\s+use\b[^;]*;", "", text, flags=re.S)
    return text


def crate_graph(crate: pathlib.Path):
    src = crate / "src"
    files = [f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts]
    mods = {module_of(src, f): f for f in files}
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        text = strip(f.read_text())
        # A `use a::{b, c::d}` group: expand the simple one-level form.
        for g in re.finditer(r"\b(crate|super|self)((?:::\w+)*)::\{([^}]*)\}", text, flags=re.S):
            for item in g.group(3).split(","):
                item = item.strip().split(" ")[0]
                if item:
                    text += f"\n{g.group(1)}{g.group(2)}::{item}"
        for p in PATH.finditer(text):
            root, rest = p.group(1), [s for s in p.group(2).split("::") if s]
            if root == "crate":
                base = []
            elif root == "self":
                base = list(m)
            else:  # super
                base = list(m[:-1])
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            path = base + rest
            # The longest prefix that is a module of this crate.
            target = None
            for k in range(len(path), -1, -1):
                if tuple(path[:k]) in mods:
                    target = tuple(path[:k])
                    break
            if target is None or target == m or target == ():
                continue
            # A module naming its own ancestor's items is nesting, not a cycle (`super::Item`).
            if m[: len(target)] == target:
                continue
            edges[m].add(target)
    return edges


def cycles(edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    crates = [pathlib.Path(a) for a in sys.argv[1:]] or sorted(root.glob("crates/*")) + [root]
    bad = 0
    for crate in crates:
        if not (crate / "src").is_dir():
            continue
        edges = crate_graph(crate)
        for scc in cycles(edges):
            bad += 1
            names = ["::".join(m) or "lib" for m in scc]
            print(f"{crate.name}: module cycle among {', '.join(names)}")
            for m in scc:
                for w in sorted(edges[m] & set(scc)):
                    print(f"    {'::'.join(m)} -> {'::'.join(w)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
