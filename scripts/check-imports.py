#!/usr/bin/env python3
"""Package.swift's dependencies equal the imports: for every Swift target,
each module its sources import is a declared dependency (a target or a
product), and each declared dependency is imported by at least one of its
files. A module that compiles only because another dependency happens to
pull it in, or a dependency nothing uses, is reported with the target and,
for a missing one, the file that imports it.

    scripts/check-imports.py                     # the package in this repository
    scripts/check-imports.py --package-json P.json --root DIR   # a dump made elsewhere

Each library under Shared/ also opens with its header: a file named after
the module whose first line is `// <Module>: ...`, the paragraph saying what
it owns and what it must not know.

Exit 0 when they agree, 1 with one line per difference, 2 on bad input.
"""
import argparse, json, os, re, subprocess, sys, tempfile

# Modules of the toolchain and the system, never declared in Package.swift.
SYSTEM = {"Swift", "Foundation", "FoundationEssentials", "FoundationNetworking", "FoundationInternationalization",
          "Dispatch", "Glibc", "Musl", "Darwin", "Android", "WinSDK", "XCTest", "Testing", "Synchronization",
          "_Concurrency", "_StringProcessing", "RegexBuilder", "Observation", "os", "Builtin", "CoreFoundation",
          "SwiftShims", "_Volatile", "_Differentiation", "Distributed", "Cxx", "CxxStdlib"}
IMPORT = re.compile(r"^\s*(?:@[\w()]+\s+)*import\s+(?:(?:typealias|struct|class|enum|protocol|let|var|func)\s+)?([A-Za-z_]\w*)",
                    re.MULTILINE)


def imports_of(path):
    """Modules a Swift file imports, comments left out."""
    text = open(path, encoding="utf-8", errors="replace").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"//[^\n]*", "", text)
    return set(IMPORT.findall(text))


def declared(target):
    names = set()
    for dep in target.get("dependencies", []):
        for kind in ("byName", "target", "product"):
            if kind in dep:
                names.add(dep[kind][0])
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package-json", help="the output of `swift package dump-package` (default: run it)")
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                    help="the package's folder (default: this repository)")
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    try:
        if a.package_json:
            package = json.load(open(a.package_json))
        else:
            # A scratch folder of its own: the package's .build may be locked by
            # the build or the tests that run this.
            with tempfile.TemporaryDirectory(prefix="check-imports-") as scratch:
                package = json.loads(subprocess.run(["swift", "package", "--scratch-path", scratch, "dump-package"], cwd=root,
                                                    check=True, stdout=subprocess.PIPE, text=True).stdout)
        targets = package["targets"]
    except FileNotFoundError as e:
        print(f"check-imports: cannot run `swift package dump-package` ({e}): put the Swift toolchain on PATH, "
              "or pass --package-json", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, subprocess.CalledProcessError) as e:
        print(f"check-imports: cannot read the package: {e}", file=sys.stderr)
        return 2
    local = {t["name"] for t in targets}
    problems = []
    checked = 0
    for t in targets:
        if t.get("type") in ("system", "binary", "plugin", "macro"):
            continue
        folder = os.path.join(root, t.get("path") or os.path.join("Tests" if t.get("type") == "test" else "Sources", t["name"]))
        excluded = [os.path.normpath(os.path.join(folder, e)) for e in t.get("exclude", [])]
        used, first_file = set(), {}
        swift_files = 0
        for directory, subdirs, files in os.walk(folder, followlinks=True):
            subdirs[:] = [d for d in subdirs if os.path.normpath(os.path.join(directory, d)) not in excluded]
            for name in sorted(files):
                path = os.path.join(directory, name)
                if not name.endswith(".swift") or os.path.normpath(path) in excluded:
                    continue
                swift_files += 1
                for module in imports_of(path):
                    used.add(module)
                    first_file.setdefault(module, os.path.relpath(path, root))
        if swift_files == 0:
            continue  # a C target
        checked += 1
        deps = declared(t)
        for module in sorted(used - deps - SYSTEM - {t["name"]}):
            where = "a target of this package" if module in local else "a product or system module"
            problems.append(f"{t['name']}: imports {module} ({where}) without declaring it, in {first_file[module]}")
        for module in sorted(deps - used):
            problems.append(f"{t['name']}: declares {module} but none of its files imports it")
        if t.get("type") == "regular" and (t.get("path") or "").startswith("Shared/"):
            header = os.path.join(folder, t["name"] + ".swift")
            first = open(header, encoding="utf-8").readline() if os.path.isfile(header) else ""
            if not first.startswith(f"// {t['name']}: "):
                problems.append(f"{t['name']}: has no header (a {os.path.relpath(header, root)} opening with "
                                f"'// {t['name']}: ' and what the module owns and must not know)")
    for line in problems:
        print(line)
    if problems:
        print(f"check-imports: {len(problems)} difference(s) between Package.swift and the imports "
              f"({checked} Swift targets); declare what is imported, drop what is not", file=sys.stderr)
        return 1
    print(f"check-imports: the dependencies of {checked} Swift targets equal their imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
