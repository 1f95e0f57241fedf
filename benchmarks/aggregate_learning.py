"""Aggregate the learning benchmark (benchmarks/learning.py): IQM over seeds with
bootstrap 95% confidence intervals, a table (markdown + CSV) and learning curves.

    python benchmarks/aggregate_learning.py                       # CPU suite
    python benchmarks/aggregate_learning.py --results benchmarks/results/learning_full --name learning_full
    python benchmarks/aggregate_learning.py --results benchmarks/results/learning_variants --name learning_variants

Works on partial results (whatever cells have finished). The IQM follows rliable
(``scipy.stats.trim_mean(x, 0.25)``: with fewer than 4 seeds nothing is trimmed and it
is the mean). The CI is a percentile bootstrap over seeds, resampled within each env
(rliable's stratified bootstrap with one task per stratum).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from learning import PROTOCOLS

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMPLS = ("crossq_trl", "sb3_contrib")
LABELS = {
    "crossq_trl": "crossq_trl (ours)",
    "sb3_contrib": "sb3-contrib",
    "crossq_trl_crossq_wn": "crossq_trl CrossQ + WN",
    "crossq_trl_xqc": "crossq_trl XQC",
}


def label(impl: str) -> str:
    """``impl`` or ``impl@utdN`` (a cell at N gradient steps per env step) as the tables and plots name it."""
    name, _, utd = impl.partition("@")
    return LABELS.get(name, name) + (f", UTD {utd.removeprefix('utd')}" if utd else "")


def iqm(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean along ``axis``: mean of what is left after cutting
    ``int(0.25 * n)`` scores from each end (rliable / scipy ``trim_mean`` convention)."""
    scores = np.sort(np.asarray(scores, dtype=float), axis=axis)
    n = scores.shape[axis]
    cut = int(0.25 * n)
    return np.take(scores, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def bootstrap_ci(
    scores: np.ndarray, statistic=iqm, reps: int = 5000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of ``statistic`` over the runs (axis 0) of ``scores``
    (``[runs]`` or ``[runs, points]``), runs resampled with replacement."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, scores.shape[0], size=(reps, scores.shape[0]))
    stats = statistic(scores[idx], axis=1)  # [reps, ...]
    alpha = (1.0 - confidence) / 2
    return np.quantile(stats, alpha, axis=0), np.quantile(stats, 1 - alpha, axis=0)


def difference_ci(
    ours: np.ndarray, theirs: np.ndarray, reps: int = 5000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """IQM(ours) - IQM(theirs) and its percentile bootstrap CI, each group's runs resampled on their own."""
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    rng = np.random.default_rng(seed)
    resampled = [iqm(runs[rng.integers(0, len(runs), size=(reps, len(runs)))], axis=1) for runs in (ours, theirs)]
    differences = resampled[0] - resampled[1]
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(differences, [alpha, 1 - alpha])
    return float(iqm(ours) - iqm(theirs)), float(low), float(high)


def load_cells(results: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        utd = record.get("utd", 1)
        cells[(record["env_id"], record["impl"] + (f"@utd{utd}" if utd != 1 else ""))].append(record)
    return cells


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else math.nan


def steady_steps_per_s(record: dict[str, Any]) -> float | None:
    """Env steps/s between the first evaluation after learning_starts (the first updates,
    and crossq_trl's compilation, are behind it) and the end of training."""
    curve = record["curve"]
    points = [
        (steps, t)
        for steps, t in zip(curve["steps"], curve["train_time_s"], strict=True)
        if steps > record["config"]["learning_starts"]
    ]
    if len(points) < 2 or points[-1][1] <= points[0][1]:
        return None
    return (points[-1][0] - points[0][0]) / (points[-1][1] - points[0][1])


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    finals = np.array([r["final_return"] for r in records])
    low, high = bootstrap_ci(finals)
    auc = np.array([np.mean(r["curve"]["mean_return"]) for r in records])
    auc_low, auc_high = bootstrap_ci(auc)
    first = records[0]
    return {
        "n_seeds": len(records),
        "seeds": " ".join(str(r["seed"]) for r in sorted(records, key=lambda r: r["seed"])),
        "total_steps": first["config"]["total_steps"],
        "learning_starts": first["config"]["learning_starts"],
        "policy_delay": first["config"]["policy_delay"],
        "iqm_final_return": float(iqm(finals)),
        "ci_low": float(low),
        "ci_high": float(high),
        "iqm_mean_eval_return": float(iqm(auc)),
        "mean_eval_ci_low": float(auc_low),
        "mean_eval_ci_high": float(auc_high),
        "train_time_s": _mean(r["train_time_s"] for r in records),
        "wall_clock_s": _mean(r["wall_clock_s"] for r in records),
        "env_steps_per_s": _mean(r["env_steps_per_s"] for r in records),
        "env_steps_per_s_after_learning_starts": _mean(r["env_steps_per_s_after_learning_starts"] for r in records),
        "env_steps_per_s_steady": _mean(steady_steps_per_s(r) for r in records),
        "alpha_final": _mean(r["alpha_final"] for r in records),
        "n_eval_episodes": first["config"]["n_eval_episodes"],
    }


def _order(impl: str) -> tuple[int, str]:
    """crossq_trl and sb3-contrib first (the colors of the earlier plots), then the variants."""
    name = impl.partition("@")[0]
    return (list(LABELS).index(name) if name in LABELS else len(LABELS), impl)


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs and not math.isnan(theirs) else math.nan


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def write_tables(summary: dict[tuple[str, str], dict[str, Any]], envs: list[str], out: Path, name: str) -> None:
    rows = []
    for env_id in envs:
        ours, theirs = summary.get((env_id, "crossq_trl")), summary.get((env_id, "sb3_contrib"))
        for impl in sorted({impl for env, impl in summary if env == env_id}, key=_order):
            stats = summary[(env_id, impl)]
            row = {"env": env_id, "impl": impl, **stats}
            if ours and theirs and impl in IMPLS:
                row["speed_ratio_ours_over_sb3"] = _ratio(ours["env_steps_per_s"], theirs["env_steps_per_s"])
                for key in ("env_steps_per_s_after_learning_starts", "env_steps_per_s_steady"):
                    row[f"speed_ratio_{key.removeprefix('env_steps_per_s_')}"] = _ratio(ours[key], theirs[key])
            rows.append(row)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with (out / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    lines = [
        "| env | impl | seeds | IQM final return [95% CI] | IQM mean eval return [95% CI] | "
        "train time (s) | env steps/s | after learning_starts | steady | speed ratio (overall / after / steady) "
        "| alpha |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "-"
        if "speed_ratio_ours_over_sb3" in row:
            ratio = " / ".join(
                f"{row[key]:.2f}"
                for key in ("speed_ratio_ours_over_sb3", "speed_ratio_after_learning_starts", "speed_ratio_steady")
            )
        lines.append(
            f"| {row['env']} | {label(row['impl'])} | {row['n_seeds']} | "
            f"{_fmt(row['iqm_final_return'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}] | "
            f"{_fmt(row['iqm_mean_eval_return'])} [{_fmt(row['mean_eval_ci_low'])}, "
            f"{_fmt(row['mean_eval_ci_high'])}] | {_fmt(row['train_time_s'])} | "
            f"{_fmt(row['env_steps_per_s'], 1)} | {_fmt(row['env_steps_per_s_after_learning_starts'], 1)} | "
            f"{_fmt(row['env_steps_per_s_steady'], 1)} | "
            f"{ratio} | {row['alpha_final']:.3g} |"
        )
    episodes = sorted({row["n_eval_episodes"] for row in rows})
    notes = [
        "",
        "IQM over seeds (rliable convention: with fewer than 4 seeds, the mean); 95% CI: percentile "
        f"bootstrap over seeds (5000 resamples). Final return: mean of {'/'.join(map(str, episodes))} "
        "deterministic episodes after training. Mean eval return: the mean of the evaluation curve (area "
        "under the curve / steps), a per-step sample-efficiency summary. Train time excludes evaluation; "
        "env steps/s = total steps / train time; 'after learning_starts' counts only the learning phase "
        "(crossq_trl's torch.compile time included); 'steady': from the first evaluation after "
        "learning_starts to the end (compilation and first updates left out). "
        "Speed ratio: crossq_trl / sb3-contrib (mean over seeds). "
        "Every run uses torch.set_num_threads(1); the speed columns compare runs made at different times, "
        "under whatever else the machine was running then: for speed, use benchmarks/training_throughput.py, "
        "which alternates the implementations in one process.",
    ]
    (out / f"{name}.md").write_text("\n".join(lines + notes) + "\n")


def comparison_lines(cells, summary, envs: list[str]) -> list[str]:
    """Each variant cell against plain CrossQ (``crossq_trl``) at the same update-to-data ratio: the differences
    of the IQM final and mean eval returns (per env step: the same steps, the same evaluations) with bootstrap
    CIs, and the ratio of the steady env steps/s (the speed cost; cells run at different times)."""
    lines = []
    for env_id in envs:
        for impl in sorted({impl for env, impl in cells if env == env_id}, key=_order):
            name, _, utd = impl.partition("@")
            reference = "crossq_trl" + (f"@{utd}" if utd else "")
            if name in IMPLS or (env_id, reference) not in cells:
                continue
            ours, plain = cells[(env_id, impl)], cells[(env_id, reference)]
            final = difference_ci([r["final_return"] for r in ours], [r["final_return"] for r in plain])
            auc = difference_ci(
                [np.mean(r["curve"]["mean_return"]) for r in ours], [np.mean(r["curve"]["mean_return"]) for r in plain]
            )
            speed = _ratio(
                summary[(env_id, impl)]["env_steps_per_s_steady"],
                summary[(env_id, reference)]["env_steps_per_s_steady"],
            )
            lines.append(
                f"| {env_id} | {label(impl)} | {len(ours)} vs {len(plain)} | "
                f"{final[0]:+,.0f} [{final[1]:+,.0f}, {final[2]:+,.0f}] | "
                f"{auc[0]:+,.0f} [{auc[1]:+,.0f}, {auc[2]:+,.0f}] | {_fmt(speed, 2)} |"
            )
    if not lines:
        return []
    return [
        "",
        "## Against plain CrossQ at the same update-to-data ratio",
        "",
        "| env | variant | seeds | final return, difference [95% CI] | mean eval return, difference [95% CI] "
        "| steady env steps/s, ratio |",
        "|---|---|---|---|---|---|",
        *lines,
        "",
        "Differences of IQMs (variant minus plain CrossQ), percentile bootstrap CIs resampling each side's seeds; "
        "a CI that excludes 0 is a difference these seeds resolve. The mean eval return compares the runs per env "
        "step (same steps, same evaluation schedule). Speed ratio: variant / plain, steady env steps/s, from cells "
        "that ran at different times (two at once on 2 cores).",
    ]


def plot_curves(cells, envs: list[str], out: Path, name: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 4), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        impls = sorted({impl for env, impl in cells if env == env_id}, key=_order)
        for index, impl in enumerate(impls):
            records, color = cells[(env_id, impl)], f"C{index}"
            # Seeds share the schedule; keep the points that every seed has.
            n_points = min(len(r["curve"]["steps"]) for r in records)
            steps = np.array(records[0]["curve"]["steps"][:n_points])
            returns = np.array([r["curve"]["mean_return"][:n_points] for r in records])
            low, high = bootstrap_ci(returns)
            ax.plot(steps, iqm(returns), color=color, label=f"{label(impl)} ({len(records)} seeds)")
            ax.fill_between(steps, low, high, color=color, alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("IQM deterministic return")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / f"{name.replace('learning', 'learning_curves', 1)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "learning", help="folder of cell JSONs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where to write the table and the plot")
    parser.add_argument("--name", default="learning", help="file stem: NAME.md, NAME.csv, <curves>.png")
    args = parser.parse_args(argv)

    cells = load_cells(args.results)
    if not cells:
        print(f"no cell results in {args.results}")
        return 1
    known = [env_id for protocol in PROTOCOLS.values() for env_id in protocol.envs]
    envs = sorted({env_id for env_id, _ in cells}, key=lambda e: (known.index(e) if e in known else len(known), e))
    summary = {key: summarize(records) for key, records in cells.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_tables(summary, envs, args.out, args.name)
    comparison = comparison_lines(cells, summary, envs)
    if comparison:
        with (args.out / f"{args.name}.md").open("a") as f:
            f.write("\n".join(comparison) + "\n")
    plot = plot_curves(cells, envs, args.out, args.name)
    print((args.out / f"{args.name}.md").read_text())
    print(f"wrote {args.out / f'{args.name}.md'}, {args.out / f'{args.name}.csv'}" + (f", {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
