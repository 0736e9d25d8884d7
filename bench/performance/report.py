"""Turn measured points into what a reader wants: added latency, ratios, a table, JSON, a plot.

"Added" always means: this target's percentile minus the direct-to-mock percentile measured at
the same offered rate and streaming mode in the same run. Headline ratios are speclearn/LiteLLM.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PCTS = ("p50", "p90", "p99")


def _key(p: dict[str, Any]) -> tuple[bool, str, float | None]:
    return (p["stream"], p["mode"], p["offered_rps"])


def add_deltas(points: list[dict[str, Any]]) -> None:
    """Attach ``added_latency_ms``, ``added_ttft_ms`` and ``added_inter_chunk_ms`` vs direct."""
    direct = {_key(p): p for p in points if p["target"] == "direct"}
    for p in points:
        base = direct.get(_key(p))
        if p["target"] == "direct" or base is None:
            continue
        for field, out in (("latency_ms", "added_latency_ms"), ("ttft_ms", "added_ttft_ms")):
            a, b = p.get(field), base.get(field)
            p[out] = {q: round(a[q] - b[q], 3) for q in PCTS} if a and b else None
        a, b = p.get("inter_chunk_ms"), base.get("inter_chunk_ms")
        p["added_inter_chunk_ms"] = {"mean": round(a["mean"] - b["mean"], 4)} if a and b else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0 or math.isnan(num) or math.isnan(den):
        return None
    return round(max(num, 0.0) / den, 4)


def headline(points: list[dict[str, Any]]) -> dict[str, Any]:
    """speclearn/LiteLLM ratios: throughput (>1 is better) and added latency (<1 is better).

    Latency ratios only at rates both proxies sustained: past saturation the numbers measure
    the length of a queue, which says nothing per request.
    """

    def find(target: str, stream: bool, mode: str, rate: float | None = None) -> dict[str, Any] | None:
        for p in points:
            if (p["target"], p["stream"], p["mode"], p["offered_rps"]) == (target, stream, mode, rate):
                return p
        return None

    out: dict[str, Any] = {
        "throughput_ratio": {},
        "cpu_per_request_ratio": {},
        "added_p50_ratio": {},
        "added_p99_ratio": {},
        "added_ttft_p50_ratio": {},
        "saturated_at": {},  # open-loop points a target could not keep up with (errors or <90%)
    }
    for p in points:
        if p["mode"] == "open" and p["saturated"]:
            tag = f"{'stream' if p['stream'] else 'json'}@{p['offered_rps']:g}"
            out["saturated_at"].setdefault(p["target"], []).append(tag)
    for stream in (False, True):
        label = "stream" if stream else "json"
        s, lt = find("speclearn", stream, "saturation"), find("litellm", stream, "saturation")
        if s and lt:
            out["throughput_ratio"][label] = _ratio(s["achieved_rps"], lt["achieved_rps"])
            # CPU per request under saturation: the steadiest number on a shared machine.
            out["cpu_per_request_ratio"][label] = _ratio(s["cpu_ms_per_req"]["target"], lt["cpu_ms_per_req"]["target"])
        rates = sorted({p["offered_rps"] for p in points if p["mode"] == "open" and p["stream"] == stream})
        for rate in rates:
            s, lt = find("speclearn", stream, "open", rate), find("litellm", stream, "open", rate)
            if not (s and lt and s.get("added_latency_ms") and lt.get("added_latency_ms")):
                continue
            if s["saturated"] or lt["saturated"]:
                continue  # latency of a queue, not of a proxy: no ratio (see saturated_at)
            tag = f"{label}@{rate:g}"
            out["added_p50_ratio"][tag] = _ratio(s["added_latency_ms"]["p50"], lt["added_latency_ms"]["p50"])
            out["added_p99_ratio"][tag] = _ratio(s["added_latency_ms"]["p99"], lt["added_latency_ms"]["p99"])
            if s.get("added_ttft_ms") and lt.get("added_ttft_ms"):
                out["added_ttft_p50_ratio"][tag] = _ratio(s["added_ttft_ms"]["p50"], lt["added_ttft_ms"]["p50"])
    return out


def peak_rss(points: list[dict[str, Any]]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for p in points:
        if p.get("rss_peak_mb") is not None:
            peaks[p["target"]] = max(peaks.get(p["target"], 0.0), p["rss_peak_mb"])
    return peaks


def mock_ceiling(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests the mock serves per CPU-second, from its own CPU time in the direct runs."""
    best: dict[str, Any] = {}
    for p in points:
        if p["target"] == "direct" and p["mode"] == "saturation" and p["mock_cpu_s"] > 0:
            label = "stream" if p["stream"] else "json"
            best[f"{label}_rps_per_core"] = round(p["ok"] / p["mock_cpu_s"])
            best[f"{label}_harness_rps"] = p["achieved_rps"]  # loadgen + mock sharing their core(s)
    return best


def _f(v: float | None, w: int = 7, d: int = 2) -> str:
    return f"{'-':>{w}}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>{w}.{d}f}"


def table(points: list[dict[str, Any]]) -> str:
    cols = (
        f"{'target':<9} {'mode':<6} {'offered':>8} {'achieved':>9} {'err':>5} "
        f"{'p50':>7} {'p90':>7} {'p99':>7} {'+p50':>7} {'+p90':>7} {'+p99':>7} "
        f"{'ttft50':>7} {'+ttft50':>7} {'gap':>6} {'cpu/req':>7} {'util':>5} {'wait':>5} {'rssMB':>6}"
    )
    lines = [cols, "-" * len(cols)]
    for p in points:
        lat, add = p.get("latency_ms") or {}, p.get("added_latency_ms") or {}
        ttft, addt = p.get("ttft_ms") or {}, p.get("added_ttft_ms") or {}
        gap = (p.get("inter_chunk_ms") or {}).get("mean")
        offered = f"{p['offered_rps']:g}" if p["mode"] == "open" else f"c={p['concurrency']}"
        lines.append(
            f"{p['target']:<9} {'sse' if p['stream'] else 'json':<6} {offered:>8} {p['achieved_rps']:>9.1f} "
            f"{p['errors']:>5} {_f(lat.get('p50'))} {_f(lat.get('p90'))} {_f(lat.get('p99'))} "
            f"{_f(add.get('p50'))} {_f(add.get('p90'))} {_f(add.get('p99'))} "
            f"{_f(ttft.get('p50'))} {_f(addt.get('p50'))} {_f(gap, 6, 3)} "
            f"{_f(p['cpu_ms_per_req']['target'], 7, 3)} {_f(p.get('target_cpu_util'), 5, 2)} "
            f"{_f(p.get('target_runq_wait'), 5, 2)} {_f(p.get('rss_peak_mb'), 6, 0)}"
        )
    lines.append(
        "times in ms; +x = added over direct at the same rate and mode; gap = mean inter-chunk delay;\n"
        "cpu/req = target CPU ms per request; util = target CPU cores busy; wait = share of time the\n"
        "target was runnable but had no core (contention); c=N: closed-loop saturation, N in flight"
    )
    return "\n".join(lines)


def headline_text(h: dict[str, Any]) -> str:
    parts = []
    for label, v in h["throughput_ratio"].items():
        if v is not None:
            parts.append(f"throughput speclearn/LiteLLM ({label}) = {v:.2f}x")
    for label, v in h["cpu_per_request_ratio"].items():
        if v is not None:
            parts.append(f"CPU per request speclearn/LiteLLM ({label}, saturation) = {v:.3f}")
    ratios = (
        ("added p50", "added_p50_ratio"),
        ("added p99", "added_p99_ratio"),
        ("added TTFT p50", "added_ttft_p50_ratio"),
    )
    for name, key in ratios:
        for tag, v in h[key].items():
            if v is not None:
                parts.append(f"{name} speclearn/LiteLLM ({tag}) = {v:.3f}")
    for target, tags in h["saturated_at"].items():
        parts.append(f"{target} could not keep up (open loop) at: {', '.join(tags)}")
    return "\n".join(parts) if parts else "(no speclearn+LiteLLM pair measured: no headline ratios)"


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Strict JSON (NaN becomes null) so any consumer can read it."""
    path.write_text(json.dumps(_clean(result), indent=2, allow_nan=False) + "\n")


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def plot(path: Path, points: list[dict[str, Any]]) -> bool:
    """Latency vs offered load (JSON answers, streaming TTFT) and saturation throughput bars.

    Returns False when matplotlib is not installed (it is in the ``bench`` extra only).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    targets = list(dict.fromkeys(p["target"] for p in points))
    colors = dict(zip(targets, ("tab:gray", "tab:blue", "tab:red", "tab:green", "tab:purple"), strict=False))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, stream, field, title in (
        (axes[0], False, "latency_ms", "non-streaming latency"),
        (axes[1], True, "ttft_ms", "streaming time to first token"),
    ):
        for t in targets:
            pts = sorted(
                (
                    p
                    for p in points
                    if p["target"] == t and p["stream"] == stream and p["mode"] == "open" and p.get(field)
                ),
                key=lambda p: p["offered_rps"],
            )
            if not pts:
                continue
            xs = [p["offered_rps"] for p in pts]
            ax.plot(xs, [p[field]["p50"] for p in pts], "o-", color=colors[t], label=f"{t} p50")
            ax.plot(xs, [p[field]["p99"] for p in pts], "s--", color=colors[t], label=f"{t} p99", alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        rates = sorted({p["offered_rps"] for p in points if p["mode"] == "open"})
        if rates:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xticks(rates)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("offered load (req/s, open loop)")
        ax.set_ylabel("ms (from scheduled send)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    sat = [p for p in points if p["mode"] == "saturation"]
    labels = [f"{p['target']}\n{'sse' if p['stream'] else 'json'}" for p in sat]
    axes[2].bar(range(len(sat)), [p["achieved_rps"] for p in sat], color=[colors[p["target"]] for p in sat])
    axes[2].set_xticks(range(len(sat)), labels, fontsize=8)
    axes[2].set_ylabel("req/s")
    axes[2].set_title("saturation throughput (closed loop)")
    for i, p in enumerate(sat):
        axes[2].annotate(f"{p['achieved_rps']:.0f}", (i, p["achieved_rps"]), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
