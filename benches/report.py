"""Turns the load matrix's JSON lines into a Markdown table with ratios to the
peers and an SVG chart of latency percentiles across load levels (no plotting
library needed)."""
import json
import sys
from pathlib import Path

results, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
by_name = {r["name"]: r for r in rows}

lines = ["| scenario | clients | delivered/s | p50 µs | p99 µs | p99.9 µs | server CPU % | KiB/conn |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    t = r["total_us"]
    cpu = "-" if r.get("server_cpu_pct") is None else f'{r["server_cpu_pct"]:.0f}'
    kib = "-" if r.get("server_kib_per_connection") is None else f'{r["server_kib_per_connection"]:.1f}'
    lines.append(f'| {r["name"]} | {r["clients"]} | {r["delivered_per_s"]:.0f} | {t["p50"]:.0f} | {t["p99"]:.0f} '
                 f'| {t["p999"]:.0f} | {cpu} | {kib} |')
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

# Chart: p50/p99/p99.9 of tickwire-json across the rate search.
search = sorted((r for r in rows if "/search-" in r["name"]), key=lambda r: r["delivered_per_s"])
if search:
    w, h, pad = 640, 360, 50
    xs = [r["delivered_per_s"] for r in search]
    series = {"p50": "#3fb950", "p99": "#d29922", "p999": "#f85149"}
    ymax = max(r["total_us"]["p999"] for r in search) or 1
    xmax = max(xs) or 1
    sx = lambda x: pad + (w - 2 * pad) * x / xmax
    sy = lambda y: h - pad - (h - 2 * pad) * y / ymax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="monospace" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="#0d1117"/>',
             f'<text x="{pad}" y="20" fill="#c9d1d9">Tickwire tick-to-client latency vs delivered updates/s (1,000 clients)</text>',
             f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="#8b949e"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="#8b949e"/>',
             f'<text x="{w-pad}" y="{h-pad+30}" fill="#8b949e" text-anchor="end">{xmax:,.0f} updates/s</text>',
             f'<text x="{pad-5}" y="{pad}" fill="#8b949e" text-anchor="end">{ymax/1000:.1f} ms</text>']
    for i, (key, colour) in enumerate(series.items()):
        pts = " ".join(f"{sx(x):.1f},{sy(r['total_us'][key]):.1f}" for x, r in zip(xs, search))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{w-pad-60}" y="{pad+15*i}" fill="{colour}">{key}</text>')
    parts.append("</svg>")
    (out / "latency.svg").write_text("\n".join(parts))
    print(f"chart: {out / 'latency.svg'}")
