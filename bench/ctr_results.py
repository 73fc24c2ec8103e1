#!/usr/bin/python3
"""Update modes and gradient compression on real training: runs
`ctr_demo --workers` over the same stream for every codec x top-k x error
feedback setting at two link speeds, and for every update mode, each
configuration REPS times (rounds interleaved, medians), then prints the
tables docs/PERFORMANCE.md quotes and writes docs/ctr_codecs.png.

  bench/ctr_results.py BUILD_DIR [--examples N] [--reps R] [--out PNG]

Codec runs use 2 workers, one per core of the 2-core machine: with more
workers than cores a worker sleeping out its link time frees a core for
another, which hides the link. Mode runs use 4 workers. The embedding
dimension is 32.
"""
import argparse
import os
import statistics
import subprocess
import sys

CODECS = [  # (label, ctr_demo flags)
    ("fp32", ["--codec", "fp32"]),
    ("fp16", ["--codec", "fp16"]),
    ("bf16", ["--codec", "bf16"]),
    ("int8", ["--codec", "int8"]),
    ("top-k 10%", ["--codec", "fp32", "--topk", "0.1"]),
    ("top-k 5%", ["--codec", "fp32", "--topk", "0.05"]),
    ("int8 + top-k 10%", ["--codec", "int8", "--topk", "0.1"]),
    ("int8 + top-k 5%", ["--codec", "int8", "--topk", "0.05"]),
]
MODES = [
    ("async", ["--update", "async"]),
    ("sync", ["--update", "sync"]),
    ("staleness 1", ["--update", "async", "--staleness", "1"]),
    ("staleness 4", ["--update", "async", "--staleness", "4"]),
    ("staleness 16", ["--update", "async", "--staleness", "16"]),
    ("hybrid", ["--update", "hybrid"]),
]
LINKS = [1, 10]  # Gbit/s


def run(demo, flags, examples):
    out = subprocess.run([demo, "--examples", str(examples), "--dim", "32"] + flags,
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return {k: v for k, v in (f.split("=") for f in line.split()[1:])}


def medians(results):
    keys = ["auc", "logloss", "examples_per_s", "bytes_ratio", "stale_dropped"]
    return {k: statistics.median(float(r[k]) for r in results) for k in keys}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--examples", type=int, default=1000000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs",
                                                  "ctr_codecs.png"))
    a = ap.parse_args()
    demo = os.path.join(a.build, "examples", "ctr_demo")
    jobs = []  # (table, label, flags)
    for label, flags in CODECS:
        for ef in (True, False):
            if label == "fp32" and not ef:
                continue  # fp32 without top-k leaves no residual
            for link in LINKS:
                jobs.append(("codec", (label, ef, link),
                             ["--workers", "2", "--link", str(link)] + flags +
                             ([] if ef else ["--no-ef"])))
    for label, flags in MODES:
        jobs.append(("mode", label, ["--workers", "4"] + flags))
    got = {}
    for rep in range(a.reps):  # rounds: every configuration once per round
        order = jobs[rep % 2::2] + jobs[1 - rep % 2::2]
        for table, key, flags in order:
            got.setdefault((table, key), []).append(run(demo, flags, a.examples))
            print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    med = {k: medians(v) for k, v in got.items()}

    base = {link: med[("codec", ("fp32", True, link))] for link in LINKS}
    print(f"Codecs: ctr_demo --workers 2 --dim 32 --examples {a.examples}, medians of {a.reps}")
    print("| codec | error feedback | bytes vs fp32 | AUC - fp32 | log-loss - fp32 | "
          "examples/s at 1 Gbit/s | at 10 Gbit/s |")
    print("|---|---|---|---|---|---|---|")
    for label, _ in CODECS:
        for ef in (True, False):
            if ("codec", (label, ef, 1)) not in med:
                continue
            m1, m10 = med[("codec", (label, ef, 1))], med[("codec", (label, ef, 10))]
            print(f"| {label} | {'on' if ef else 'off'} | {m1['bytes_ratio']:.3f} "
                  f"({1 / m1['bytes_ratio']:.1f}x fewer) | {m1['auc'] - base[1]['auc']:+.4f} | "
                  f"{m1['logloss'] - base[1]['logloss']:+.4f} | "
                  f"{m1['examples_per_s'] / 1e3:.0f}k ({m1['examples_per_s'] / base[1]['examples_per_s']:.2f}x) | "
                  f"{m10['examples_per_s'] / 1e3:.0f}k ({m10['examples_per_s'] / base[10]['examples_per_s']:.2f}x) |")
    print()
    print(f"Modes: ctr_demo --workers 4 --dim 32 --examples {a.examples}, fp32, no link, "
          f"medians of {a.reps}")
    print("| update | AUC | log-loss | examples/s | stale rows dropped |")
    print("|---|---|---|---|---|")
    for label, _ in MODES:
        m = med[("mode", label)]
        print(f"| {label} | {m['auc']:.4f} | {m['logloss']:.4f} | {m['examples_per_s'] / 1e3:.0f}k | "
              f"{m['stale_dropped']:.0f} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    labels = [l for l, _ in CODECS]
    x = range(len(labels))
    for ef, style in ((True, "o-"), (False, "x--")):
        rows = [med.get(("codec", (l, ef, 1))) for l in labels]
        xs = [i for i, r in zip(x, rows) if r]
        ax[0].plot(xs, [r["bytes_ratio"] for r in rows if r], style,
                   label=f"error feedback {'on' if ef else 'off'}")
        ax[1].plot(xs, [r["auc"] - base[1]["auc"] for r in rows if r], style,
                   label=f"error feedback {'on' if ef else 'off'}")
        for link, color in ((1, "tab:red"), (10, "tab:blue")):
            rl = [med.get(("codec", (l, ef, link))) for l in labels]
            ax[2].plot(xs, [r["examples_per_s"] / 1e3 for r in rl if r], style, color=color,
                       label=f"{link} Gbit/s, EF {'on' if ef else 'off'}")
    ax[0].set_yscale("log")
    ax[0].set_title("gradient bytes vs fp32")
    ax[1].set_title("held-out AUC minus fp32's")
    ax[1].axhline(-0.001, color="grey", linestyle=":")
    ax[2].set_title("examples/s (thousands), 2 workers")
    for axis in ax:
        axis.set_xticks(list(x))
        axis.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"\nplot: {os.path.normpath(a.out)}")


if __name__ == "__main__":
    main()
