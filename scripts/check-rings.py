#!/usr/bin/env python3
"""Fails on an import ring between the files of a crate, and on a job importing another job.

Usage: python3 scripts/check-rings.py [--rings-only] [--graph] [--root DIR]

For each crate of the workspace (engine, operators, jobs, cluster) the script reads the
Rust sources under `<crate>/src/` (nothing under tests/, examples/ or benches/) and
builds the file-level import graph: an edge A -> B when file A names an item of file B
through a path that starts at the crate or at a module,

    use crate::x::y::Z;        use super::x::{Y, Z};        use self::x::Y;
    crate::x::y::f(..)         super::f(..)                  super::super::x::Y

(comments and string literals stripped first; `mod x;` declarations are not edges, nor
are bare relative paths such as `x::f()` from a parent to its child module, nor paths
into other crates, which Cargo already keeps one-way). A path resolves to the deepest
module *file* that exists along it (`x.rs` or `x/mod.rs`); inline modules such as
`mod tests { use super::*; }` are followed, so a test module naming its own file is not
an edge. A `use` that binds a module file (`use super::survey;`) is an edge to that file,
and the names later taken through it (`survey::Survey`) are listed as the edge's names.

Checks, each failing with exit status 1:

1. Rings: every strongly connected component of more than one file is reported with the
   edges inside it and the names that tie each edge.
2. Jobs (skipped with --rings-only): no module of `jobs/src/<job>` imports a module of
   another job, except the pairs in ALLOWED_JOB_IMPORTS below. Files of `jobs/src` that
   belong to no job (lib.rs, or a shared module such as `read.rs` or `job.rs`) may be
   imported by every job.

--graph also prints every edge of every crate.
"""

import argparse
import os
import re
import sys

# The crates of the workspace, bottom floor first.
CRATES = ("engine", "operators", "jobs", "cluster")

# The job modules of `jobs/src`: `jobs/src/<job>.rs` or `jobs/src/<job>/**`.
JOBS = ("curate", "score", "serve", "export", "eval", "fractions", "gen", "demo", "stage1")

# The only imports allowed from one job's modules into another job's modules,
# as (importing job, imported job):
# - serve composes curate's graph through its builder and reads curate's output types;
# - export reads curate's committed output (its manifest and report types);
# - demo runs gen, then curate, on an embedded default.
ALLOWED_JOB_IMPORTS = frozenset(
    {
        ("serve", "curate"),
        ("export", "curate"),
        ("demo", "gen"),
        ("demo", "curate"),
        # `fractions --gold` runs curate first (composition through the Job seam:
        # the curate spec is built and run, nothing inside curate is reached into).
        ("fractions", "curate"),
    }
)

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


# --------------------------------------------------------------------------- lexing


def strip_comments_and_strings(text):
    """The source with comments removed and string/char literals emptied.

    Line breaks are kept so that nothing shifts between lines. Handles nested block
    comments, raw strings (r"..", r#".."#, br#".."#), byte strings, escapes, and tells
    char literals ('a', '\\n', '"') from lifetimes ('a).
    """
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and nxt == "*":
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
            out.append(" ")
            continue
        # Raw strings: r"..", r#".."#, br".." (not an identifier ending in r or br).
        m = re.compile(r"(b?r)(#*)\"").match(text, i)
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(2)
            j = text.find(close, m.end())
            j = n if j < 0 else j + len(close)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
            continue
        if c == '"' or (c == "b" and nxt == '"' and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
            continue
        if c == "'":
            # '\..' escapes, 'x' chars; otherwise a lifetime or label.
            if nxt == "\\":
                j = text.find("'", i + 3)
                if j >= 0:
                    out.append("' '")
                    i = j + 1
                    continue
            elif i + 2 < n and text[i + 2] == "'":
                out.append("' '")
                i += 3
                continue
        out.append(c)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------- crate layout


class Crate:
    def __init__(self, root, name):
        self.name = name
        self.src = os.path.join(root, name, "src")
        self.root = root
        self.files = {}  # relative path -> module path (tuple)
        for dirpath, dirnames, filenames in os.walk(self.src):
            dirnames.sort()
            for f in sorted(filenames):
                if f.endswith(".rs"):
                    full = os.path.join(dirpath, f)
                    rel = os.path.relpath(full, root).replace(os.sep, "/")
                    self.files[rel] = self.module_path_of(full)
        self.by_module = {}
        for rel, mod in self.files.items():
            self.by_module.setdefault(mod, rel)

    def module_path_of(self, full):
        parts = os.path.relpath(full, self.src).replace(os.sep, "/").split("/")
        last = parts[-1][:-3]
        parts = parts[:-1]
        if len(parts) == 0 and last in ("lib", "main"):
            return ()
        if last != "mod":
            parts.append(last)
        return tuple(parts)

    def root_file(self):
        for f in ("lib.rs", "main.rs"):
            rel = "%s/src/%s" % (self.name, f)
            if rel in self.files:
                return rel
        return None

    def file_of(self, module):
        """The file of a module path, or None when no file holds it."""
        if module == ():
            return self.root_file()
        base = "%s/src/%s" % (self.name, "/".join(module))
        for cand in (base + ".rs", base + "/mod.rs"):
            if cand in self.files:
                return cand
        return None

    def resolve(self, segments):
        """(file, rest): the deepest module file along an absolute path, and the segments after it."""
        best, depth = self.file_of(()), 0
        for k in range(1, len(segments) + 1):
            f = self.file_of(tuple(segments[:k]))
            if f is None:
                break
            best, depth = f, k
        return best, list(segments[depth:])


# --------------------------------------------------------------------------- parsing


def inline_modules(code):
    """[(start, end, name)] of `mod name { .. }` blocks, by character offset."""
    found = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
            j += 1
        found.append((m.end(), j, m.group(1)))
    return found


def module_at(file_module, blocks, pos):
    """The module path in force at offset `pos` of a file."""
    inner = [b for b in blocks if b[0] <= pos < b[1]]
    inner.sort()
    return tuple(file_module) + tuple(b[2] for b in inner)


def absolute(first_and_rest, here):
    """An absolute module path for a path starting at crate/self/super, or None."""
    segs = list(first_and_rest)
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] == "self":
        base, segs = list(here), segs[1:]
    elif segs[0] == "super":
        base = list(here)
        while segs and segs[0] == "super":
            if not base:
                return None
            base.pop()
            segs = segs[1:]
    else:
        return None
    return base + segs


def tokenize_use(tree):
    return re.findall(r"::|[{},*]|" + IDENT, tree)


def parse_use_tree(tokens, pos, prefix, out):
    """Appends (path, binding) for each leaf of a use tree; returns the next position."""
    path = list(prefix)
    while pos < len(tokens):
        t = tokens[pos]
        if t == "{":
            pos += 1
            while pos < len(tokens) and tokens[pos] != "}":
                pos = parse_use_tree(tokens, pos, path, out)
                if pos < len(tokens) and tokens[pos] == ",":
                    pos += 1
            return pos + 1
        if t == "*":
            out.append((path + ["*"], None))
            return pos + 1
        if t == "::":
            pos += 1
            continue
        if t in (",", "}"):
            break
        if t == "self" and path:
            binding = path[-1]
            pos += 1
            if pos + 1 < len(tokens) and tokens[pos] == "as":
                binding = tokens[pos + 1]
                pos += 2
            out.append((list(path), binding))
            return pos
        path.append(t)
        pos += 1
        if pos < len(tokens) and tokens[pos] == "as":
            out.append((list(path), tokens[pos + 1] if pos + 1 < len(tokens) else None))
            return pos + 2
        if pos >= len(tokens) or tokens[pos] in (",", "}"):
            out.append((list(path), path[-1]))
            return pos
    return pos


USE_RE = re.compile(r"\buse\s+([^;]*);")
PATH_RE = re.compile(
    r"(?<![A-Za-z0-9_$:])(crate|self|super)((?:\s*::\s*" + IDENT + r")+)"
)


def file_edges(crate, rel):
    """{target file: set of names} for one file."""
    with open(os.path.join(crate.root, rel), encoding="utf-8") as f:
        code = strip_comments_and_strings(f.read())
    blocks = inline_modules(code)
    file_module = crate.files[rel]
    edges = {}
    aliases = []  # (binding, module path, offset): names bound to module files

    def add(target, name):
        if target and target != rel:
            edges.setdefault(target, set()).add(name)

    for m in USE_RE.finditer(code):
        here = module_at(file_module, blocks, m.start())
        leaves = []
        parse_use_tree(tokenize_use(m.group(1)), 0, [], leaves)
        for path, binding in leaves:
            if path and path[0] == "crate" and len(path) == 1:
                continue
            mod = absolute(path, here)
            if mod is None:
                continue
            if mod and mod[-1] == "*":
                target, rest = crate.resolve(mod[:-1])
                add(target, rest[0] if rest else "*")
                continue
            target, rest = crate.resolve(mod)
            if rest:
                add(target, rest[0])
            else:
                # The use binds a module file: its names are those taken through it.
                aliases.append((binding or (mod[-1] if mod else "crate"), tuple(mod), m.start()))
                add(target, None)

    # Paths in code (use statements blanked so that they are not read twice;
    # `pub(in crate::x)` is a visibility, not an import).
    body = USE_RE.sub(lambda m: " " * len(m.group(0)), code)
    for m in PATH_RE.finditer(body):
        if re.search(r"\bin\s*$", body[max(0, m.start() - 8) : m.start()]):
            continue
        here = module_at(file_module, blocks, m.start())
        segs = [m.group(1)] + re.findall(IDENT, m.group(2))
        mod = absolute(segs, here)
        if mod is None:
            continue
        target, rest = crate.resolve(mod)
        add(target, rest[0] if rest else None)
    for binding, mod, _ in aliases:
        for m in re.finditer(r"(?<![A-Za-z0-9_$:])" + re.escape(binding) + r"((?:\s*::\s*" + IDENT + r")+)", body):
            segs = re.findall(IDENT, m.group(1))
            target, rest = crate.resolve(list(mod) + segs)
            add(target, rest[0] if rest else None)
    return edges


# --------------------------------------------------------------------------- graph


def strongly_connected(nodes, succ):
    """Tarjan's algorithm, iterative; components in discovery order."""
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(succ.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(succ.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(sorted(comp))
    return comps


def names_text(names):
    shown = sorted(n for n in names if n is not None)
    return ", ".join(shown) if shown else "(the module itself)"


def job_of(rel):
    m = re.match(r"jobs/src/([A-Za-z0-9_]+)(?:\.rs|/)", rel)
    if m and m.group(1) in JOBS:
        return m.group(1)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rings-only", action="store_true", help="check only for rings, not the job imports")
    parser.add_argument("--graph", action="store_true", help="also print every edge")
    parser.add_argument(
        "--root",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="the workspace root (default: the script's parent directory)",
    )
    args = parser.parse_args()

    graphs = {}
    for name in CRATES:
        crate = Crate(args.root, name)
        if not crate.files:
            print("check-rings: no sources under %s" % crate.src, file=sys.stderr)
            return 2
        graphs[name] = {rel: file_edges(crate, rel) for rel in crate.files}

    if args.graph:
        print("IMPORT GRAPH (file -> file: names)")
        for name in CRATES:
            for a, targets in sorted(graphs[name].items()):
                for b, names in sorted(targets.items()):
                    print("  %s -> %s: %s" % (a, b, names_text(names)))
        print()

    failed = False
    rings = []
    for name in CRATES:
        g = graphs[name]
        for comp in strongly_connected(sorted(g), g):
            if len(comp) > 1:
                rings.append((comp, g))
    if rings:
        failed = True
        print("IMPORT RINGS (file -> file: the names the first takes from the second)")
        for k, (comp, g) in enumerate(rings, 1):
            print("ring %d: %d files: %s" % (k, len(comp), ", ".join(comp)))
            members = set(comp)
            for a in comp:
                for b, names in sorted(g[a].items()):
                    if b in members:
                        print("  %s -> %s: %s" % (a, b, names_text(names)))
    else:
        print("no import ring in %s" % ", ".join(CRATES))

    if args.rings_only:
        print("job imports not checked (--rings-only)")
    else:
        bad = []
        for a, targets in sorted(graphs["jobs"].items()):
            ja = job_of(a)
            for b, names in sorted(targets.items()):
                jb = job_of(b)
                if ja and jb and ja != jb and (ja, jb) not in ALLOWED_JOB_IMPORTS:
                    bad.append("  %s -> %s: %s" % (a, b, names_text(names)))
        if bad:
            failed = True
            allowed = ", ".join("%s -> %s" % p for p in sorted(ALLOWED_JOB_IMPORTS))
            print("JOBS IMPORTING OTHER JOBS (allowed only: %s)" % allowed)
            print("\n".join(bad))
        else:
            print("no job imports another job's module beyond the allowed ones")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
