#!/usr/bin/env python3
"""Syntax-checks every torch-using source of evax against another LibTorch's headers (e.g. the
GPU machine's torch 2.11), using the build's compile_commands.json with the include path swapped.

usage: tools/check_torch_headers.py --include /path/to/torch/include [--build build] [--jobs 2]
(get headers with: pip download torch==2.11.0 --no-deps; unzip -q torch-*.whl 'torch/include/*')
"""
import argparse
import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--include", required=True, help="the other torch's include directory")
    ap.add_argument("--build", default="build")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    src = os.path.dirname(build)
    cmds = json.load(open(os.path.join(build, "compile_commands.json")))
    jobs = []
    for c in cmds:
        f, cmd = c["file"], c["command"]
        if not (f.startswith(os.path.join(src, "src")) or f.startswith(os.path.join(src, "apps"))):
            continue
        m = re.search(r"-isystem (\S*/site-packages/torch/include)(?=\s)", cmd)
        if not m:
            continue
        cmd = cmd.replace(m.group(1), args.include)
        cmd = re.sub(r"-include \S*cmake_pch\S*", "-include torch/torch.h", cmd)
        cmd = re.sub(r" -o \S+", " ", cmd).replace(" -c ", " -fsyntax-only ").replace("ccache ", "")
        jobs.append((f, cmd))

    def run(job):
        r = subprocess.run(job[1], shell=True, cwd=build, capture_output=True, text=True)
        return job[0], r.returncode, r.stderr

    bad = 0
    with cf.ThreadPoolExecutor(args.jobs) as ex:
        for f, rc, err in ex.map(run, jobs):
            if rc != 0:
                bad += 1
                print("FAIL", f)
                print("\n".join([l for l in err.splitlines() if "error" in l][:5]))
    print(f"{len(jobs)} files checked against {args.include}: {bad} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
