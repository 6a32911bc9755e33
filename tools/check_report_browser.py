#!/usr/bin/env python3
"""Renders a run's report.html in headless Chromium and checks the page as a reader sees it.

By default it first runs the smallest `evax demo` that still goes through every stage (synthetic
data, teacher, MIM pretraining, finetuning with the test table, Grad-CAM, segmentation), so the
report shows each kind of section; --run-dir checks an existing run's report instead.

Checks (each failure is one line; exit status 1 when any fails):
  - every number the page shows from a metrics.json (elements with data-metric="<file>#<path>")
    equals that file: the exact value in data-value, the text as evax formats it, and every number
    of every metrics.json of the run is on the page;
  - every <img> has loaded (naturalWidth > 0) and every <svg> has a non-zero size on the page;
  - the browser console has no errors;
  - the page made no network request besides the file itself (Chromium's performance log; data:
    URIs are inline);
and saves a full-page screenshot (report.png) and a copy of the page next to it in --out.

Chromium and its driver are Debian's (chromium, chromium-driver; tools/apt-packages.txt), driven
by Selenium with the driver's path given, so Selenium Manager never downloads anything.

usage: check_report_browser.py --evax BIN --out DIR [--run-dir RUN]
"""
import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# The demo cut to seconds: every stage runs, on 24 images of 64 px and one-block models.
TINY_DEMO = [
    "--set", "synth.n=24", "--set", "synth.size=64", "--set", "data.loader.batch_size=4",
    "--set", "train.epochs=1", "--set", "model.depth=1", "--set", "threads=1",
    "--teacher-set", "model.depth=1", "--teacher-set", "data.loader.batch_size=4",
    "--teacher-set", "train.epochs=1", "--teacher-set", "train.warmup_epochs=0",
    "--teacher-set", "threads=1",
    "--finetune-set", "model.depth=1", "--finetune-set", "data.loader.batch_size=4",
    "--finetune-set", "train.epochs=1", "--finetune-set", "train.warmup_epochs=0",
    "--finetune-set", "eval.every=1", "--finetune-set", "threads=1",
    "--segment-set", "model.depth=1", "--segment-set", "model.out_indices=[0]",
    "--segment-set", "model.channels=16", "--segment-set", "data.img_size=64",
    "--segment-set", "data.loader.batch_size=4", "--segment-set", "train.epochs=1",
    "--segment-set", "threads=1",
]


def format_metric(v, digits=4):
    """evax's format_metric (src/evax/report/html.cpp)."""
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == math.floor(v) and abs(v) < 1e15:
        return "%.0f" % v
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return "%.*g" % (max(1, digits), v)
    return "%.*f" % (digits, v)


def numbers(j, prefix, out):
    """Every number of a JSON document by '/'-path (bools are not numbers)."""
    if isinstance(j, bool) or j is None:
        return
    if isinstance(j, (int, float)):
        out[prefix] = float(j)
    elif isinstance(j, dict):
        for k, v in j.items():
            numbers(v, k if not prefix else prefix + "/" + k, out)
    elif isinstance(j, list):
        for i, v in enumerate(j):
            numbers(v, prefix + "/" + str(i), out)


def run_demo(evax, out):
    run_dir = os.path.join(out, "demo")
    shutil.rmtree(run_dir, ignore_errors=True)
    t = time.time()
    p = subprocess.run([evax, "demo", "--run-dir", run_dir] + TINY_DEMO,
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("evax demo failed (exit %d):\n%s" % (p.returncode, p.stderr[-4000:]))
    lines = [l for l in p.stdout.splitlines() + p.stderr.splitlines() if l.strip()]
    print("tiny demo: %.1f s; last line: %s" % (time.time() - t, lines[-1] if lines else ""))
    return run_dir, lines


def make_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1200,900", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-default-apps",
              "--disable-extensions", "--hide-scrollbars"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evax", help="the evax binary (runs the tiny demo)")
    ap.add_argument("--out", required=True, help="folder for the run, screenshot and page copy")
    ap.add_argument("--run-dir", help="check this run's report.html instead of a fresh demo's")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    # Selenium Manager must not look anything up: the driver is given, and it stays offline.
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    for path, pkg in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")]:
        if not os.path.exists(path):
            sys.exit("%s is missing: install the Debian package %s (tools/apt-packages.txt)"
                     % (path, pkg))
    try:
        import selenium  # noqa: F401
    except ImportError:
        sys.exit("selenium is missing from this Python (tools/requirements.txt)")

    if args.run_dir:
        run_dir = os.path.abspath(args.run_dir)
    else:
        if not args.evax:
            sys.exit("--evax BIN or --run-dir RUN is required")
        run_dir, lines = run_demo(args.evax, args.out)
        run_dir = os.path.abspath(run_dir)
        report_line = "report: " + os.path.join(run_dir, "report.html")
        if not lines or not lines[-1].endswith(report_line):
            print("FAIL: the demo's last line is not %r" % report_line)
            return 1
    report = os.path.join(run_dir, "report.html")
    if not os.path.exists(report):
        sys.exit("no report at " + report)
    url = "file://" + report

    failures = []
    driver = make_driver()
    try:
        driver.get(url)
        # Every metric on the page against the files.
        shown = driver.execute_script(
            "return Array.from(document.querySelectorAll('[data-metric]')).map(e => "
            "[e.getAttribute('data-metric'), e.getAttribute('data-value'), e.textContent, "
            "e.getBoundingClientRect().width > 0])")
        expected = {}
        for f in glob.glob(os.path.join(run_dir, "**", "metrics.json"), recursive=True):
            rel = os.path.relpath(f, run_dir)
            if rel.split(os.sep)[0] in ("data", "checkpoints"):
                continue
            with open(f) as fh:
                numbers(json.load(fh), "", expected.setdefault(rel, {}))
        seen = set()
        for key, value, text, visible in shown:
            file, _, path = key.partition("#")
            if file not in expected or path not in expected[file]:
                failures.append("the page shows %s, which is no number of the run's files" % key)
                continue
            v = expected[file][path]
            if float(value) != v:
                failures.append("%s: data-value %s != %r in the file" % (key, value, v))
            if text != format_metric(v):
                failures.append("%s: shows %r, the file has %r (%s)" % (key, text, v, format_metric(v)))
            if not visible:
                failures.append("%s: not rendered" % key)
            seen.add(key)
        n_numbers = 0
        for file, paths in expected.items():
            for path in paths:
                n_numbers += 1
                if file + "#" + path not in seen:
                    failures.append("%s#%s (= %r) is not on the page" % (file, path, paths[path]))
        if not expected.get("finetune/eval/test/metrics.json", {}).get("mauc"):
            failures.append("the demo has no finetune/eval/test/metrics.json mauc")
        # Images and SVGs rendered.
        imgs = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, "
            "i.naturalHeight, i.getBoundingClientRect().width])")
        for alt, complete, w, h, shown_w in imgs:
            if not complete or w <= 0 or h <= 0 or shown_w <= 0:
                failures.append("image %s not rendered (%s, %dx%d, %.0f px wide)"
                                % (alt, complete, w, h, shown_w))
        svgs = driver.execute_script(
            "return Array.from(document.querySelectorAll('svg')).map(s => { const r = "
            "s.getBoundingClientRect(); return [s.getAttribute('aria-label'), r.width, r.height]; })")
        for label, w, h in svgs:
            if w <= 0 or h <= 0:
                failures.append("svg %s has size %.0fx%.0f" % (label, w, h))
        if not imgs:
            failures.append("the report has no images (ROC curves, Grad-CAM gallery)")
        if not svgs:
            failures.append("the report has no plots")
        # Console errors and network requests.
        for entry in driver.get_log("browser"):
            if entry.get("level") == "SEVERE":
                failures.append("console error: " + entry.get("message", ""))
        requests = []
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        for r in requests:
            if r != url and not r.startswith("data:"):
                failures.append("network request: " + r[:200])
        if url not in requests:
            failures.append("the performance log shows no request for the page itself: "
                            "the network check saw nothing")
        # A full-page screenshot.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1200, min(int(height) + 100, 16000))
        shot = os.path.join(args.out, "report.png")
        driver.save_screenshot(shot)
        shutil.copy(report, os.path.join(args.out, "report.html"))
        print("checked %d numbers of %d metrics.json files, %d images, %d svgs, %d requests; "
              "screenshot %s" % (n_numbers, len(expected), len(imgs), len(svgs), len(requests), shot))
    finally:
        driver.quit()
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
