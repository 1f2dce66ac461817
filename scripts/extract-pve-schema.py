#!/usr/bin/env python3
"""Extract the subset of the official Proxmox VE API schema that rivetctl uses.

The repository carries what its tests need: targets/tests/data/pve-api-schema.subset.json
holds, copied whole, the method entries (description, parameters with their types, enums,
patterns and format strings, permissions, returns) of the endpoints that the Proxmox target
and its tests use. This script writes that file from the official schema; nothing else in
the repository reads the official schema.

Source: the Proxmox VE API viewer data (pve-docs `api-viewer/apidoc.js`, whose `apiSchema`
is a tree of {path, info: {METHOD: entry}, children}). Accepted inputs: that apidoc.js file,
its tree as JSON, or the same data already flattened to {path: {METHOD: entry}}.

Usage (python3, standard library only):

    scripts/extract-pve-schema.py SCHEMA [--pve-version X.Y] [--out FILE]
    scripts/extract-pve-schema.py SCHEMA --check    # regenerate, diff, exit 1 on difference

SCHEMA is required: the official schema file (the project keeps one as
reference/pve-api-schema.json in its shared reference directory). The schema states no
Proxmox VE version; pass --pve-version when you know which release it came from, otherwise
the header says "unknown". --check compares with the committed file, keeping its
extraction date, so a developer with the source can prove the subset is a faithful copy.
"""

import argparse
import datetime
import difflib
import hashlib
import json
import os
import sys

# Endpoints and methods kept: what targets/tests/render_proxmox.rs checks against, plus what
# the Proxmox target calls (create, configure, resize, start/stop, status, delete, tasks).
KEEP = [
    ("/version", "GET"),
    ("/nodes", "GET"),
    ("/cluster/nextid", "GET"),
    ("/cluster/resources", "GET"),
    ("/nodes/{node}/lxc", "POST"),
    ("/nodes/{node}/lxc/{vmid}", "DELETE"),
    ("/nodes/{node}/lxc/{vmid}/config", "GET"),
    ("/nodes/{node}/lxc/{vmid}/config", "PUT"),
    ("/nodes/{node}/lxc/{vmid}/resize", "PUT"),
    ("/nodes/{node}/lxc/{vmid}/status/current", "GET"),
    ("/nodes/{node}/lxc/{vmid}/status/start", "POST"),
    ("/nodes/{node}/lxc/{vmid}/status/shutdown", "POST"),
    ("/nodes/{node}/lxc/{vmid}/status/stop", "POST"),
    ("/nodes/{node}/tasks/{upid}/status", "GET"),
    ("/nodes/{node}/tasks/{upid}/log", "GET"),
]

SCRIPT = "scripts/extract-pve-schema.py"
DEFAULT_OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "targets", "tests", "data",
                           "pve-api-schema.subset.json"))


def die(message):
    print(f"extract-pve-schema: error: {message}", file=sys.stderr)
    sys.exit(1)


def parse(text):
    """The schema as {path: {METHOD: entry}}, from any of the accepted inputs."""
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        # apidoc.js: `const apiSchema = [ ... ];` followed by the viewer's code.
        marker = text.find("apiSchema")
        start = text.find("[", marker) if marker >= 0 else -1
        if start < 0:
            die("the input is neither JSON nor an apidoc.js with `apiSchema = [...]`")
        stripped = text[start:]
    try:
        data, _ = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError as err:
        die(f"cannot parse the schema: {err}")
    if isinstance(data, dict):
        return data
    flat = {}

    def walk(nodes):
        for node in nodes:
            if node.get("info"):
                flat[node["path"]] = node["info"]
            walk(node.get("children") or [])

    walk(data)
    return flat


def subset(schema, source_name, source_sha256, pve_version, date):
    paths = {}
    missing = []
    for path, method in KEEP:
        entry = schema.get(path, {}).get(method)
        if entry is None:
            missing.append(f"{method} {path}")
            continue
        paths.setdefault(path, {})[method] = entry
    if missing:
        die("the schema lacks " + ", ".join(missing))
    if pve_version:
        version = pve_version
    else:
        version = ("unknown: the schema file states no Proxmox VE version; run with "
                   "--pve-version X.Y when the release it came from is known")
    header = {
        "origin": "Proxmox VE API viewer data (pve-docs api-viewer/apidoc.js, apiSchema)",
        "source_file": source_name,
        "source_sha256": source_sha256,
        "pve_version": version,
        "extracted_by": SCRIPT,
        "extracted_on": date,
        "kept": [f"{method} {path}" for path, method in KEEP],
        "note": "Method entries are copied whole and unchanged. Regenerate or verify with "
                f"{SCRIPT} (see targets/tests/data/README.md).",
    }
    return {"source": header, "paths": paths}


def render(document):
    return json.dumps(document, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("schema", help="the official schema: apidoc.js or its JSON")
    parser.add_argument("--pve-version", help="the Proxmox VE release the schema is from, when known")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the subset")
    parser.add_argument("--check", action="store_true",
                        help="regenerate and compare with --out; exit 1 when they differ")
    args = parser.parse_args()

    try:
        with open(args.schema, "rb") as f:
            raw = f.read()
    except OSError as err:
        die(f"cannot read {args.schema}: {err.strerror}")
    schema = parse(raw.decode("utf-8"))
    sha = hashlib.sha256(raw).hexdigest()
    name = os.path.basename(args.schema)
    date = datetime.date.today().isoformat()
    pve_version = args.pve_version

    existing = None
    if args.check:
        try:
            with open(args.out, encoding="utf-8") as f:
                existing = f.read()
        except OSError as err:
            die(f"cannot read {args.out}: {err.strerror}")
        header = json.loads(existing).get("source", {})
        date = header.get("extracted_on", date)
        if pve_version is None and not str(header.get("pve_version", "")).startswith("unknown"):
            pve_version = header.get("pve_version")

    text = render(subset(schema, name, sha, pve_version, date))
    if args.check:
        if text == existing:
            print(f"extract-pve-schema: {args.out} is a faithful copy of {name}", file=sys.stderr)
            return
        diff = difflib.unified_diff(existing.splitlines(True), text.splitlines(True),
                                    "committed", "regenerated", n=2)
        sys.stderr.writelines(list(diff)[:200])
        die(f"{args.out} differs from what {name} gives; rerun without --check to update it")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"extract-pve-schema: wrote {args.out}: {len(KEEP)} methods from {name} (sha256 {sha[:12]})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
