#!/usr/bin/env python3
"""Finetuning benchmark: EVA-X-S classifier at 224, batch 16, 2 threads, 14 labels.
One step = forward in train mode (drop path 0.1), BCEWithLogitsLoss, backward, torch AdamW over
EVA-X's param_groups_lrd groups (layer decay 0.55, weight decay 0.05), zero_grad. Then evaluation
throughput: eval-mode forward + sigmoid under no_grad, batch 32 (as bench/inference.py; evax's
ClassifyTask::infer runs under NoGradGuard, so no inference_mode here). The same in timm (Eva,
global_pool='avg') and in evax (build/bench/evax_bench_finetune), one after the other on the same
machine (--interleave: both alive at once, timed steps alternating between them, for a machine
with background load). Prints s/step (median of the timed steps after warmup), its
forward/backward/optimizer split, the training part's peak RSS, eval images/s (median batch) of
each side, and the ratios evax / timm (> 1: evax faster). "other_cpu_cores" is how many cores
processes other than the benchmark's kept busy on average meanwhile (/proc/stat minus our own CPU
time): well above 0 means the numbers are disturbed; rerun when the machine is idle.

--profile DIR: instead, record the timed training steps of each side with the CPU profiler of
torch.profiler (DIR/timm.json, DIR/evax.json, chrome traces) and print the self time per op and
step, side by side.

--bf16: both sides under bf16 autocast (timm: torch.autocast('cpu', dtype=torch.bfloat16); evax:
as ClassifyTask with bf16_cpu), logits cast back to float32 for the loss and the sigmoid.

usage: bench/finetune_step.py [--evax build/bench/evax_bench_finetune] [--batch 16] [--threads 2]
                              [--bf16] [--interleave | --profile DIR]
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import time

import torch
from timm.models.eva import Eva

LR, BETAS, EPS, WEIGHT_DECAY, LAYER_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.05, 0.55


def param_groups_lrd(model, weight_decay, no_weight_decay_list, layer_decay):
    # EVA-X utils/lr_decay.py (as tools/finetune_reference.py).
    def layer_id(n, num_layers):
        if n in ["cls_token", "pos_embed"] or n.startswith("patch_embed"):
            return 0
        if n.startswith("blocks"):
            return int(n.split(".")[1]) + 1
        return num_layers

    groups = {}
    num_layers = len(model.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim == 1 or n in no_weight_decay_list)
        lid = layer_id(n, num_layers)
        g = groups.setdefault(f"layer_{lid}_{decay}",
                              {"lr_scale": scales[lid], "params": [],
                               "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
    return list(groups.values())


def vm_hwm_mb():
    with open("/proc/self/status") as f:  # VmHWM: this process's peak resident memory
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024.0


def busy_cpu_s():
    with open("/proc/stat") as f:  # cpu user nice system idle iowait irq softirq steal ...
        v = [int(t) for t in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:  # utime, stime: fields 14, 15 (after "pid (comm)")
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


class OtherCpu:
    """Average cores kept busy by other processes than ours in a with-block. Ours: this process,
    plus the live process `pid` if given, plus (children=True) children reaped meanwhile."""

    def __init__(self, children=False, pid=None):
        self.children, self.pid, self.cores = children, pid, 0.0

    def _own(self):
        t = os.times()
        own = t.children_user + t.children_system if self.children else t.user + t.system
        return own + (proc_cpu_s(self.pid) if self.pid else 0.0)

    def __enter__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), busy_cpu_s(), self._own()
        return self

    def __exit__(self, *exc):
        other = busy_cpu_s() - self.busy0 - (self._own() - self.own0)
        self.cores = max(other, 0.0) / (time.perf_counter() - self.t0)


class TimmBench:
    """The timm side, one training step or evaluation batch at a time (as evax_bench_finetune)."""

    def __init__(self, args):
        self.model = Eva(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                         mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True,
                         ref_feat_shape=(14, 14), num_classes=args.classes, global_pool="avg",
                         drop_path_rate=args.drop_path)
        groups = param_groups_lrd(self.model, WEIGHT_DECAY, ["pos_embed", "cls_token"], LAYER_DECAY)
        self.opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
        self.criterion = torch.nn.BCEWithLogitsLoss()
        self.x = torch.randn(args.batch, 3, 224, 224)
        self.y = torch.randint(0, 2, (args.batch, args.classes)).float()
        self.xe = torch.randn(args.eval_batch, 3, 224, 224)
        self.bf16 = args.bf16

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def train_step(self):
        """Seconds: whole step, forward + loss, backward, optimizer step + zero_grad."""
        self.model.train()
        t0 = time.perf_counter()
        for g in self.opt.param_groups:  # lr_sched.adjust_learning_rate (constant here)
            g["lr"] = LR * g["lr_scale"]
        with self.autocast():
            logits = self.model(self.x).float()
        loss = self.criterion(logits, self.y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad()
        t3 = time.perf_counter()
        return {"s": t3 - t0, "forward_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2}

    def eval_batch(self):
        self.model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            with self.autocast():
                torch.sigmoid(self.model(self.xe).float())
            return {"s": time.perf_counter() - t0}


class EvaxServer:
    """An evax benchmark binary's --serve mode (`argv`: the command, --serve included): the evax
    side, one command at a time (bench/segment_step.py uses it too)."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._read()  # {"ready": true, ...}: what the binary says when built
        assert self.ready["ready"]

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.p.args[0]} exited with {self.p.wait()}")
        return json.loads(line)

    def _ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self._read()

    def train_step(self):
        return self._ask("train")

    def eval_batch(self):
        return self._ask("eval")

    def peak_rss_mb(self):
        return self._ask("rss")["peak_rss_mb"]

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.close()
        self.p.wait()


def evax_args(args):
    return ["--batch", str(args.batch), "--threads", str(args.threads), "--iters", str(args.iters),
            "--warmup", str(args.warmup), "--classes", str(args.classes),
            "--drop-path", str(args.drop_path), "--eval-batch", str(args.eval_batch),
            "--eval-iters", str(args.eval_iters), "--eval-warmup", str(args.eval_warmup)] + \
        (["--bf16"] if args.bf16 else [])


def summary(train, rss, evals, eval_batch):
    """Medians of per-step dicts → the evax binary's JSON fields."""
    med = {k: statistics.median(t[k] for t in train) for k in train[0]}
    return {"s_per_step": med["s"], "forward_s": med["forward_s"],
            "backward_s": med["backward_s"], "optimizer_s": med["optimizer_s"],
            "peak_rss_mb": rss,
            "eval_images_per_s": eval_batch / statistics.median(e["s"] for e in evals)
            if evals else 0.0}


def run_sequential(args):
    """timm's warmup + timed steps and evaluation, then the evax binary's, one after the other."""
    with OtherCpu() as timm_other:
        tb = TimmBench(args)
        for _ in range(args.warmup):
            tb.train_step()
        train = [tb.train_step() for _ in range(args.iters)]
        rss = vm_hwm_mb()  # the training part's peak, read before evaluation (as evax)
        for _ in range(args.eval_warmup if args.eval_iters > 0 else 0):
            tb.eval_batch()
        evals = [tb.eval_batch() for _ in range(args.eval_iters)]
        timm = summary(train, rss, evals, args.eval_batch)
    del tb
    gc.collect()  # the timm model and optimizer state are gone before evax starts
    with OtherCpu(children=True) as evax_other:
        out = subprocess.run([args.evax] + evax_args(args), check=True, capture_output=True,
                             text=True)
    evax = json.loads(out.stdout.strip().splitlines()[-1])
    return timm, evax, timm_other.cores, evax_other.cores


def run_interleaved(args):
    """Both sides live at once; warmups first, then timed steps alternating timm/evax (ABBA
    order), so that background load on a shared machine falls on both alike."""
    tb, ev = TimmBench(args), EvaxServer([args.evax, "--serve"] + evax_args(args))
    try:
        with OtherCpu(pid=ev.p.pid) as other:
            for _ in range(args.warmup):
                tb.train_step(), ev.train_step()
            t_train, e_train = [], []
            for i in range(args.iters):
                for side in ((tb, t_train), (ev, e_train))[::1 if i % 2 == 0 else -1]:
                    side[1].append(side[0].train_step())
            t_rss, e_rss = vm_hwm_mb(), ev.peak_rss_mb()
            for _ in range(args.eval_warmup if args.eval_iters > 0 else 0):
                tb.eval_batch(), ev.eval_batch()
            t_eval, e_eval = [], []
            for i in range(args.eval_iters):
                for side in ((tb, t_eval), (ev, e_eval))[::1 if i % 2 == 0 else -1]:
                    side[1].append(side[0].eval_batch())
    finally:
        ev.close()
    return (summary(t_train, t_rss, t_eval, args.eval_batch),
            summary(e_train, e_rss, e_eval, args.eval_batch), other.cores, None)


def self_ms_per_op(trace, steps, by_shape=False):
    """{op name: self milliseconds per step} from a torch.profiler chrome trace: an op's duration
    less that of the ops nested in it on the same thread. `by_shape`: keyed by the name and the
    input shapes (a trace recorded with them) instead."""
    with open(trace) as f:
        ev = json.load(f)
    ev = ev["traceEvents"] if isinstance(ev, dict) else ev
    ev = [e for e in ev if e.get("ph") == "X" and e.get("cat", "cpu_op") == "cpu_op"]
    out, by_tid = {}, {}
    for e in ev:
        by_tid.setdefault(e["tid"], []).append(e)

    def pop(stack):
        _, name, child, dur = stack.pop()
        out[name] = out.get(name, 0.0) + dur - child

    for es in by_tid.values():
        es.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack = []  # [end, name, time of the children, duration]
        for e in es:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= ts:
                pop(stack)
            if stack:
                stack[-1][2] += dur
            name = e["name"]
            if by_shape:
                name += " " + json.dumps(e.get("args", {}).get("Input Dims", []),
                                         separators=(",", ""))
            stack.append([ts + dur, name, 0.0, dur])
        while stack:
            pop(stack)
    return {k: v / 1000.0 / steps for k, v in out.items()}


def run_profile(args):
    os.makedirs(args.profile, exist_ok=True)
    timm_trace, evax_trace = (os.path.join(args.profile, n) for n in ("timm.json", "evax.json"))
    # evax first: run as a child of this process after timm's profiled steps, evax measured 15-35%
    # slower than on its own (its cat and GEMMs), which is not so without the profiler.
    with OtherCpu(children=True) as evax_other:
        r = subprocess.run([args.evax, "--profile", evax_trace] + evax_args(args),
                           capture_output=True, text=True)  # stderr: the profiler's log lines
    if r.returncode != 0:
        raise RuntimeError(f"{args.evax} --profile failed ({r.returncode}):\n{r.stderr}")
    with OtherCpu() as timm_other:
        tb = TimmBench(args)
        for _ in range(args.warmup):
            tb.train_step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(args.iters):
                tb.train_step()
        prof.export_chrome_trace(timm_trace)
    t, e = self_ms_per_op(timm_trace, args.iters), self_ms_per_op(evax_trace, args.iters)
    names = sorted(set(t) | set(e), key=lambda n: -max(t.get(n, 0.0), e.get(n, 0.0)))
    print(f"self ms per step (batch {args.batch}, {args.threads} threads, {args.iters} steps)")
    print(f"{'op':60s} {'timm':>9s} {'evax':>9s}")
    for n in names[:args.profile_top]:
        print(f"{n[:60]:60s} {t.get(n, 0.0):9.1f} {e.get(n, 0.0):9.1f}")
    print(f"{'(all ops)':60s} {sum(t.values()):9.1f} {sum(e.values()):9.1f}")
    print(f"{'(other processes, cores)':60s} {timm_other.cores:9.2f} {evax_other.cores:9.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evax", default="build/bench/evax_bench_finetune")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--eval-iters", type=int, default=5)
    ap.add_argument("--eval-warmup", type=int, default=1)
    ap.add_argument("--classes", type=int, default=14)
    ap.add_argument("--drop-path", type=float, default=0.1)
    ap.add_argument("--bf16", action="store_true",
                    help="both sides under bf16 autocast on the CPU (logits back to float32)")
    ap.add_argument("--interleave", action="store_true",
                    help="alternate timm and evax step by step (a machine with background load)")
    ap.add_argument("--profile", metavar="DIR", help="per-op self time of each side instead")
    ap.add_argument("--profile-top", type=int, default=30, help="ops listed with --profile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.profile:
        return run_profile(args)

    run = run_interleaved if args.interleave else run_sequential
    timm, ev, timm_other, evax_other = run(args)
    res = {"model": "eva_x_small_patch16", "batch": args.batch, "threads": args.threads,
           "eval_batch": args.eval_batch, "torch": torch.__version__, "cores": os.cpu_count(),
           "mode": "interleaved" if args.interleave else "sequential",
           "precision": "bf16 autocast" if args.bf16 else "fp32"}
    if args.interleave:
        res["other_cpu_cores"] = round(timm_other, 2)
    else:
        res.update({"timm_other_cpu_cores": round(timm_other, 2),
                    "evax_other_cpu_cores": round(evax_other, 2)})
    split = ("forward_s", "backward_s", "optimizer_s")
    res.update({"timm_s_per_step": round(timm["s_per_step"], 3),
                "evax_s_per_step": round(ev["s_per_step"], 3),
                "ratio_evax_over_timm": round(timm["s_per_step"] / ev["s_per_step"], 3),
                "timm_split_fwd_bwd_opt_s": [round(timm[k], 3) for k in split],
                "evax_split_fwd_bwd_opt_s": [round(ev[k], 3) for k in split],
                "timm_peak_rss_mb": round(timm["peak_rss_mb"]),
                "evax_peak_rss_mb": round(ev["peak_rss_mb"])})
    if args.eval_iters > 0:
        res.update({"timm_eval_images_per_s": round(timm["eval_images_per_s"], 2),
                    "evax_eval_images_per_s": round(ev["eval_images_per_s"], 2),
                    "eval_ratio_evax_over_timm": round(ev["eval_images_per_s"]
                                                       / timm["eval_images_per_s"], 3)})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
