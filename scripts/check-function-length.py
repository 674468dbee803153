#!/usr/bin/env python3
"""Lists the Rust functions of the workspace's crates (src/, examples/, tests/) longer
than a limit (default 200 lines, issue 25); exit 1 when there is one. A function's
length runs from its `fn` line to its closing brace; comments, strings and char
literals are stripped first so that braces inside them do not count."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 200
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")


def strip(text):
    """Blanks comments and string/char literals, keeping line breaks."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|\\x..|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def long_functions(path):
    lines = strip(path.read_text()).split("\n")
    found = []
    for start, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for end in range(start, len(lines)):
            for ch in lines[end]:
                if ch == "{":
                    depth += 1
                    opened = True
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not opened and depth == 0:
                    break
            else:
                if opened and depth == 0:
                    length = end - start + 1
                    if length > LIMIT:
                        found.append((m.group(1), start + 1, length))
                    break
                continue
            break
    return found


def main():
    bad = []
    for crate in ("engine", "operators", "jobs", "cluster", "tests"):
        for path in sorted((ROOT / crate).rglob("*.rs")):
            for name, line, length in long_functions(path):
                bad.append(f"{path.relative_to(ROOT)}:{line}: fn {name} is {length} lines")
    for b in bad:
        print(b, file=sys.stderr)
    if bad:
        print(f"{len(bad)} function(s) over {LIMIT} lines", file=sys.stderr)
        return 1
    print(f"no function over {LIMIT} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
