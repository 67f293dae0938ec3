#!/usr/bin/env python3
"""soak_plot.py SAMPLES FAULTS OUT.svg: the soak's daemon RSS (MiB) and open fds
over time, one line per daemon process (a restart starts a new line), faults
as vertical marks. Plain SVG from the standard library (no matplotlib here).
SAMPLES: samples.tsv of scripts/bench/soak.sh (time, host, pid, VmRSS KiB,
fds, load); FAULTS: faults.tsv (time, kind, host)."""
import sys

samples_path, faults_path, out = sys.argv[1:4]
rows = []
with open(samples_path) as f:
    for ln in f:
        p = ln.rstrip("\n").split("\t")
        if len(p) >= 5 and p[3] and p[4]:
            rows.append((int(p[0]), p[1], p[2], int(p[3]) / 1024, int(p[4])))
faults = []
with open(faults_path) as f:
    for ln in f:
        p = ln.rstrip("\n").split("\t")
        if len(p) >= 3 and p[1] != "heal":
            faults.append((float(p[0]), p[1], p[2]))
t0 = min(r[0] for r in rows)
t1 = max(r[0] for r in rows)
hosts = sorted({r[1] for r in rows}, key=lambda h: (h != "lead", h))
colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
color = {h: colors[i % len(colors)] for i, h in enumerate(hosts)}
W, H, L, R, T, PH, GAP = 900, 520, 60, 110, 30, 200, 50


def panel(y0, idx, label, top):
    s = []
    ymax = max(top, 1)
    s.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>' % (L, y0, W - L - R, PH))
    s.append('<text x="%d" y="%d" font-size="12" transform="rotate(-90 %d %d)" text-anchor="middle">%s</text>' % (
        15, y0 + PH / 2, 15, y0 + PH / 2, label))
    for k in range(5):
        v = ymax * k / 4
        y = y0 + PH - PH * k / 4
        s.append('<text x="%d" y="%.0f" font-size="10" text-anchor="end">%.0f</text>' % (L - 4, y + 3, v))
        s.append('<line x1="%d" x2="%d" y1="%.0f" y2="%.0f" stroke="#eee"/>' % (L, W - R, y, y))

    def xy(t, v):
        return L + (W - L - R) * (t - t0) / max(t1 - t0, 1), y0 + PH - PH * v / ymax

    for t, kind, h in faults:
        x, _ = xy(t, 0)
        s.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-dasharray="2,3" opacity="0.6"/>' % (
            x, x, y0, y0 + PH, color.get(h, "#777")))
    procs = {}
    for r in rows:
        procs.setdefault((r[1], r[2]), []).append(r)
    for (h, _pid), rs in procs.items():
        pts = " ".join("%.1f,%.1f" % xy(r[0], r[idx]) for r in rs)
        s.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>' % (pts, color[h]))
    return s


rss_top = max(r[3] for r in rows) * 1.15
fd_top = max(r[4] for r in rows) * 1.15
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">' % (W, H),
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="%d" y="18" font-size="14">d soak with faults: daemon RSS and open fds every 10 s '
       '(dashed: a fault on that host; a restart starts a new line)</text>' % L]
svg += panel(T, 3, "RSS (MiB)", rss_top)
svg += panel(T + PH + GAP, 4, "open fds", fd_top)
y = T + 2 * PH + GAP + 30
svg.append('<text x="%d" y="%d" font-size="11" text-anchor="middle">minutes since start (%d min)</text>' % (
    (L + W - R) / 2, y, (t1 - t0) // 60))
for i, h in enumerate(hosts):
    svg.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>' % (
        W - R + 15, W - R + 35, T + 20 + i * 18, T + 20 + i * 18, color[h]))
    svg.append('<text x="%d" y="%d" font-size="12">%s</text>' % (W - R + 40, T + 24 + i * 18, h))
for k in range(0, (t1 - t0) // 60 + 1, max(1, (t1 - t0) // 600)):
    x = L + (W - L - R) * (k * 60) / max(t1 - t0, 1)
    svg.append('<text x="%.0f" y="%d" font-size="10" text-anchor="middle">%d</text>' % (x, T + 2 * PH + GAP + 14, k))
svg.append("</svg>")
with open(out, "w") as f:
    f.write("\n".join(svg) + "\n")
