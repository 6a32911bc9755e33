#!/usr/bin/env python3
"""Every system file the build uses must come from a Debian package the set-up installs.

A build that reads a file the set-up does not provide works on the machine that happens to have it
and fails on a fresh one (issue 9: OpenCVConfig.cmake from libopencv-dev; CUDA headers reached
through /usr/local). This check lists the files a configured and built tree used:

  - CMake: every file the configure step read (build.ninja's RERUN_CMAKE inputs: package configs,
    modules) and every file or program found (FILEPATH/PATH entries of CMakeCache.txt);
  - compiler: every header in ninja's dependency log (`ninja -t deps`);
  - linker: every library on the link lines (absolute paths and resolved `-l`);
  - loader: the libraries the built executables load (`ldd`).

Files inside the repository, the build tree or the evax cache (the pinned venv from
tools/requirements.txt) are the project's own. Every other file must belong to a package in the
dependency closure of tools/apt-packages.txt (Depends and Pre-Depends, recursively) or to the
base system every Debian install has (Essential or Priority: required). Anything under
/usr/local, /opt or a home directory, and any file no package owns, fails the check.

usage: check_provenance.py --build BUILD [--root REPO] [--cache DIR] [--packages FILE]
exit status 0 when clean, 1 with one line per offending file (grouped by package), 2 on misuse.
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys


def installed_packages():
    """name -> fields for every installed package (dpkg status)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f",
         "${Package}\t${Status}\t${Essential}\t${Priority}\t${Provides}\t${Depends}\t${Pre-Depends}\n"],
        check=True, capture_output=True, text=True).stdout
    pkgs = {}
    provides = {}
    for line in out.splitlines():
        name, status, essential, priority, prov, deps, predeps = (line.split("\t") + [""] * 7)[:7]
        if not status.endswith("installed") or "not-installed" in status or "config-files" in status:
            continue
        pkgs[name] = {"essential": essential == "yes", "priority": priority,
                      "deps": ", ".join(x for x in (deps, predeps) if x)}
        for p in filter(None, (s.strip() for s in prov.split(","))):
            provides.setdefault(re.split(r"[\s(]", p)[0], []).append(name)
    return pkgs, provides


def closure(roots, pkgs, provides):
    """Installed packages reachable from `roots` through Depends/Pre-Depends."""
    seen, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for clause in filter(None, (c.strip() for c in pkgs.get(name, {}).get("deps", "").split(","))):
            # "a (>= 1) | b:any": the first installed alternative (or provider) satisfies it.
            for alt in (a.strip() for a in clause.split("|")):
                dep = re.split(r"[\s(:]", alt)[0]
                cands = [dep] if dep in pkgs else provides.get(dep, [])
                if cands:
                    stack.extend(cands)
                    break
    return seen


def owners():
    """path -> package for every file dpkg has installed."""
    table = {}
    for lst in glob.glob("/var/lib/dpkg/info/*.list"):
        pkg = os.path.basename(lst)[:-5].split(":")[0]
        with open(lst, encoding="utf-8", errors="replace") as f:
            for path in f:
                table.setdefault(path.rstrip("\n"), pkg)
    return table


def owner_of(path, table):
    """The package owning `path`, trying merged-/usr aliases and symlink targets."""
    cands = [path, os.path.realpath(path)]
    for p in list(cands):
        for a, b in (("/usr/lib/", "/lib/"), ("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/")):
            if p.startswith(a):
                cands.append(b + p[len(a):])
            elif p.startswith(b):
                cands.append(a + p[len(b):])
    # A file reached through a symlinked directory: normalise the directory only.
    d, base = os.path.split(path)
    cands.append(os.path.join(os.path.realpath(d), base))
    for c in cands:
        if c in table:
            return table[c]
    return None


def ninja(build, *args):
    return subprocess.run(["ninja", "-C", build, *args], check=True, capture_output=True,
                          text=True).stdout


def used_files(build):
    """(path, how it was used) for every file the build read."""
    used = []
    text = open(os.path.join(build, "build.ninja"), encoding="utf-8").read()
    m = re.search(r"^build build\.ninja: RERUN_CMAKE (.*)$", text, re.M)
    if m:
        for p in m.group(1).replace("|", " ").split():
            used.append((p, "cmake input"))
    for line in open(os.path.join(build, "CMakeCache.txt"), encoding="utf-8", errors="replace"):
        m = re.match(r"^([^#/][^:]*):(FILEPATH|PATH)=(.+)$", line.strip())
        if m and m.group(1) == "CMAKE_INSTALL_PREFIX":
            continue  # where `install` would write: nothing is read from it
        if m and m.group(3).startswith("/") and not m.group(3).endswith("-NOTFOUND"):
            used.append((m.group(3), f"cmake cache {m.group(1)}"))
    for line in ninja(build, "-t", "deps").splitlines():
        if line.startswith("    "):
            used.append((line.strip(), "header"))
    search = []
    for cmd in ninja(build, "-t", "commands").splitlines():
        if " -o " not in cmd or " -c " in cmd:
            continue  # compile commands: headers come from the deps log
        for tok in shlex.split(cmd):
            if tok.startswith("-L"):
                search.append(tok[2:])
            elif tok.startswith("-Wl,") and "-rpath-link," in tok:
                search.append(tok.split("-rpath-link,", 1)[1])
        for tok in shlex.split(cmd):
            if tok.startswith("/") and re.search(r"\.(so(\.\d+)*|a)$", tok):
                used.append((tok, "link"))
            elif tok.startswith("-l") and len(tok) > 2:
                lib = resolve_l(tok[2:], search)
                used.append((lib or tok, "link"))
    for exe in executables(build):
        out = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        for m in re.finditer(r"=>\s+(/\S+)", out):
            used.append((m.group(1), f"loaded by {os.path.relpath(exe, build)}"))
        if "not found" in out:
            for line in out.splitlines():
                if "not found" in line:
                    used.append((line.split()[0], f"unresolved in {os.path.relpath(exe, build)}"))
    return used


def resolve_l(name, search):
    for d in search:
        for suffix in (".so", ".a"):
            p = os.path.join(d, f"lib{name}{suffix}")
            if os.path.exists(p):
                return p
    for suffix in (".so", ".a"):
        out = subprocess.run(["c++", f"-print-file-name=lib{name}{suffix}"], capture_output=True,
                             text=True).stdout.strip()
        if out.startswith("/"):
            return out
    return None


def executables(build):
    exes = []
    for p in [os.path.join(build, "evax")] + glob.glob(os.path.join(build, "tests", "test_*")):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            exes.append(p)
    return exes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--cache", default=os.environ.get("EVAX_CACHE",
                                                      os.path.expanduser("~/.cache/evax")))
    ap.add_argument("--packages", help="default: ROOT/tools/apt-packages.txt")
    a = ap.parse_args()
    build = os.path.realpath(a.build)
    if not os.path.exists(os.path.join(build, "build.ninja")):
        print(f"provenance: {build} is not a configured ninja build tree", file=sys.stderr)
        return 2
    listfile = a.packages or os.path.join(a.root, "tools", "apt-packages.txt")
    wanted = [l.split("#")[0].strip() for l in open(listfile, encoding="utf-8")]
    wanted = [w for w in wanted if w]

    pkgs, provides = installed_packages()
    missing = [w for w in wanted if w not in pkgs]
    allowed = closure([w for w in wanted if w in pkgs], pkgs, provides)
    allowed |= closure([n for n, p in pkgs.items() if p["essential"] or p["priority"] == "required"],
                       pkgs, provides)
    table = owners()

    own = [os.path.realpath(p) + os.sep for p in (a.root, build, a.cache)]
    bad = {}
    checked = 0
    seen = set()
    for path, how in used_files(build):
        if not path.startswith("/"):
            if how.startswith("unresolved") or how == "link":
                bad.setdefault("(not found)", []).append(f"{path} ({how})")
            continue  # relative: inside the build tree
        real = os.path.realpath(path)
        if (path, how) in seen or any(real.startswith(o) or path.startswith(o) for o in own):
            continue
        seen.add((path, how))
        checked += 1
        if re.match(r"^/(usr/local|opt|home|root)/", path) or re.match(r"^/(usr/local|opt|home|root)/", real):
            bad.setdefault("(outside Debian's packages)", []).append(f"{path} ({how})")
            continue
        pkg = owner_of(path, table)
        if pkg is None:
            bad.setdefault("(owned by no package)", []).append(f"{path} ({how})")
        elif pkg not in allowed:
            bad.setdefault(pkg, []).append(f"{path} ({how})")

    print(f"provenance: {checked} system files used by {build}; {len(allowed)} packages in the "
          f"closure of {os.path.relpath(listfile, a.root)} and the base system")
    if missing:
        print(f"provenance: FAIL: listed but not installed: {' '.join(missing)}")
    for pkg, files in sorted(bad.items()):
        print(f"provenance: FAIL: {pkg}: {len(files)} file(s) not provided by the set-up, e.g.")
        for f in sorted(set(files))[:5]:
            print(f"    {f}")
    if missing or bad:
        return 1
    print("provenance: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
