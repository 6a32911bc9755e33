#!/usr/bin/env python3
"""Checks tools/gpu_sysroot.sh against the build it is meant to reproduce elsewhere.

Runs `gpu_sysroot.sh --list` and fails unless the file list holds
  - every system header this build tree's compiles read (`ninja -t deps`: /usr/include/...),
  - every shared library the evax binary and the test binaries load (ldd), except the C/C++
    runtime and what torch's wheel brings (site-packages),
  - the target of every symbolic link in it (no link left dangling on the other machine),
  - the CMake package files CMakeLists.txt finds (DCMTK, yaml-cpp, spdlog, nlohmann_json),
and nothing of the C/C++ runtime (glibc, libstdc++, libgcc), which the other machine has.

usage: tools/check_gpu_sysroot.py --build BUILD_DIR
"""
import argparse
import os
import re
import subprocess
import sys

RUNTIME = re.compile(r"^(libc|libm|libdl|librt|libpthread|libresolv|libutil|libgcc_s|libstdc\+\+|"
                     r"ld-linux-x86-64)\.so")


def norm(path):
    # Merged /usr: /lib/x86_64-linux-gnu/x is /usr/lib/x86_64-linux-gnu/x.
    return "/usr" + path if path.startswith("/lib/") and os.path.exists("/usr" + path) else path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    listed = subprocess.run([os.path.join(root, "tools", "gpu_sysroot.sh"), "--list"], check=True,
                            capture_output=True, text=True)
    files = set(listed.stdout.split())
    print(listed.stderr.strip())
    problems = []

    deps = subprocess.run(["ninja", "-C", args.build, "-t", "deps"], check=True,
                          capture_output=True, text=True).stdout
    headers = {os.path.normpath(l.strip()) for l in deps.splitlines()
               if l.startswith("    /usr/include/")}
    missing = sorted(h for h in headers if h not in files and os.path.realpath(h) not in files)
    # Headers of the C/C++ runtime and the compiler come with the other machine's toolchain.
    toolchain = re.compile(r"^/usr/include/(c\+\+/|x86_64-linux-gnu/(bits|gnu|sys|asm|c\+\+)/|"
                           r"(linux|asm-generic)/)")
    owner = {}
    for h in missing:
        if toolchain.match(h):
            continue
        pkg = subprocess.run(["dpkg", "-S", h], capture_output=True, text=True).stdout.split(":")[0]
        owner[h] = pkg
    # libc6-dev / linux-libc-dev headers (stdio.h, …) are the toolchain's too.
    missing = [h for h, p in owner.items() if p not in ("libc6-dev", "linux-libc-dev", "")]
    if missing:
        problems.append(f"{len(missing)} system headers the build reads are not packed, e.g. " +
                        ", ".join(f"{h} ({owner[h]})" for h in missing[:8]))
    print(f"headers: {len(headers)} under /usr/include read by the build")

    loaded = set()
    for b in ["evax", "tests/test_io", "tests/test_distributed", "tests/test_apps"]:
        out = subprocess.run(["ldd", os.path.join(args.build, b)], check=True, capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m and not RUNTIME.match(m.group(1)) and "site-packages" not in m.group(2):
                loaded.add(norm(m.group(2)))
    absent = sorted(l for l in loaded if l not in files)
    if absent:
        problems.append(f"libraries the binaries load are not packed: {', '.join(absent[:8])}")
    print(f"libraries: {len(loaded)} loaded by evax and the tests besides torch and the C/C++ runtime")

    for f in sorted(files):
        if os.path.islink(f):
            target = os.path.realpath(f)
            if os.path.isdir(target):
                if not any(g.startswith(target + "/") for g in files):
                    problems.append(f"link {f} -> {target}/: nothing under it packed")
            elif target not in files:
                problems.append(f"link {f} -> {target}: target not packed")
        if RUNTIME.match(os.path.basename(f)):
            problems.append(f"{f} is the C/C++ runtime: must not be packed")
    for cfg in ["DCMTKConfig.cmake", "yaml-cpp-config.cmake", "spdlogConfig.cmake",
                "nlohmann_jsonConfig.cmake"]:
        if not any(f.endswith("/" + cfg) for f in files):
            problems.append(f"no {cfg}")

    for p in problems:
        print("FAILED:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
