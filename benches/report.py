"""Turns the load matrix's JSON lines into a Markdown table (medians where a
scenario ran more than once) with ratios to the
peers and an SVG chart of latency percentiles across load levels (no plotting
library needed)."""
import json
import statistics
import sys
from pathlib import Path

results, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def median_of(group):
    """One row for repeated runs of a scenario: the median of each figure."""
    if len(group) == 1:
        return dict(group[0], runs=1)

    def med(get):
        values = [v for v in (get(r) for r in group) if v is not None]
        return statistics.median(values) if values else None

    row = dict(group[0], runs=len(group))
    row["delivered_per_s"] = med(lambda r: r["delivered_per_s"])
    row["server_cpu_pct"] = med(lambda r: r.get("server_cpu_pct"))
    row["client_cpu_pct"] = med(lambda r: r.get("client_cpu_pct"))
    row["server_kib_per_connection"] = med(lambda r: r.get("server_kib_per_connection"))
    row["total_us"] = {k: med(lambda r: r["total_us"][k]) for k in group[0]["total_us"]}
    row["p99_each_run_us"] = [r["total_us"]["p99"] for r in group]
    if all(r.get("server_counts") for r in group):
        row["server_counts"] = {k: round(med(lambda r: r["server_counts"][k])) for k in group[0]["server_counts"]}
    if all("total_at_socket_us" in r for r in group):
        row["total_at_socket_us"] = {k: med(lambda r: r["total_at_socket_us"][k])
                                     for k in group[0]["total_at_socket_us"]}
    return row


grouped = {}
for r in runs:
    grouped.setdefault(r["name"], []).append(r)
rows = [median_of(group) for group in grouped.values()]
by_name = {r["name"]: r for r in rows}

# Latency is taken when the generator reads an update and, in the last two
# columns, when the kernel put it on the client's socket (without the
# generator's own queueing; older result lines lack it).
# Conflated quotes and dropped trades come from the server's /v1/stats over
# the window (medians over a scenario's runs; the peers have no such counters: "-").
lines = ["| scenario | runs | clients | delivered/s | p50 µs | p99 µs | p99.9 µs | server CPU % | KiB/conn "
         "| at socket p50 µs | at socket p99 µs | conflated | dropped |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    t = r["total_us"]
    sock = r.get("total_at_socket_us")
    at_socket = f'{sock["p50"]:.0f} | {sock["p99"]:.0f}' if sock and sock["samples"] else "- | -"
    counts = r.get("server_counts")
    withheld = f'{counts["conflated"]} | {counts["dropped_trades"]}' if counts else "- | -"
    cpu = "-" if r.get("server_cpu_pct") is None else f'{r["server_cpu_pct"]:.0f}'
    kib = "-" if r.get("server_kib_per_connection") is None else f'{r["server_kib_per_connection"]:.1f}'
    lines.append(f'| {r["name"]} | {r["runs"]} | {r["clients"]} | {r["delivered_per_s"]:.0f} | {t["p50"]:.0f} '
                 f'| {t["p99"]:.0f} | {t["p999"]:.0f} | {cpu} | {kib} | {at_socket} | {withheld} |')
lines.append("")
lines.append("| scenario | vs peer | delivered/s ratio | p99 ratio (lower is better) |")
lines.append("|---|---|---|---|")
for name, r in by_name.items():
    if not name.startswith("tickwire-"):
        continue
    label = name.split("/", 1)[1]
    for peer in ("peer-ws", "peer-uws"):
        p = by_name.get(f"{peer}/{label}")
        if p and p["delivered_per_s"] and p["total_us"]["p99"]:
            lines.append(f'| {name} | {peer} | {r["delivered_per_s"] / p["delivered_per_s"]:.2f} '
                         f'| {r["total_us"]["p99"] / p["total_us"]["p99"]:.2f} |')
table = "\n".join(lines)
(out / "table.md").write_text(table + "\n")
print(table)

# The rate search: per server, the highest delivered rate with p99 under 10 ms.
P99_LIMIT_US = 10_000
servers = ("tickwire-json", "tickwire-proto", "peer-ws", "peer-uws")
search = {s: sorted((r for r in rows if r["name"].startswith(s + "/search-")), key=lambda r: r["delivered_per_s"])
          for s in servers}
best = {}
for server, runs in search.items():
    ok = [r for r in runs if r["total_us"]["p99"] < P99_LIMIT_US]
    if ok:
        best[server] = max(ok, key=lambda r: r["delivered_per_s"])
if best:
    lines = ["", f"| server | highest delivered/s with p99 < {P99_LIMIT_US // 1000} ms | its p99 µs | vs peer-ws | vs peer-uws |",
             "|---|---|---|---|---|"]
    for server, r in best.items():
        ratio = lambda peer: (f'{r["delivered_per_s"] / best[peer]["delivered_per_s"]:.2f}×' if peer in best else "-")
        lines.append(f'| {server} | {r["delivered_per_s"]:,.0f} | {r["total_us"]["p99"]:.0f} '
                     f'| {ratio("peer-ws")} | {ratio("peer-uws")} |')
    extra = "\n".join(lines)
    with (out / "table.md").open("a") as f:
        f.write(extra + "\n")
    print(extra)

# Chart: p50 (dashed) and p99 (solid) against delivered updates/s across the rate
# search, one colour per server, both axes logarithmic (the rates span 20x and the
# latencies 100x; a linear axis hid every server but the slowest).
if any(search.values()):
    import math
    w, h, left, right, top, bottom = 720, 420, 70, 150, 40, 50
    colours = {"tickwire-json": "#3fb950", "tickwire-proto": "#58a6ff", "peer-ws": "#f85149", "peer-uws": "#d29922"}
    every = [r for runs in search.values() for r in runs]
    xs = [r["delivered_per_s"] for r in every if r["delivered_per_s"] > 0]
    ys = [v for r in every for v in (r["total_us"]["p50"], r["total_us"]["p99"]) if v > 0]
    steps = [m * 10 ** e for e in range(0, 10) for m in (1, 2, 5)]  # 1-2-5 bounds keep the rates' span
    x_lo, x_hi = max(v for v in steps if v <= min(xs)), min(v for v in steps if v >= max(xs))
    y_lo, y_hi = 10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(max(ys)))
    sx = lambda x: left + (w - left - right) * (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))
    sy = lambda y: h - bottom - (h - top - bottom) * (math.log10(y) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
    fmt_us = lambda us: f"{us / 1000:g} ms" if us >= 1000 else f"{us:g} µs"
    fmt_rate = lambda x: f"{x / 1e6:g}M/s" if x >= 1e6 else f"{x / 1e3:g}k/s"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="monospace" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="#0d1117"/>',
             f'<text x="{left}" y="20" fill="#c9d1d9">tick-to-client latency (p99 solid, p50 dashed) vs delivered updates/s, 1,000 clients</text>']
    decade = 10 ** math.floor(math.log10(x_lo))
    while decade <= x_hi:
        for m in range(1, 10):
            x = decade * m
            if x_lo <= x <= x_hi:
                parts.append(f'<line x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{h-bottom}" stroke="#21262d"/>')
                if m in (1, 2, 5):
                    parts.append(f'<text x="{sx(x):.1f}" y="{h-bottom+15}" fill="#8b949e" text-anchor="middle">{fmt_rate(x)}</text>')
        decade *= 10
    decade = y_lo
    while decade <= y_hi:
        parts.append(f'<line x1="{left}" y1="{sy(decade):.1f}" x2="{w-right}" y2="{sy(decade):.1f}" stroke="#30363d"/>')
        parts.append(f'<text x="{left-5}" y="{sy(decade)+4:.1f}" fill="#8b949e" text-anchor="end">{fmt_us(decade)}</text>')
        decade *= 10
    parts.append(f'<line x1="{left}" y1="{sy(P99_LIMIT_US):.1f}" x2="{w-right}" y2="{sy(P99_LIMIT_US):.1f}" '
                 f'stroke="#8b949e" stroke-dasharray="2 4"/>')
    parts.append(f'<text x="{w-right+5}" y="{sy(P99_LIMIT_US)+4:.1f}" fill="#8b949e">p99 limit</text>')
    parts.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h-12}" fill="#8b949e" text-anchor="middle">delivered updates/s</text>')
    for i, (server, runs) in enumerate(search.items()):
        if not runs:
            continue
        colour = colours.get(server, "#c9d1d9")
        for pct, dash in (("p99", ""), ("p50", ' stroke-dasharray="5 4"')):
            pts = [(sx(r["delivered_per_s"]), sy(max(r["total_us"][pct], y_lo))) for r in runs if r["delivered_per_s"] > 0]
            parts.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" '
                         f'stroke="{colour}" stroke-width="2"{dash}/>')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts)
        parts.append(f'<text x="{w-right+5}" y="{top+15+15*i}" fill="{colour}">{server}</text>')
    parts.append("</svg>")
    (out / "latency.svg").write_text("\n".join(parts))
    print(f"chart: {out / 'latency.svg'}")
