#!/usr/bin/env python3
"""report.py RESULTS_DIR OUT_DIR: bench/RESULTS.md and the plots from scripts/bench.sh's raw data.

Writes OUT_DIR/RESULTS.md, OUT_DIR/latency.png (distribution of one command's
latency), OUT_DIR/fanout.png (fan-out time vs peer count), OUT_DIR/stream.png
(RSS of every d process while 1 GiB streams) and OUT_DIR/scale.png (10,000
workers reconnecting after the leader's kill -9). Sections whose data are
missing (a partial run) are left out. The analysis under "What limits it" is
scripts/bench/analysis.md, appended as it is; after it every bench/rounds/*.md
(the hand-written sections of later rounds, one file per round) in name order.
"""
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale as scale_mod  # noqa: E402

RES, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)


def load(name):
    p = os.path.join(RES, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def cmd(data, name):
    if not data:
        return None
    return next((c for c in data["commands"] if c["name"] == name), None)


def ms(x, digits=None):
    if x is None:
        return "–"
    v = x * 1e3
    if digits is None:
        digits = 2 if v < 10 else 1 if v < 100 else 0
    return f"{v:,.{digits}f} ms"


def ratio(a, b, digits=1):
    if not a or not b:
        return "–"
    return f"{a / b:,.{digits}f}×"


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:,.1f} MiB"


def verdict(ok):
    return "**met**" if ok else "**missed**"


machine = load("machine.json") or {}
config = load("config.json") or {}
lat = load("latency.json")
rtt = load("rtt.json")
rtt_u = load("rtt-underlay.json")
stream = load("stream.json")
foot = load("footprint.json") or {}
client = load("client.json")
sc = load("scale.json")
fanouts = {}
for p in glob.glob(os.path.join(RES, "fanout-*.json")):
    n = int(re.search(r"fanout-(\d+)\.json", p).group(1))
    with open(p) as f:
        fanouts[n] = json.load(f)

md = []
summary = []  # (part, what, result, target, verdict)

# ------------------------------------------------------------------ 1 latency
sec1 = []
if lat:
    d = cmd(lat, "d execOnPeer")
    cm = cmd(lat, "ssh ControlMaster")
    new = cmd(lat, "ssh new connection")
    sh = cmd(lat, "sh -c true")
    login = cmd(lat, "ssh ControlMaster, login shell rc")
    local = cmd(lat, "d execOnPeer, local job")
    floor = sh["median"] + (rtt["median_us"] / 1e6 if rtt else 0)
    summary.append(("1", "`d execOnPeer … true` vs ssh with ControlMaster",
                    f"d {ms(d['median'])}, ssh CM {ms(cm['median'])}: d is {ratio(cm['median'], d['median'])} faster",
                    "≥ 30× faster, a few ms", verdict(cm["median"] / d["median"] >= 30 and d["median"] < 0.005)))
    if login:
        summary.append(("1", "… vs ssh ControlMaster with the login shell's rc", f"{ms(login['median'])}: d is "
                        f"{ratio(login['median'], d['median'])} faster", "≥ 30×",
                        verdict(login["median"] / d["median"] >= 30)))
    summary.append(("1", "d against the floor (`sh -c true` + TCP round trip)",
                    f"floor {ms(floor)}; d = {ratio(d['median'], floor)} the floor", "report", "–"))
    sec1.append("## 1. One command: `d execOnPeer … --shellCmd true` vs ssh\n")
    sec1.append(
        "Requester h1 → target h2, over wireguard-go between two network namespaces. "
        "d: `d --socket h1.sock execOnPeer --peer h2 --directory / --shellCmd true` "
        "(client → h1's daemon over its UNIX socket → WireGuard → h2's daemon → `/bin/sh -c true`). "
        "ssh: OpenSSH client in h1's namespace → a throwaway sshd in h2's namespace on its overlay address, "
        "`ssh HOST true`, ed25519 keys, `-F /dev/null`, sshd with HOME pointed at an empty directory so that no "
        "shell start-up file runs (the lean case for ssh). The row *login shell rc* is the same ControlMaster "
        "against a second sshd that leaves HOME alone: bash then sources root's `~/.bashrc` (this machine's runs "
        "`pyenv init`), as a user's shell would. hyperfine itself runs in h1's namespace, so no row carries a "
        "namespace wrapper. "
        f"hyperfine -N, {lat['rounds']} rounds × {lat['runs']} runs, the commands' order rotating each round.\n")
    sec1.append("| command | median | p10 | p90 | min | runs | vs d |")
    sec1.append("|---|---:|---:|---:|---:|---:|---:|")
    for c in lat["commands"]:
        sec1.append(f"| {c['name']} | {ms(c['median'])} | {ms(c['p10'])} | {ms(c['p90'])} | {ms(c['min'])} | "
                    f"{c['runs']} | {ratio(c['median'], d['median'], 2)} |")
    sec1.append("")
    if rtt:
        sec1.append(f"TCP round trip h1 → h2 over WireGuard (1-byte echo, {rtt['count']} round trips): "
                    f"median {rtt['median_us']:.0f} µs (p10 {rtt['p10_us']:.0f}, p90 {rtt['p90_us']:.0f})"
                    + (f"; over the plain veth underlay: {rtt_u['median_us']:.0f} µs" if rtt_u else "") + ".\n")
    sec1.append(f"- **floor** = `sh -c true` {ms(sh['median'])} + round trip = **{ms(floor)}**; "
                f"d = **{ratio(d['median'], floor)}** the floor, {ms(d['median'] - floor)} above it.")
    sec1.append(f"- ssh with ControlMaster / d = **{ratio(cm['median'], d['median'])}**; "
                f"ssh new connection / d = **{ratio(new['median'], d['median'])}**" +
                (f"; ssh ControlMaster with the login shell's rc / d = **{ratio(login['median'], d['median'])}**."
                 if login else "."))
    if local:
        sec1.append(f"- d's own parts: `d ping` (client start + UNIX socket round trip) is in section 5; the same "
                    f"exec run by h1's daemon itself (no network) takes {ms(local['median'])}, so WireGuard and h2's "
                    f"daemon add {ms(d['median'] - local['median'])}.")
    sec1.append("")
    # latency distribution plot
    fig, ax = plt.subplots(figsize=(9, 4.8))
    order = ["sh -c true", "d execOnPeer, local job", "d execOnPeer", "ssh ControlMaster",
             "ssh ControlMaster, login shell rc", "ssh new connection"]
    data = [[t * 1e3 for t in cmd(lat, n)["times"]] for n in order if cmd(lat, n)]
    labels = [n for n in order if cmd(lat, n)]
    parts = ax.violinplot(data, orientation="horizontal", showmedians=True, widths=0.8)
    for b in parts["bodies"]:
        b.set_alpha(0.5)
    for i, ys in enumerate(data, start=1):
        ax.scatter(ys, [i + (k % 7 - 3) * 0.03 for k in range(len(ys))], s=5, color="k", alpha=0.4)
    ax.axvline(floor * 1e3, color="tab:red", ls="--", lw=1, label=f"floor {floor * 1e3:.2f} ms")
    ax.set_xscale("log")
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.set_xlabel("wall time per command, ms (log)")
    ax.set_title("One command h1 → h2 over WireGuard: distribution of all runs")
    ax.legend(loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "latency.png"), dpi=110)
    plt.close(fig)
    sec1.append("![latency distribution](latency.png)\n")
md += sec1

# ------------------------------------------------------------------ 2 fan-out
if fanouts:
    ns = sorted(fanouts)
    sec = ["## 2. Fan-out: `true` on N peers, d vs pdsh\n",
           "d: the client's own fan-out, `d execOnPeer --peer h2,h3,…,hN+1 --directory / --shellCmd true` "
           "(at most 64 at once, its default); the requester's sessions to the targets are already open "
           "(one unmeasured run first). pdsh: `pdsh -R ssh -f 64 -w 198.19.0.[2-N+1] true` from h1's namespace, "
           "a new ssh connection per host. Every host is its own namespace behind WireGuard (hub topology: "
           f"h1 holds a tunnel to each). {fanouts[ns[0]]['rounds']} rounds × {fanouts[ns[0]]['runs']} runs, alternating.\n",
           "| peers | d median | d p10–p90 | pdsh median | pdsh p10–p90 | pdsh / d |",
           "|---:|---:|---:|---:|---:|---:|"]
    for n in ns:
        d, p = cmd(fanouts[n], "d"), cmd(fanouts[n], "pdsh")
        sec.append(f"| {n} | {ms(d['median'])} | {ms(d['p10'])}–{ms(d['p90'])} | {ms(p['median'])} | "
                   f"{ms(p['p10'])}–{ms(p['p90'])} | {ratio(p['median'], d['median'])} |")
    sec.append("")
    top = max(ns)
    dtop = cmd(fanouts[top], "d")
    ptop = cmd(fanouts[top], "pdsh")
    summary.append(("2", f"fan-out `true` to {top} peers", f"d {ms(dtop['median'])}, pdsh {ms(ptop['median'])} "
                    f"({ratio(ptop['median'], dtop['median'])})", "100 peers < 200 ms",
                    verdict(dtop["median"] < 0.2) if top >= 100 else "(quick run)"))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, color in (("d", "tab:blue"), ("pdsh", "tab:orange")):
        med = [cmd(fanouts[n], name)["median"] * 1e3 for n in ns]
        lo = [med[i] - cmd(fanouts[n], name)["p10"] * 1e3 for i, n in enumerate(ns)]
        hi = [cmd(fanouts[n], name)["p90"] * 1e3 - med[i] for i, n in enumerate(ns)]
        ax.errorbar(ns, med, yerr=[lo, hi], marker="o", capsize=3, color=color,
                    label="d execOnPeer --peer a,b,…" if name == "d" else "pdsh -R ssh -f 64")
    ax.axhline(200, color="tab:red", ls="--", lw=1, label="target: 100 peers < 200 ms")
    ax.set_yscale("log")
    ax.set_xlabel("peers")
    ax.set_ylabel("wall time, ms (log; bars p10–p90)")
    ax.set_title("Fan-out of `true` over WireGuard")
    ax.set_xticks(ns)
    ax.grid(which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "fanout.png"), dpi=110)
    plt.close(fig)
    sec.append("![fan-out time vs peer count](fanout.png)\n")
    md += sec

# ------------------------------------------------------------------ 3 stream
stream_lo = load("stream-loopback.json")


def cpu_per_gib(c, size, key):
    vals = [r.get(key) for r in c.get("cpu_s", []) if r.get(key) is not None]
    if not vals:
        return None
    vals.sort()
    return vals[len(vals) // 2] / (size / 2**30)


def stream_table(st, watched):
    d, s = cmd(st, "d execOnPeer"), cmd(st, "ssh")
    floor = cmd(st, "relay floor")
    size = st["bytes"]
    out = ["| | median | runs (MB/s) | client peak RSS | " + " | ".join(f"{w} peak RSS" for w in watched) +
           " | CPU s per GiB: client | " + " | ".join(f"{w}" for w in watched) + " | whole machine |",
           "|---|---:|---|---:|" + "---:|" * len(watched) + "---:|" + "---:|" * len(watched) + "---:|"]
    for c in [x for x in (d, s, floor) if x]:
        pk = c["peak_kib"]
        mine = c is d
        f = lambda k: cpu_per_gib(c, size, k)
        fmt = lambda v: "–" if v is None else f"{v:.2f}"
        out.append(f"| {c['name']} | **{c['median_mbps']:,.0f} MB/s** ({c['median_wall']:.2f} s) | "
                   f"{', '.join(f'{x:,.0f}' for x in c['mbps'])} | {mib(c['client_peak_kib'])} | " +
                   " | ".join(mib(pk.get(w)) if mine else "–" for w in watched) + f" | {fmt(f('client'))} | " +
                   " | ".join(fmt(f(w)) if mine else "–" for w in watched) + f" | {fmt(f('machine'))} |")
    return out


if stream:
    d, s = cmd(stream, "d execOnPeer"), cmd(stream, "ssh")
    size = stream["bytes"]
    watched = ["requester daemon (h1)", "target daemon (h2)"]
    sec = ["## 3. Streaming: output through d vs through ssh\n",
           f"`head -c {size} /dev/zero` ({size / 2**30:.2f} GiB) on h2, its stdout read on h1 over WireGuard (the "
           "harness drains and counts every byte; a run with a byte missing or a non-zero status fails). ssh: a new "
           "connection per run, default cipher. "
           f"{stream['runs']} runs each, alternating. Peak RSS: the client's VmRSS sampled every 50 ms; each daemon's "
           "VmHWM, reset before every run (`/proc/PID/clear_refs`). CPU: seconds per GiB (median run) of each d process, and of "
           "the whole machine (/proc/stat: wireguard-go, the kernel and sshd included).\n"]
    sec += stream_table(stream, watched)
    sec.append("")
    rtt_note = ""
    tw = load("tput-wg.json")
    if tw:
        sec.append(f"Plain TCP over the same tunnel (h2 → h1, no ssh, no d): **{tw['mb_per_s']:,.0f} MB/s** — the "
                   f"ceiling for anything carried raw, as d (binary output frames, peer protocol 3) and ssh both do.\n")
    sec.append(f"d / ssh throughput: **{ratio(d['median_mbps'], s['median_mbps'], 2)}**. "
               f"Daemon RSS before the streams (idle): leader/requester {mib(foot.get('rss_idle_leader_kib'))}, "
               f"a worker {mib(foot.get('rss_idle_worker_median_kib'))}; after them: requester "
               f"{mib(foot.get('rss_after_stream_leader_kib'))}, workers' max {mib(foot.get('rss_after_stream_worker_max_kib'))}.\n")
    if stream_lo:
        dl, sl = cmd(stream_lo, "d execOnPeer"), cmd(stream_lo, "ssh")
        sec.append(f"**The same on loopback** (no tunnel: two daemons on 127.0.0.3/127.0.0.4, sshd on 127.0.0.4, "
                   "root namespace), to show what d itself carries when WireGuard is not the limit:\n")
        sec += stream_table(stream_lo, ["requester daemon", "target daemon"])
        sec.append("")
        tl = load("tput-lo.json")
        fl = cmd(stream_lo, "relay floor")
        sec.append(f"d / ssh on loopback: **{ratio(dl['median_mbps'], sl['median_mbps'], 2)}**" +
                   (f"; plain TCP on loopback: {tl['mb_per_s']:,.0f} MB/s." if tl else ".") + "\n")
        if fl:
            sec.append("The relay floor: the same bytes over the same hops (a pipe, TCP on loopback, a UNIX "
                       "socket) through three socat processes that only copy (`scripts/bench/relay-floor.sh`): "
                       "what any relay with d's shape carries on this machine. d / floor: "
                       f"**{ratio(dl['median_mbps'], fl['median_mbps'], 2)}**.\n")
    pk = d["peak_kib"]
    peak_all = max([d["client_peak_kib"]] + list(pk.values()))
    summary.append(("3", f"stream {size / 2**30:.2f} GiB over WireGuard: d vs `ssh HOST head -c …`",
                    f"d {d['median_mbps']:,.0f} MB/s, ssh {s['median_mbps']:,.0f} MB/s "
                    f"({ratio(d['median_mbps'], s['median_mbps'], 2)}); largest d process peak {mib(peak_all)}",
                    "≥ ssh's MB/s, memory flat",
                    f"{verdict(d['median_mbps'] >= s['median_mbps'])} (throughput), "
                    f"{verdict(peak_all < 64 * 1024)} (memory)"))
    if stream_lo:
        floor_txt = (f", relay floor {fl['median_mbps']:,.0f} MB/s "
                     f"(d / floor {ratio(dl['median_mbps'], fl['median_mbps'], 2)})" if fl else "")
        summary.append(("3", "the same stream on loopback (no tunnel)",
                        f"d {dl['median_mbps']:,.0f} MB/s, ssh {sl['median_mbps']:,.0f} MB/s "
                        f"({ratio(dl['median_mbps'], sl['median_mbps'], 2)}){floor_txt}", "≥ ssh's MB/s",
                        verdict(dl["median_mbps"] >= sl["median_mbps"])))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    smp = d["samples"] or []
    keys = [k for k in (smp[0].keys() if smp else []) if k != "t"]
    for k in keys:
        ax.plot([r["t"] for r in smp], [(r[k] or 0) / 1024 for r in smp], label=("d client" if k == "client" else k))
    ss = s["samples"] or []
    ax.plot([r["t"] for r in ss], [(r["client"] or 0) / 1024 for r in ss], ls="--", label="ssh client (its run)")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"RSS while {size / 2**30:.2f} GiB streams through d over WireGuard (first run)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "stream.png"), dpi=110)
    plt.close(fig)
    sec.append("![RSS during the stream](stream.png)\n")
    md += sec

# ------------------------------------------------------------------ 4 scale
if sc:
    n = sc["workers"]
    sec = [f"## 4. Scale: one leader, {n:,} simulated workers\n",
           f"`loadgen` (this repository, `loadgen/`) runs {n:,} workers in one process (one tokio thread), each "
           "from its own loopback source address (127.1.x.y), each doing the real handshake (Hello with a fresh "
           "nonce → the leader's Challenge, whose HMAC proof it checks → Auth → Welcome), then heartbeating at "
           "the interval the Welcome names and reconnecting with the daemon's own backoff (0.1–2 s, jitter, "
           "reset after 10 s up). The leader (`--listen 127.0.0.1:PORT`) and one real worker daemon run on loopback.\n"]
    rows = [("leader RSS, alone", mib(sc.get("rss_leader_alone_kib")))]
    cold = sc.get("cold_start_ms")
    rows.append((f"cold start: {n:,} workers dialing at once, all online after", f"{cold / 1000:.1f} s" if cold else "–"))
    rows.append(("leader RSS when all are online", mib(sc.get("rss_after_cold_start_kib"))))
    w = sc.get("rss_idle_window_ms", 0) / 1000
    r0, r1 = sc.get("rss_idle_start_kib"), sc.get("rss_idle_end_kib")
    grow = (r1 - r0) / w if r0 and r1 and w else None
    rows.append((f"leader RSS over {w:.0f} s of idle heartbeats",
                 f"{mib(r0)} → {mib(r1)} (+{grow:,.0f} KiB/s)" if grow is not None else "–"))
    hb = sc.get("link_heartbeat_ms")
    hb_txt = f"every {hb / 1000:g} s, as the leader paced them" if isinstance(hb, (int, float)) else "paced by the leader"
    rows.append((f"leader CPU while {n:,} heartbeat ({hb_txt}), {sc.get('idle_window_s')} s window",
                 f"{sc.get('idle_cpu_pct')} % of a core"))
    rows.append(("loadgen CPU meanwhile (for scale)", f"{sc.get('loadgen_cpu_pct')} % of a core"))
    rows.append(("leader threads / open fds", f"{sc.get('leader_threads')} / {sc.get('leader_fds')}"))
    rec = None
    lg = os.path.join(RES, "scale-loadgen.jsonl")
    if os.path.exists(lg) and sc.get("kill_ms"):
        rec = scale_mod.recovery(lg, sc["kill_ms"], sc["restart_ms"], n)
        rows.append(("kill -9 the leader → restarted after", f"{(sc['restart_ms'] - sc['kill_ms']) / 1000:.2f} s"))
        rows.append((f"all {n:,} back online after the restart",
                     f"**{rec['all_back_after_restart_ms'] / 1000:.1f} s** ({rec['all_back_after_kill_ms'] / 1000:.1f} s after the kill)"))
        rows.append(("reconnect attempts, largest 1-s count (incl. refused while it was down)",
                     f"{rec['max_attempts_per_s']:,}/s (handshakes completed: at most {rec['max_handshakes_per_s']:,}/s)"))
        rows.append(("attempts per worker during the outage and recovery",
                     f"{rec['attempts_total'] / n:.1f}"))
        rows.append(("leader RSS after recovery (peak)", f"{mib(sc.get('rss_after_restart_kib'))} ({mib(sc.get('hwm_after_restart_kib'))})"))
    soak = load("soak.json")
    proj = None
    if sc.get("rss_after_cold_start_kib") and sc.get("rss_leader_alone_kib"):
        per0 = (sc["rss_after_cold_start_kib"] - sc["rss_leader_alone_kib"]) / n
        rows.append(("leader memory per link, just connected", f"{per0:.1f} KiB"))
    if soak and sc.get("soak_links"):
        L = sc["soak_links"]
        per = (sc["soak_rss_final_kib"] - sc["soak_rss_alone_kib"]) / L
        per_c = (sc["soak_rss_connected_kib"] - sc["soak_rss_alone_kib"]) / L
        last = soak["samples"][-1]["t"]
        rows.append((f"soak: {L} links heartbeating every {sc['soak_hb_ms']} ms (buffers fill {1000 // sc['soak_hb_ms']}× "
                     "faster than at 1 s)", f"{per_c:.1f} KiB per link when connected → **{per:.1f} KiB per link** after "
                     f"{last:.0f} s ({'RSS stopped growing' if soak.get('plateau') else 'still growing'})"))
        proj = sc["rss_leader_alone_kib"] + per * n
        rows.append((f"projected leader RSS with {n:,} links once every link's buffers are walked "
                     "(≈ 55 min at 1 s heartbeats)", f"**{mib(proj)}**"))
        fig, ax = plt.subplots(figsize=(7, 3.8))
        ax.plot([x["t"] for x in soak["samples"]], [x["rss_kib"] / 1024 for x in soak["samples"]], marker=".")
        ax.set_xlabel("seconds after all links are up")
        ax.set_ylabel("leader RSS, MiB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Leader RSS, {L} links heartbeating every {sc['soak_hb_ms']} ms")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT, "soak.png"), dpi=110)
        plt.close(fig)
    if sc.get("budget_experiment"):
        rows.append((f"experiment: every link at 1 s (`--link-beats-per-sec {sc['budget_experiment']}`, no pacing)",
                     f"CPU {sc.get('budget_idle_cpu_pct')} % of a core; RSS {mib(sc.get('budget_rss_idle_start_kib'))} → {mib(sc.get('budget_rss_idle_end_kib'))}"))
    sec.append("| measure | value |")
    sec.append("|---|---|")
    sec += [f"| {a} | {b} |" for a, b in rows]
    sec.append("")
    # listPeers sweep
    lp = []
    for p in sorted(glob.glob(os.path.join(RES, "scale-listpeers-*.json")),
                    key=lambda p: int(re.search(r"-(\d+)\.json", p).group(1))):
        k = int(re.search(r"-(\d+)\.json", p).group(1))
        with open(p) as f:
            data = json.load(f)
        wk = cmd(data, "d listPeers on a worker")
        lp.append((k, cmd(data, "d listPeers")["median"], cmd(data, "d --json listPeers")["median"],
                   sc.get(f"listpeers_{k}_bytes"),
                   ms(wk["median"]) if wk else sc.get(f"listpeers_worker_{k}", "–")))
    fails = {int(k.split("_")[1]): v for k, v in sc.items() if re.fullmatch(r"listpeers_\d+", k) and v != "ok"}
    sec.append("`d listPeers` by registry size (peers online): on the leader (table / `--json`), and on the real "
               "worker, which gets the registry from the leader over its link:\n")
    sec.append("| peers | `d listPeers` (leader) | `d --json listPeers` (leader) | `--json` output | `d listPeers` (worker) |")
    sec.append("|---:|---:|---:|---:|---:|")
    for k, a, b, size, wk in lp:
        sz = f"{size / 1024:,.0f} KiB" if size else "–"
        sec.append(f"| {k:,} | {ms(a)} | {ms(b)} | {sz} | {wk} |")
    for k, v in sorted(fails.items()):
        sec.append(f"| {k:,} | fails | fails | `{v.removeprefix('fails: ')}` | |")
    sec.append("")
    eu, el = load("scale-exec-unloaded.json"), load("scale-exec-loaded.json")
    if eu and el:
        sec.append(f"`d execOnPeer … true` through the leader, idle vs with {n:,} links heartbeating:\n")
        sec.append("| path | unloaded median | loaded median | loaded p90 | loaded / unloaded |")
        sec.append("|---|---:|---:|---:|---:|")
        for c in el["commands"]:
            u = cmd(eu, c["name"])
            sec.append(f"| {c['name']} | {ms(u['median']) if u else '–'} | {ms(c['median'])} | {ms(c['p90'])} | "
                       f"{ratio(c['median'], u['median'], 2) if u else '–'} |")
        sec.append("")
        sec.append("(`simulated worker`: the job goes over that worker's link; loadgen answers with exit 0 at once, "
                   "so the row is the leader's routing and the protocol, no process start on the target.)\n")
    if rec:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        t = [r["t"] for r in rec["series"]]
        ax.plot(t, [r["connected"] for r in rec["series"]], color="tab:blue", marker=".", label="workers online")
        ax.set_xlabel("seconds after the restart (the kill at %.1f s)" % ((sc["kill_ms"] - sc["restart_ms"]) / 1000))
        ax.set_ylabel("workers online")
        ax.set_ylim(0, n * 1.05)
        ax2 = ax.twinx()
        ax2.bar(t, [r["attempts_per_s"] for r in rec["series"]], width=0.6, alpha=0.3, color="tab:orange",
                label="connection attempts / s")
        ax2.bar(t, [r["ok_per_s"] for r in rec["series"]], width=0.3, alpha=0.6, color="tab:green",
                label="handshakes completed / s")
        ax2.set_ylabel("per second")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="center right")
        ax.set_title(f"{n:,} workers after the leader's kill -9 and restart")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT, "scale.png"), dpi=110)
        plt.close(fig)
        sec.append("![reconnection after the restart](scale.png)\n")
    if os.path.exists(os.path.join(OUT, "soak.png")) and soak:
        sec.append("![leader RSS in the soak](soak.png)\n")
    md += sec
    rss_at = r1 or sc.get("rss_after_cold_start_kib")
    res_txt = f"{mib(rss_at)} after {w:.0f} s idle" + (f", growing {grow:,.0f} KiB/s" if grow is not None else "")
    if proj:
        res_txt += f"; long run (soak): {mib(proj)}"
    summary.append(("4", f"leader RSS, {n:,} workers", res_txt, "< 200 MB",
                    verdict(rss_at is not None and rss_at * 1024 < 200e6 and (proj is None or proj * 1024 < 200e6))))
    summary.append(("4", "leader CPU while they heartbeat", f"{sc.get('idle_cpu_pct')} % of a core", "< 5 %",
                    verdict(sc.get("idle_cpu_pct", 100) < 5)))
    if rec:
        summary.append(("4", "all back after kill -9 + restart",
                        f"{rec['all_back_after_restart_ms'] / 1000:.1f} s; at most {rec['max_attempts_per_s']:,} attempts/s",
                        "< 15 s, no storm", verdict(rec["all_back_after_restart_ms"] < 15000)))
    big = f"listpeers_{n + 2}"
    if big in sc:
        if sc[big] == "ok":
            a = load(f"scale-listpeers-{n + 2}.json")
            v = cmd(a, "d listPeers")["median"]
            summary.append(("4", f"`d listPeers` with {n:,} peers", ms(v), "< 100 ms", verdict(v < 0.1)))
        else:
            summary.append(("4", f"`d listPeers` with {n:,} peers", "fails: " + sc[big].removeprefix("fails: "),
                            "< 100 ms", "**missed**"))

# ------------------------------------------------------------------ 5 footprint
if foot or client:
    sec = ["## 5. Client and daemon footprint\n", "| measure | value |", "|---|---|"]
    if "d_bytes" in foot:
        sec.append(f"| `d` binary (release, as built / stripped) | {foot['d_bytes'] / 2**20:.2f} MiB / "
                   f"{foot['d_stripped_bytes'] / 2**20:.2f} MiB |")
        sec.append(f"| `d-daemon` binary (as built / stripped) | {foot['daemon_bytes'] / 2**20:.2f} MiB / "
                   f"{foot['daemon_stripped_bytes'] / 2**20:.2f} MiB |")
    if client:
        for c in client["commands"]:
            sec.append(f"| `{c['name']}` median (p10–p90) | {ms(c['median'])} ({ms(c['p10'])}–{ms(c['p90'])}) |")
    if "rss_idle_leader_kib" in foot:
        sec.append(f"| daemon idle RSS: leader with {foot.get('rss_idle_links')} worker links | {mib(foot['rss_idle_leader_kib'])} |")
        sec.append(f"| daemon idle RSS: a worker (median / max of {foot.get('rss_idle_links')}) | "
                   f"{mib(foot['rss_idle_worker_median_kib'])} / {mib(foot['rss_idle_worker_max_kib'])} |")
    sec.append("")
    if client:
        sec.append(f"(`d listPeers` here: a registry of {foot.get('registry_peers', '?')} peers; from a worker the "
                   "question goes to the leader over WireGuard. The client rows are hyperfine -N, "
                   f"{client['rounds']} rounds × {client['runs']} runs.)\n")
        p = cmd(client, "d ping")
        lpl = cmd(client, "d listPeers (leader)")
        summary.append(("5", "`d` size; `d ping`; `d listPeers`; daemon idle RSS",
                        f"{foot.get('d_bytes', 0) / 2**20:.2f} MiB; {ms(p['median'])}; {ms(lpl['median'])}; "
                        f"worker {mib(foot.get('rss_idle_worker_median_kib'))}", "report", "–"))
    md += sec

# ------------------------------------------------------------------ assemble
head = ["# d benchmarks: results\n",
        "Written by `scripts/bench.sh` (do not edit by hand: run it again). Benchmarks print numbers; "
        "no test asserts on them.\n",
        "| machine | |", "|---|---|",
        f"| date (UTC) | {machine.get('date', '?')} |",
        f"| CPU | {machine.get('cpu', '?')}, {machine.get('nproc', '?')} CPUs (nproc) |",
        f"| memory | {machine.get('memory', '?')} |",
        f"| kernel / OS | {machine.get('kernel', '?')} / {machine.get('os', '?')} |",
        f"| d | {machine.get('d_version', '?')}, tree {machine.get('commit', '?')}; client {machine.get('client', 'as cargo built it')} |",
        f"| tools | {machine.get('ssh', '?')}; {machine.get('pdsh', '?')}; {machine.get('hyperfine', '?')}; "
        f"wireguard-go {machine.get('wireguard_go', '?')} |",
        f"| run | {'BENCH_QUICK (small version)' if str(machine.get('quick')) not in ('0', '', 'None') else 'full'}, "
        f"{config.get('duration_s', '?')} s |",
        f"| load average (1/5/15 min) | start {config.get('loadavg_start', '?')}; after the network part "
        f"{config.get('loadavg_after_net', '–')}; after the scale part {config.get('loadavg_after_scale', '–')} |",
        "| CPUs busy just before each part (2 s sample; other sessions share this machine) | " +
        (", ".join(f"{k.removeprefix('busy_before_')} {v} %" for k, v in config.items() if k.startswith("busy_before_"))
         or "–") + " |", ""]
head.append("## Summary\n")
head.append("| # | what | result | target | |")
head.append("|---|---|---|---|---|")
for row in summary:
    head.append("| " + " | ".join(str(x) for x in row) + " |")
head.append("")
analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")
tail = []
if os.path.exists(analysis):
    with open(analysis) as f:
        tail = ["", f.read().rstrip(), ""]
# Hand-written sections of later rounds (one file per round, bench/rounds/NN-name.md, in name
# order) follow the analysis unchanged, so that a run of bench.sh keeps them.
rounds_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "bench", "rounds")
if os.path.isdir(rounds_dir):
    for name in sorted(os.listdir(rounds_dir)):
        if name.endswith(".md"):
            with open(os.path.join(rounds_dir, name)) as f:
                tail += [f.read().rstrip(), ""]
with open(os.path.join(OUT, "RESULTS.md"), "w") as f:
    f.write("\n".join(head + md + tail).rstrip() + "\n")
print(f"report.py: wrote {os.path.join(OUT, 'RESULTS.md')}", file=sys.stderr)
