#!/usr/bin/env python3
"""Reading loadgen's output (JSON lines).

    scale.py event FILE EVENT AFTER_MS   print the t_ms of the first EVENT at or after AFTER_MS
    scale.py recovery FILE KILL_MS RESTART_MS   JSON summary of the reconnection after a restart
    scale.py timeline FILE RESTART_MS BACK_MS STEP_MS
                                      the storm after a restart, one line per STEP_MS: links up,
                                      handshakes completed and failed in that step (from loadgen's
                                      reports, which come every --report-ms)
"""
import json
import sys


def lines(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                pass  # a line being written


def recovery(path, kill_ms, restart_ms, workers=None):
    """Reconnection after a leader restart, from the per-second reports and events."""
    reports = [d for d in lines(path) if "event" not in d]
    events = [d for d in lines(path) if "event" in d]
    start = next((e for e in events if e["event"] == "start"), {})
    n = workers or start.get("workers")
    back = next((e["t_ms"] for e in events if e["event"] == "all_connected" and e["t_ms"] >= kill_ms), None)
    window = [r for r in reports if kill_ms <= r["t_ms"] <= (back or kill_ms + 120000) + 1500]
    per_s = lambda r, k: r[k] * 1000.0 / max(r["interval_ms"], 1)
    t99 = next((r["t_ms"] for r in window if r["t_ms"] >= restart_ms and r["connected"] >= 0.99 * n), None)
    return {
        "workers": n,
        "all_back_after_restart_ms": None if back is None else back - restart_ms,
        "all_back_after_kill_ms": None if back is None else back - kill_ms,
        "p99_back_after_restart_ms_upper": None if t99 is None else t99 - restart_ms,
        "max_attempts_per_s": round(max((per_s(r, "d_attempts") for r in window), default=0)),
        "max_handshakes_per_s": round(max((per_s(r, "d_ok") for r in window), default=0)),
        "max_failed_per_s": round(max((per_s(r, "d_failed") for r in window), default=0)),
        "attempts_total": sum(r["d_attempts"] for r in window),
        "series": [{"t": (r["t_ms"] - restart_ms) / 1000.0, "connected": r["connected"],
                    "attempts_per_s": per_s(r, "d_attempts"), "ok_per_s": per_s(r, "d_ok")} for r in window],
    }


def timeline(path, restart_ms, back_ms, step_ms):
    """Links up and handshakes per step from the restart until all are back (+ one step)."""
    reports = [d for d in lines(path) if "event" not in d and restart_ms - step_ms <= d["t_ms"] <= back_ms + step_ms]
    rows, cur = [], None
    for r in reports:
        b = (r["t_ms"] - restart_ms) // step_ms
        if cur is None or cur["step"] != b:
            cur = {"step": b, "t_s": b * step_ms / 1000.0, "connected": 0, "ok": 0, "failed": 0, "attempts": 0}
            rows.append(cur)
        cur["connected"] = r["connected"]
        cur["ok"] += r["d_ok"]
        cur["failed"] += r["d_failed"]
        cur["attempts"] += r["d_attempts"]
    return rows


def main():
    cmd = sys.argv[1]
    if cmd == "event":
        path, name, after = sys.argv[2], sys.argv[3], int(sys.argv[4])
        try:
            for d in lines(path):
                if d.get("event") == name and d["t_ms"] >= after:
                    print(d["t_ms"])
                    return
        except FileNotFoundError:
            pass
    elif cmd == "recovery":
        print(json.dumps(recovery(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])), indent=1))
    elif cmd == "timeline":
        rows = timeline(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        print(f"{'t (s)':>6} {'linked':>7} {'ok':>6} {'failed':>6} {'tries':>6}")
        for r in rows:
            print(f"{r['t_s']:>6.2f} {r['connected']:>7} {r['ok']:>6} {r['failed']:>6} {r['attempts']:>6}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
