#!/usr/bin/env python3
"""Keeps docs/architecture.md true to the tree: every crate of the workspace and every
module of the jobs crate (jobs/src/NAME.rs or jobs/src/NAME/) must be named there, as
`jobs/src/NAME` for a job module. Exit 1, listing what is missing, when one is not.

Run by scripts/test.sh (the README's test command) before the tests compile."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


def workspace_crates():
    """The member directories of the workspace's Cargo.toml."""
    text = (ROOT / "Cargo.toml").read_text()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    return re.findall(r'"([^"]+)"', members.group(1)) if members else []


def job_modules():
    """Top-level modules of jobs/src (lib.rs excepted)."""
    src = ROOT / "jobs" / "src"
    names = set()
    for entry in src.iterdir():
        if entry.is_file() and entry.suffix == ".rs" and entry.stem != "lib":
            names.add(entry.stem)
        elif entry.is_dir() and (entry / "mod.rs").exists():
            names.add(entry.name)
    return sorted(names)


def main():
    doc = DOC.read_text()
    missing = []
    for crate in workspace_crates():
        if f"{crate}/" not in doc and f"`{crate}`" not in doc:
            missing.append(f"crate {crate} (name it as `{crate}` or {crate}/)")
    for module in job_modules():
        if not re.search(rf"jobs/src/{re.escape(module)}\b", doc):
            missing.append(f"job module jobs/src/{module}")
    if missing:
        print(f"{DOC.relative_to(ROOT)} does not describe:", file=sys.stderr)
        for m in missing:
            print(f"  - {m}", file=sys.stderr)
        return 1
    print(f"{DOC.relative_to(ROOT)} names every crate and job module")
    return 0


if __name__ == "__main__":
    sys.exit(main())
