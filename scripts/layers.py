#!/usr/bin/env python3
"""Lists the `crate::` edges between the files of shared/src and checks the layering.

Every reference to `crate::<module>...` (in `use` lines and inline paths, outside tests) is an
edge from the file to the file that defines the module it names. The script prints the edges
between layers, every cycle between files (strongly connected components), and every edge that
goes up the layers declared below. Exit status 1 when there is a cycle or an upward edge.
Usage: scripts/layers.py [--edges]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "src")

# Lower numbers are lower layers; a file may only use files of its own layer or lower ones.
# A file's layer is that of the first entry naming its module path, its last segment or its
# first segment; anything else is domain code.
LAYERS = [
    (0, "foundations", ["config", "error", "auth", "ids", "time", "keys", "retry", "validate", "aws", "cursor", "table",
                        "gateway", "lambda", "json", "store_error", "sha256", "capacity"]),
    (1, "stores", ["store", "model", "idempotency", "spec", "counts", "redact", "identity", "dedup", "split", "sink", "parts", "objects", "store_filters", "store_ingest", "store_list", "store_read", "chunks",
                   "store_write"]),
    (2, "domains", []),
    (3, "http", ["http", "handlers"]),
    (4, "routes", ["routes"]),
]
DEFAULT_LAYER = 2


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts) if parts != ["lib"] else ""


def strip_tests(text):
    # Drop `#[cfg(test)] mod tests { ... }` at the end of a file (the usual place), and comments.
    i = text.find("#[cfg(test)]")
    text = text if i < 0 else text[:i]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def files():
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                yield os.path.join(dirpath, n)


def resolve(target, modules):
    # The longest known module that prefixes the path.
    parts = target.split("::")
    for k in range(len(parts), 0, -1):
        cand = "::".join(parts[:k])
        if cand in modules:
            return cand
    return None


def main():
    paths = {module_of(p): p for p in files()}
    modules = set(paths)
    edges = set()
    ref = re.compile(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
    group = re.compile(r"crate::\{([^}]*)\}")
    for mod, path in paths.items():
        text = strip_tests(open(path, encoding="utf-8").read())
        targets = [m.group(1) for m in ref.finditer(text)]
        for g in group.finditer(text):
            targets += [t.strip().split("::")[0] for t in g.group(1).split(",") if t.strip()]
        # `super::x` from a module `a::b` is `a::x` (a `mod.rs` is its folder's module).
        for m in re.finditer(r"\bsuper::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
            base = mod.rsplit("::", 1)[0] if "::" in mod else ""
            targets.append(f"{base}::{m.group(1)}" if base else m.group(1))
        for t in targets:
            r = resolve(t, modules)
            if r is not None and r != mod and r != "":
                edges.add((mod, r))

    def layer(mod):
        segments = mod.split("::")
        for rank, _, names in LAYERS:
            if mod in names or segments[-1] in names or segments[0] in names:
                return rank
        return DEFAULT_LAYER

    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    graph = {m: sorted(b for a, b in edges if a == m) for m in modules}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for m in sorted(modules):
        if m not in index:
            visit(m)
    upward = sorted((a, b) for a, b in edges if layer(b) > layer(a))
    if "--edges" in sys.argv:
        for a, b in sorted(edges):
            print(f"{a or 'lib'} -> {b}  [{layer(a)} -> {layer(b)}]")
    print(f"{len(modules)} files, {len(edges)} edges, {len(sccs)} cycles, {len(upward)} upward edges")
    for comp in sccs:
        print("cycle:", " <-> ".join(comp))
    for a, b in upward:
        print(f"upward: {a} -> {b}")
    return 1 if sccs or upward else 0


if __name__ == "__main__":
    sys.exit(main())
