"""Figures for docs/results.md, drawn from the measured results in bench/results/*.json and nothing else:
each figure names the JSON files it reads, and a number that is not in them is never drawn. Matplotlib's
Agg canvas through Figure objects (no pyplot state), so it runs headless.

    .venv/bin/python bench/plot_results.py            # bench/results/*.json → docs/*.png
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
METRICS_1_19 = {"hr@1": "Hit@1", "ndcg@10": "NDCG@10", "hr@10": "HR@10"}
BENCH_ROWS = {
    "popularity": "popularity",
    "sasrec": "SASRec",
    "allmrec (likelihood)": "A-LLMRec, likelihood (sum)",
    "allmrec (likelihood / token)": "A-LLMRec, likelihood / token",
    "allmrec (generation)": "A-LLMRec, generation",
}
# one colour per model across panels (the genre methods take matplotlib's cycle)
COLORS = {
    "popularity": "C0",
    "SASRec": "C1",
    "A-LLMRec, likelihood": "C2",
    "A-LLMRec, likelihood (sum)": "C2",
    "A-LLMRec, likelihood / token": "C3",
    "A-LLMRec, generation": "C4",
    "LLM-SRec": "C5",
}
GENRE_METRICS = {"hr@1": "HR@1", "hr@3": "HR@3", "ndcg@3": "NDCG@3", "ndcg": "NDCG"}
GENRE_METHODS = {
    "history_frequency": "most frequent genres in history",
    "genre_prior": "global genre prior",
    "llm_titles_only": "frozen LLM, titles only",
    "allmrec_genre": "A-LLMRec genre prompt (learned)",
}


def load(results: Path, name: str) -> dict[str, Any]:
    return json.loads((results / name).read_text())


def bar_groups(ax: Axes, rows: dict[str, dict[str, float]], metrics: dict[str, str], title: str) -> None:
    """One group of bars per metric, one bar per row; a metric a row lacks is left out, not drawn as 0."""
    width = 0.8 / len(rows)
    for i, (label, values) in enumerate(rows.items()):
        heights = [values.get(key, math.nan) for key in metrics]
        xs = [m + i * width for m in range(len(metrics))]
        bars = ax.bar(xs, heights, width, label=label, color=COLORS.get(label))
        ax.bar_label(bars, labels=["" if math.isnan(h) else f"{h:.2f}" for h in heights], fontsize=6)
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], list(metrics.values()))
    ax.set_ylim(0, 1.08)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="upper left")


def model_comparison(results: Path) -> Figure:
    """The demo's SASRec and served A-LLMRec and the A-LLMRec bench, on the shared 1+19 test candidates."""
    demo = load(results, "demo_eval_ml100k.json")["models"]
    bench48, bench240 = load(results, "allmrec.json"), load(results, "allmrec_240users.json")
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = fig.subplots(2, 2).flat
    names = {"sasrec@1+19": "SASRec", "allmrec@1+19": "A-LLMRec, likelihood"}
    bar_groups(
        next(axes),
        {label: demo[k] for k, label in names.items()},
        METRICS_1_19,
        f"make demo's SASRec and A-LLMRec as served, {demo['sasrec@1+19']['n_users']} test users",
    )
    for data, part, title in (
        (bench48, "warm", "A-LLMRec bench, warm: stage 2 on 48 users"),
        (bench240, "warm", "A-LLMRec bench, warm: stage 2 on 240 users"),
        (bench48, "cold", "A-LLMRec bench, cold targets (20% of items held out)"),
    ):
        rows = {label: data[part][key] for key, label in BENCH_ROWS.items() if key in data[part]}
        n_users = next(iter(rows.values()))["n_users"]
        bar_groups(next(axes), rows, METRICS_1_19, f"{title}, {n_users} test users")
    fig.suptitle("Ranking the stored 1+19 candidates, ml-100k, SmolLM2-135M on CPU (generation: Hit@1 only)")
    return fig


def sasrec_budget(results: Path) -> Figure:
    """SASRec against the paper, and what an hour instead of 15 min of CPU buys on ml-1m."""
    runs = load(results, "sasrec.json")["results"] + load(results, "sasrec_ml1m_60min.json")["results"]
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    bars_ax, time_ax = fig.subplots(1, 2)
    labels = [f"{r['dataset']}\n{r['train_s'] / 60:.0f} min, {r['epochs_run']} epochs" for r in runs]
    for i, (key, name) in enumerate((("ndcg@10", "NDCG@10"), ("hr@10", "HR@10"))):
        for j, (prefix, who) in enumerate((("", "ours"), ("paper_", "paper"))):
            heights = [r[prefix + key] for r in runs]
            bars = bars_ax.bar(
                [x + (2 * i + j) * 0.2 for x in range(len(runs))],
                heights,
                0.2,
                label=f"{name}, {who}",
                alpha=1.0 if j == 0 else 0.5,
            )
            bars_ax.bar_label(bars, fmt="%.3f", fontsize=6)
    bars_ax.set_xticks([x + 0.3 for x in range(len(runs))], labels, fontsize=8)
    bars_ax.set_ylim(0, 1.0)
    bars_ax.set_title("SASRec vs the paper (test, 1+99)", fontsize=9)
    bars_ax.legend(fontsize=7, loc="upper right", ncols=2)
    ml1m = sorted((r for r in runs if r["dataset"] == "ml-1m"), key=lambda r: r["train_s"])
    minutes = [r["train_s"] / 60 for r in ml1m]
    for key, name in (("ndcg@10", "NDCG@10"), ("hr@10", "HR@10")):
        line = time_ax.plot(minutes, [r[key] for r in ml1m], marker="o", label=name)[0]
        time_ax.axhline(
            ml1m[0][f"paper_{key}"], color=line.get_color(), linestyle="--", label=f"{name}, paper"
        )
    time_ax.axhline(ml1m[0]["popularity_ndcg@10"], color="grey", linestyle=":", label="NDCG@10, popularity")
    for r, x in zip(ml1m, minutes, strict=True):
        time_ax.annotate(
            f"{r['epochs_run']} epochs",
            (x, r["ndcg@10"]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=7,
        )
    time_ax.set_xlabel("training time, minutes (1 thread)")
    time_ax.set_ylim(0, 1.0)
    time_ax.set_title("ml-1m: test metrics by training budget (two runs)", fontsize=9)
    time_ax.legend(fontsize=7, loc="lower right")
    return fig


def genre_methods(results: Path) -> Figure:
    """Favourite-genre prediction per method and dataset; the learned prompt with more training users."""
    runs = load(results, "genre.json")["results"]
    more = load(results, "genre_ml100k_train450.json")["results"][0]
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, run in zip(axes[:2], runs, strict=True):
        rows = {GENRE_METHODS[k]: run["methods"][k] for k in GENRE_METHODS}
        bar_groups(
            ax,
            rows,
            GENRE_METRICS,
            f"{run['dataset']}: {run['n_test_users']} test users, "
            f"prompt trained on {run['train']['users']} users",
        )
    first = next(r for r in runs if r["dataset"] == more["dataset"])
    rows = {
        f"learned prompt, {r['train']['users']} training users": r["methods"]["allmrec_genre"]
        for r in (first, more)
    }
    rows[GENRE_METHODS["history_frequency"]] = more["methods"]["history_frequency"]
    bar_groups(
        axes[2],
        rows,
        GENRE_METRICS,
        f"{more['dataset']}: more training users, same {more['n_test_users']} test users",
    )
    fig.suptitle("Favourite-genre prediction (genres of the held-out next item), SmolLM2-135M on CPU")
    return fig


def serve_latency(results: Path) -> Figure:
    """Latency and throughput by concurrency, warm (cache hit) and cold (LLM), for two models."""
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for col, name in enumerate(("serve_bench_ml100k.json", "serve_bench_ml100k_allmrec.json")):
        bench = load(results, name)
        model = bench["args"]["model"]
        model = "model unset (the default, LLM-SRec)" if model == "None" else f"model: {model}"
        lat_ax, rps_ax = axes[0][col], axes[1][col]
        for kind in ("warm", "cold"):
            rows = [r for r in bench["rows"] if r["kind"] == kind]
            conc = [r["concurrency"] for r in rows]
            p50 = lat_ax.plot(conc, [r["p50_ms"] for r in rows], marker="o", label=f"{kind}, p50")[0]
            lat_ax.plot(
                conc,
                [r["p95_ms"] for r in rows],
                marker="o",
                linestyle="--",
                color=p50.get_color(),
                label=f"{kind}, p95",
            )
            rps_ax.plot(conc, [r["req_per_s"] for r in rows], marker="o", label=kind)
        if "redis_kill" in bench:
            kill = bench["redis_kill"]
            lat_ax.plot(
                [kill["concurrency"]],
                [kill["p50_ms"]],
                marker="x",
                linestyle="",
                color="black",
                markersize=9,
                label="cold p50, Redis killed mid-phase",
            )
        lat_ax.set_yscale("log")
        lat_ax.set_ylabel("ms (log scale)")
        lat_ax.set_title(f"latency, {model}", fontsize=9)
        rps_ax.set_yscale("log")
        rps_ax.set_ylabel("requests/s (log scale)")
        rps_ax.set_title(f"throughput, {model}", fontsize=9)
        for ax in (lat_ax, rps_ax):
            ax.set_xscale("log", base=2)
            levels = sorted({r["concurrency"] for r in bench["rows"]})
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.set_xlabel("concurrent clients")
            ax.legend(fontsize=7)
    fig.suptitle("POST /v1/recommend on the demo bundle (ml-100k, SmolLM2-135M float32), 2-core CPU")
    return fig


def outage(results: Path) -> Figure:
    """Throughput before, during and after a Redis outage; a cold burst with and without load shedding."""
    bench = load(results, "outage_bench_ml100k.json")
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    rps_ax, burst_ax = fig.subplots(1, 2)
    groups = [
        (f"c={c}", [r for r in bench["outage"] if r["concurrency"] == c])
        for c in sorted({r["concurrency"] for r in bench["outage"]})
    ]
    groups.append(
        (f"c={bench['outage_without_l1'][0]['concurrency']},\nno L1, no shedding", bench["outage_without_l1"])
    )
    for i, phase in enumerate(("before", "during", "after")):
        heights = [next(r["req_per_s"] for r in rows if r["phase"] == phase) for _, rows in groups]
        bars = rps_ax.bar([g + (i - 1) * 0.27 for g in range(len(groups))], heights, 0.27, label=phase)
        rps_ax.bar_label(bars, fmt="%.1f", fontsize=6)
    rps_ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
    rps_ax.set_ylabel("requests/s")
    rps_ax.set_title("warm workload: Redis killed after 'before', restarted after 'during'", fontsize=9)
    rps_ax.legend(fontsize=7, title="phase", title_fontsize=7)
    bursts = {f"shedding {s}": bench[f"cold_burst_shedding_{s}"] for s in ("on", "off")}
    for i, key in enumerate(("p50_ms", "p99_ms", "max_ms")):
        bars = burst_ax.bar(
            [g + (i - 1) * 0.27 for g in range(len(bursts))],
            [b[key] for b in bursts.values()],
            0.27,
            label=key.removesuffix("_ms"),
        )
        burst_ax.bar_label(bars, fmt="%.0f", fontsize=6)
    burst_ax.set_xticks(
        range(len(bursts)),
        [f"{name}\n{b['requests']} requests, {b['degraded']} degraded" for name, b in bursts.items()],
        fontsize=8,
    )
    burst_ax.set_yscale("log")
    burst_ax.set_ylabel("ms (log scale)")
    burst_ax.set_title(f"cold burst at concurrency {bursts['shedding on']['concurrency']}", fontsize=9)
    burst_ax.legend(fontsize=7)
    return fig


FIGURES: dict[str, Callable[[Path], Figure]] = {
    "results_models.png": model_comparison,
    "results_sasrec.png": sasrec_budget,
    "results_genre.png": genre_methods,
    "results_serve_latency.png": serve_latency,
    "results_outage.png": outage,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="bench JSON files")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        draw(args.results).savefig(args.out / name, format="png", dpi=100)
        print(args.out / name)


if __name__ == "__main__":
    main()
