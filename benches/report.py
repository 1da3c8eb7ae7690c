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

# Chart: p99 against delivered updates/s across the rate search, one line per server.
if any(search.values()):
    w, h, pad = 640, 360, 60
    colours = {"tickwire-json": "#3fb950", "tickwire-proto": "#58a6ff", "peer-ws": "#f85149", "peer-uws": "#d29922"}
    every = [r for runs in search.values() for r in runs]
    ymax = max(r["total_us"]["p99"] for r in every) or 1
    xmax = max(r["delivered_per_s"] for r in every) or 1
    sx = lambda x: pad + (w - 2 * pad) * x / xmax
    sy = lambda y: h - pad - (h - 2 * pad) * y / ymax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="monospace" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="#0d1117"/>',
             f'<text x="{pad}" y="20" fill="#c9d1d9">p99 tick-to-client latency vs delivered updates/s (1,000 clients)</text>',
             f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="#8b949e"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="#8b949e"/>',
             f'<line x1="{pad}" y1="{sy(P99_LIMIT_US):.1f}" x2="{w-pad}" y2="{sy(P99_LIMIT_US):.1f}" stroke="#8b949e" stroke-dasharray="4"/>',
             f'<text x="{w-pad}" y="{h-pad+30}" fill="#8b949e" text-anchor="end">{xmax:,.0f} updates/s</text>',
             f'<text x="{pad-5}" y="{pad}" fill="#8b949e" text-anchor="end">{ymax/1000:.0f} ms</text>']
    for i, (server, runs) in enumerate(search.items()):
        if not runs:
            continue
        pts = " ".join(f'{sx(r["delivered_per_s"]):.1f},{sy(r["total_us"]["p99"]):.1f}' for r in runs)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colours[server]}" stroke-width="2"/>')
        parts.append(f'<text x="{pad+10}" y="{pad+15*i}" fill="{colours[server]}">{server}</text>')
    parts.append("</svg>")
    (out / "latency.svg").write_text("\n".join(parts))
    print(f"chart: {out / 'latency.svg'}")
