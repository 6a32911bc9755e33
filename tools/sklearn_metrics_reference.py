#!/usr/bin/env python3
"""scikit-learn reference values for the metric tests (tests/eval/metrics_test.cpp).

Reads the two CSVs `evax metrics` reads (header `id,<class>,...`; targets 0/1, empty = missing;
rows matched by id) and writes one JSON object (--out) with, per class in column order (null where
sklearn has no value: AUC nan for a single label value, a 0/0 rate, no known label):
  auc                    roc_auc_score over the class's known labels
  mauc                   mean of the non-null AUCs
  youden                 roc_curve thresholds[argmax(tpr - fpr)] ("inf" for +inf)
  rates_05, rates_thr    {sensitivity, specificity, ppv, f1} lists at 0.5 and at --thresholds
                         (score >= threshold is positive; recall/precision/f1_score with
                         zero_division=nan)
  multiclass (--task multiclass): accuracy, recall, ppv (per class), confusion (rows = true),
                         predicted class = np.argmax of the scores, true class = argmax of the
                         one-hot target.
Scores are parsed with float(), as strtod does (pandas' default parser is not correctly rounded).
"""
import argparse
import csv
import json
import math
import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score,
                             recall_score, roc_auc_score, roc_curve)


def read(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    return rows[0], {r[0]: r[1:] for r in rows[1:]}, [r[0] for r in rows[1:]]


def num(v):
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def rates(y, s, t):
    if len(y) == 0:
        return [None] * 4
    p = (s >= t).astype(int)
    kw = dict(average=None, zero_division=np.nan)
    return [num(recall_score(y, p, labels=[1], **kw)[0]),
            num(recall_score(y, p, labels=[0], **kw)[0]),
            num(precision_score(y, p, labels=[1], **kw)[0]),
            num(f1_score(y, p, labels=[1], **kw)[0])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pred", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--task", choices=["multilabel", "multiclass"], default="multilabel")
    ap.add_argument("--thresholds", default="", help="comma-separated, one per class")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    warnings.simplefilter("ignore", UndefinedMetricWarning)

    header, pred, order = read(a.pred)
    theader, target, _ = read(a.target)
    assert header == theader, (header, theader)
    k = len(header) - 1
    S = np.array([[float(v) for v in pred[i]] for i in order], dtype=np.float64)
    Y = np.array([[float(v) if v.strip() else np.nan for v in target[i]] for i in order])
    thr = [float(t) for t in a.thresholds.split(",")] if a.thresholds else [0.5] * k

    out = {"classes": header[1:], "auc": [], "youden": [], "rates_05": [], "rates_thr": []}
    for c in range(k):
        known = ~np.isnan(Y[:, c])
        y, s = Y[known, c].astype(int), S[known, c]
        both = len(np.unique(y)) == 2
        out["auc"].append(num(roc_auc_score(y, s)) if both else None)
        if both:
            fpr, tpr, th = roc_curve(y, s)
            out["youden"].append(num(th[np.argmax(tpr - fpr)]))
        else:
            out["youden"].append(None)
        out["rates_05"].append(rates(y, s, 0.5))
        out["rates_thr"].append(rates(y, s, thr[c]))
    aucs = [v for v in out["auc"] if v is not None]
    out["mauc"] = float(np.mean(aucs)) if aucs else None

    if a.task == "multiclass":
        yt, yp = np.argmax(Y, axis=1), np.argmax(S, axis=1)
        labels = list(range(k))
        kw = dict(labels=labels, average=None, zero_division=np.nan)
        out["multiclass"] = {
            "accuracy": float(accuracy_score(yt, yp)),
            "recall": [num(v) for v in recall_score(yt, yp, **kw)],
            "ppv": [num(v) for v in precision_score(yt, yp, **kw)],
            "confusion": confusion_matrix(yt, yp, labels=labels).tolist(),
        }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
