#!/usr/bin/env python3
"""Fail when the last ctest run skipped a test that CI is expected to run.

Tests skip visibly (EVAX_SKIP, tests/skip.h: ctest reports "***Skipped"); in CI a skip means a
missing tool, venv or data set, so it must not pass silently. Reads the last run's
<build>/Testing/Temporary/LastTest.log (or a `ctest --output-junit` file with --junit) and exits 1
listing every skipped test, with its reason, that no pattern in the allow-list matches.

Allow-list (default tools/ci_allowed_skips.txt): one fnmatch pattern over ctest test names a line
("models: *gpu*"), `#` starts a comment. Exit codes: 0 no unexpected skip, 1 unexpected skips,
2 no readable ctest result.
"""
import argparse
import fnmatch
import os
import re
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"EVAX_TEST_SKIPPED: (.*)")  # tests/skip.h, EVAX_SKIP_MARKER


def from_last_test_log(path):
    """{test name: reason} of the skipped tests and the number of tests in ctest's LastTest.log."""
    skipped, name, reason, count = {}, None, "", 0
    start = re.compile(r"^\d+/\d+ Testing: (.*)$")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = start.match(line)
            if m:
                name, reason, count = m.group(1), "", count + 1
                continue
            m = MARKER.search(line)
            if m and name is not None and not reason:
                reason = m.group(1)
            # ctest's record of a SKIP_REGULAR_EXPRESSION match, after the test's output.
            if name is not None and line.startswith("Skip regular expression found in output"):
                skipped[name] = reason or line
    return skipped, count


def from_junit(path):
    skipped, count = {}, 0
    for case in ET.parse(path).getroot().iter("testcase"):
        count += 1
        s = case.find("skipped")
        if s is not None:
            m = MARKER.search(case.findtext("system-out") or "")
            skipped[case.get("name")] = m.group(1) if m else s.get("message", "")
    return skipped, count


def load_allow(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [p for p in (line.split("#", 1)[0].strip() for line in f) if p]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="build tree (default build/)")
    ap.add_argument("--junit", help="read this `ctest --output-junit` file instead of LastTest.log")
    ap.add_argument("--allow", default=os.path.join(ROOT, "tools", "ci_allowed_skips.txt"),
                    help="allow-list of tests CI legitimately cannot run")
    args = ap.parse_args()

    src = args.junit or os.path.join(args.build, "Testing", "Temporary", "LastTest.log")
    try:
        skipped, count = from_junit(src) if args.junit else from_last_test_log(src)
    except (OSError, ET.ParseError) as e:
        print(f"ci_check_skips: cannot read the ctest result {src}: {e}", file=sys.stderr)
        return 2
    if count == 0:
        print(f"ci_check_skips: no tests in {src}", file=sys.stderr)
        return 2

    allow = load_allow(args.allow)
    allowed = {n: r for n, r in skipped.items() if any(fnmatch.fnmatchcase(n, p) for p in allow)}
    bad = {n: r for n, r in skipped.items() if n not in allowed}
    for n, r in sorted(allowed.items()):
        print(f"ci_check_skips: skipped (allowed): {n}: {r}")
    if bad:
        print(f"ci_check_skips: {len(bad)} of {count} tests skipped that CI must run "
              f"(fix the environment, or list them in {os.path.relpath(args.allow, ROOT)}):",
              file=sys.stderr)
        for n, r in sorted(bad.items()):
            print(f"  {n}: {r}", file=sys.stderr)
        return 1
    print(f"ci_check_skips: {count} tests, {len(skipped)} skipped, none unexpected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
