#!/usr/bin/env python3
"""Training-step benchmark of evax next to timm / plain torch on one device, with MFU; the
benchmark part of tools/gpu_check.sh.

  gpu_bench.py bench --evax-bench build/bench/evax_bench_gpu_step --device cuda --results R.jsonl
      For each workload (EVA-X-B MIM pretraining with the ViT-B teacher at 224, EVA-X-S finetuning
      at 224, UperNet-EVA-X-S at 512; bf16 autocast): the largest batch up to 256 that fits evax
      (halving on out-of-memory), evax's step (bench/gpu_step_bench.cpp) and the same step in
      Python at that batch, each in its own process under a hard timeout. Appends one JSON line
      per workload to R.jsonl: images/s of both, their ratio, the model FLOPs per image (counted
      by torch.utils.flop_counter on the Python step: forward + backward matmuls, convolutions
      and attention) and MFU against the device's bf16 dense peak. --tiny: small models at 64 px,
      batch 2, one step (gpu_check.sh --dry-run on a CPU).
  gpu_bench.py peer --task T --device D --batch B ...
      One Python step benchmark (used by `bench`), one JSON line; exit 5 on out-of-memory.
  gpu_bench.py table --results R.jsonl --json OUT.json
      Prints the summary table of R.jsonl (test rows and benchmark rows) and writes it as JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# bf16 dense tensor-core peaks in TFLOP/s, from NVIDIA's product data sheets (which list the
# "with sparsity" figure; dense is half of it): H100 SXM5 and H200 SXM 989.4, H100 NVL and H200
# NVL 835, H100 PCIe 756, A100 312, L40S 362.05, L4 121, A10 125, B200 2250. The first substring
# match of the device name wins, so the specific names come first.
PEAK_BF16_TFLOPS = [
    ("H200 NVL", 835.0), ("H200", 989.4),
    ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0), ("L40S", 362.05), ("L4", 121.0), ("A10", 125.0),
]

# (task, evax model, size) of the real run; --tiny replaces them for a CPU dry run.
WORKLOADS = [("pretrain", "eva_x_base_patch16", 224), ("finetune", "eva_x_small_patch16", 224),
             ("segment", "upernet_eva_x_small_patch16", 512)]
TINY = {"pretrain": ("eva_x_tiny_patch16", 64), "finetune": ("eva_x_tiny_patch16", 64),
        "segment": ("upernet_eva_x_tiny_patch16", 64)}
TEACHER = {"real": "mgca_vit_base_patch16", "tiny": "vit_tiny_patch16_224"}
OOM_EXIT = 5


def peak_tflops(name):
    for key, tf in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tf
    return None


# --- the Python step ------------------------------------------------------------------------------

def build_peer(task, model, size, batch, device, tiny):
    """The model(s), optimizer and a step closure of one workload in timm / plain torch."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    from evax_reference_common import eva_x, vit

    torch.manual_seed(0)
    fused = device.startswith("cuda")  # torch's fused AdamW kernel, as evax uses on CUDA
    if task == "pretrain":
        t_dim, t_heads = (192, 3) if tiny else (768, 12)
        teacher = vit(size, t_dim, 12, t_heads).to(device).eval().requires_grad_(False)
        student = eva_x(model, size, 0).to(device)
        d = student.embed_dim
        extra = nn.ModuleDict({"norm": nn.LayerNorm(d, eps=1e-6), "lm_head": nn.Linear(d, t_dim)})
        extra.to(device)
        mask_token = nn.Parameter(torch.zeros(1, 1, d, device=device))
        params = list(student.parameters()) + [mask_token] + list(extra.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05,
                                fused=fused)
        n = (size // 16) ** 2
        x = torch.randn(batch, 3, size, size, device=device)
        xt = torch.randn(batch, 3, size, size, device=device)
        mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
        mask[:, torch.randperm(n)[: max(1, round(0.3 * n))]] = True

        def loss_fn():
            with torch.no_grad():
                tgt = teacher.forward_features(xt)[:, 1:]
            t = student.patch_embed(x)
            t = t * 0.1 + t.detach() * 0.9  # stop_grad_conv1
            w = mask.unsqueeze(-1).type_as(t)
            t = t * (1 - w) + mask_token.type_as(t) * w
            t, rope = student._pos_embed(t)
            for blk in student.blocks:
                t = blk(t, rope=rope)
            pred = extra["lm_head"](extra["norm"](t)[:, 1:])
            return -F.cosine_similarity(pred[mask].float(), tgt[mask].float(), dim=-1).mean()
    elif task == "finetune":
        net = eva_x(model, size, 14, global_pool="avg", drop_path_rate=0.1).to(device)
        params = list(net.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05,
                                fused=fused)
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 2, (batch, 14), device=device).float()

        def loss_fn():
            return F.binary_cross_entropy_with_logits(net(x).float(), y)
    else:
        from upernet_reference import Segmentor
        arch = model.replace("upernet_", "")
        c = dict(arch=arch, depth=12, img=size, out_indices=[11], last_only=True, aux=False,
                 num_classes=2, out_channels=1, channels=256)
        net = Segmentor(c).to(device)
        net.eva.norm = nn.Identity()
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=6e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05,
                                fused=fused)
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 2, (batch, size, size), device=device).float()

        def loss_fn():
            logits = net(x)[0]
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), y)

    return params, opt, loss_fn


def run_peer(args):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    dev = args.device
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tiny = args.tiny
    dtype_ctx = (lambda: torch.autocast(dev.split(":")[0], dtype=torch.bfloat16)) if args.bf16 else \
        (lambda: torch.autocast(dev.split(":")[0], enabled=False))

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    try:
        params, opt, loss_fn = build_peer(args.task, args.model, args.size, args.batch, dev, tiny)

        def step():
            with dtype_ctx():
                loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 3.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(args.warmup):
            step()
        sync()
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        # Model FLOPs of one step (forward + backward), per image.
        counter = FlopCounterMode(display=False)
        with counter:
            with dtype_ctx():
                loss = loss_fn()
            loss.backward()
        opt.zero_grad(set_to_none=True)
        flops = counter.get_total_flops() / args.batch
        peak_mem = torch.cuda.max_memory_allocated() / 1e9 if dev.startswith("cuda") else 0.0
    except torch.OutOfMemoryError:
        print(json.dumps({"impl": "python", "oom": True, "batch": args.batch}), flush=True)
        sys.exit(OOM_EXIT)
    times.sort()
    s = times[len(times) // 2]
    print(json.dumps({"impl": "python", "task": args.task, "batch": args.batch, "step_s": s,
                      "images_per_s": args.batch / s, "flops_per_image": flops,
                      "peak_mem_gb": peak_mem, "torch": torch.__version__}), flush=True)


# --- the driver -----------------------------------------------------------------------------------

def run_json(cmd, timeout):
    """(exit code, last JSON line or None, stderr tail); a timeout is exit code 124."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return 124, None, err[-2000:]
    last = None
    for line in p.stdout.strip().splitlines():
        if line.startswith("{"):
            last = json.loads(line)
    return p.returncode, last, p.stderr[-2000:]


def bench(args):
    import torch
    dev = args.device
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
    peak = peak_tflops(name) if dev.startswith("cuda") else None
    deadline = time.monotonic() + args.budget_s
    for task, model, size in WORKLOADS:
        if args.tiny:
            model, size = TINY[task]
        teacher = TEACHER["tiny" if args.tiny else "real"]
        row = {"kind": "bench", "name": f"{task} {model} {size}px bf16", "task": task, "model": model,
               "size": size, "device": name, "peak_bf16_tflops": peak}
        iters, warmup = (1, 0) if args.tiny else (args.iters, args.warmup)
        batches = [2] if args.tiny else [b for b in (256, 128, 64, 32, 16, 8, 4, 2, 1)
                                         if b <= args.max_batch]
        common = ["--iters", str(iters), "--warmup", str(warmup), "--size", str(size)]
        ev = None
        for b in batches:
            left = deadline - time.monotonic()
            if left < 20:
                row.update(status="failed", error="benchmark time budget spent")
                break
            cmd = [args.evax_bench, "--task", task, "--model", model, "--device", dev, "--bf16",
                   "--batch", str(b), "--teacher", teacher] + common
            if args.threads > 0:
                cmd += ["--threads", str(args.threads)]
            rc, out, err = run_json(cmd, min(args.timeout, left))
            if rc == OOM_EXIT:
                continue
            if rc != 0 or out is None:
                row.update(status="failed", error=f"evax exit {rc}: {err.strip()[-300:]}")
                break
            ev = out
            break
        if ev is None:
            row.setdefault("status", "failed")
            row.setdefault("error", "out of memory at every batch")
            append(args.results, row)
            continue
        b = ev["batch"]
        row.update(batch=b, evax_images_per_s=ev["images_per_s"], evax_peak_mem_gb=ev["peak_mem_gb"])
        py = None
        while b >= 1:
            left = deadline - time.monotonic()
            if left < 20:
                break
            cmd = [sys.executable, os.path.abspath(__file__), "peer", "--task", task, "--model",
                   model, "--device", dev, "--bf16", "--batch", str(b), "--threads",
                   str(args.threads)] + common + (["--tiny"] if args.tiny else [])
            rc, out, err = run_json(cmd, min(args.timeout, left))
            if rc == OOM_EXIT:
                b //= 2
                continue
            if rc != 0 or out is None:
                row.update(status="failed", error=f"python exit {rc}: {err.strip()[-300:]}")
            py = out
            break
        if py is not None:
            row.update(python_batch=py["batch"], python_images_per_s=py["images_per_s"],
                       python_peak_mem_gb=py["peak_mem_gb"], flops_per_image=py["flops_per_image"],
                       ratio_evax_over_python=ev["images_per_s"] / py["images_per_s"])
            if peak:
                f = py["flops_per_image"]
                row["evax_mfu"] = f * ev["images_per_s"] / (peak * 1e12)
                row["python_mfu"] = f * py["images_per_s"] / (peak * 1e12)
            row.setdefault("status", "passed")
        else:
            row.setdefault("status", "failed")
            row.setdefault("error", "no Python result")
        append(args.results, row)
        print(json.dumps(row), flush=True)


def append(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def table(args):
    rows = []
    if os.path.exists(args.results):
        with open(args.results) as f:
            rows = [json.loads(l) for l in f if l.strip()]
    def cell(v, width, spec=".1f", pct=False):
        return ("-" if v is None else format(100 * v if pct else v, spec) + ("%" if pct else "")).rjust(width)

    lines = [f"{'check':<66} {'result':<7} {'evax img/s':>10} {'MFU':>6} {'py img/s':>9} "
             f"{'py MFU':>6} {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r['name'][:66]:<66} {r['status']:<7} {cell(r.get('evax_images_per_s'), 10)} "
                     f"{cell(r.get('evax_mfu'), 6, pct=True)} {cell(r.get('python_images_per_s'), 9)} "
                     f"{cell(r.get('python_mfu'), 6, pct=True)} "
                     f"{cell(r.get('ratio_evax_over_python'), 6, '.2f')}")
    failed = [r for r in rows if r["status"] == "failed"]
    summary = {"rows": rows, "passed": sum(r["status"] == "passed" for r in rows),
               "failed": len(failed), "skipped": sum(r["status"] == "skipped" for r in rows)}
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    for r in rows:
        if r["status"] != "passed" and r.get("error"):
            print(f"{r['status'].upper()} {r['name']}: {r['error']}")
    print("\n".join(lines))
    print(f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped"
          + (f"; JSON: {args.json}" if args.json else ""))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--evax-bench", required=True)
    b.add_argument("--device", default="cuda")
    b.add_argument("--results", required=True)
    b.add_argument("--tiny", action="store_true")
    b.add_argument("--max-batch", type=int, default=256)
    b.add_argument("--iters", type=int, default=5)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--timeout", type=float, default=150, help="seconds per process")
    b.add_argument("--budget-s", type=float, default=420, help="seconds for all workloads")
    p = sub.add_parser("peer")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--tiny", action="store_true")
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    t.add_argument("--json")
    args = ap.parse_args()
    if args.cmd == "bench":
        bench(args)
    elif args.cmd == "peer":
        run_peer(args)
    else:
        sys.exit(table(args))


if __name__ == "__main__":
    main()
