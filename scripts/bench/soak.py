#!/usr/bin/env python3
"""soak.py --run DIR [--out DIR] [--live SECS]: the counts of a soak run
(scripts/bench/soak.sh): what d reported for each job against the job's own
marker (RUN/ran/JOB.HOST: `start`, then `end STATUS`), the audit rows read from
each daemon's d.db (RUN/HOST/audit.tsv) against the markers, and the RSS / fd
samples (RUN/samples.tsv: time, host, pid, VmRSS KiB, fds, load).

A "unit" is one job on one target: a single exec is one, a fan-out one per peer
it reports. --live prints one line over the jobs finished so far. Standard
library only."""
import argparse
import collections
import glob
import json
import os
import re

MUST_ZERO = ("ok_bad", "status_bad", "exit0_lost", "ran_twice", "wrong_host", "offline_ran")


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def norm(text):
    """One reason per kind: peer names, addresses, numbers and ids folded."""
    line = ""
    for ln in (text or "").splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("hint:") or ln.startswith("d: warning"):
            continue
        line = ln
        break
    line = re.sub(r"^(d: )?(error: )?", "", line)
    line = re.sub(r"/tmp/soak-[^/ ]+/", "RUN/", line)
    line = re.sub(r"\b(lead|w\d+)\b", "PEER", line)
    line = re.sub(r"\d+\.\d+\.\d+\.\d+(:\d+)?", "ADDR", line)
    line = re.sub(r"\d+(\.\d+)?\s*(ms|s)\b", "N\\2", line)
    line = re.sub(r"\b\d+\b", "N", line)
    return line[:160] or "(no message)"


def markers(run):
    """{(job, host): (starts, [end statuses])}."""
    m = {}
    for p in glob.glob(os.path.join(run, "ran", "J*.*")):
        job, host = os.path.basename(p).split(".", 1)
        txt = read(p) or ""
        starts = sum(1 for ln in txt.splitlines() if ln == "start")
        ends = [int(ln.split()[1]) for ln in txt.splitlines() if ln.startswith("end ")]
        m[(job, host)] = (starts, ends)
    return m


def jobs(run, live):
    out = []
    for meta in sorted(glob.glob(os.path.join(run, "jobs", "J*.meta"))):
        base = meta[: -len(".meta")]
        f = (read(meta) or "").rstrip("\n").split("\t")
        if len(f) < 7:
            continue
        rcl = read(base + ".rc")
        if rcl is None:
            if live:
                continue
            rc, t_end = None, None
        else:
            a = rcl.split()
            rc, t_end = int(a[0]), float(a[1])
        out.append({
            "job": f[0], "t": float(f[1]), "from": f[2], "kind": f[3], "to": f[4],
            "sleep": int(f[5]), "status": int(f[6]), "rc": rc, "t_end": t_end,
            "out": read(base + ".out") or "", "err": read(base + ".err") or "",
        })
    return out


def single_report(j):
    """('exit', code) | ('error', reason) for a single exec."""
    rc = j["rc"]
    if rc is None:
        return ("error", "client never ended")
    dur = (j["t_end"] or j["t"]) - j["t"]
    if rc in (143, 124, 137) and dur >= 149:
        return ("error", "client hung: ended by the soak's 150 s timeout")
    if j["kind"] == "at_json":
        try:
            doc = json.loads(j["out"])
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            if doc.get("error"):
                return ("error", norm(doc["error"]))
            if doc.get("timed_out"):
                return ("error", "timed out")
            if doc.get("signal") is not None:
                return ("error", "killed by signal %s" % doc["signal"])
            if doc.get("exit_code") is not None and rc == doc["exit_code"]:
                return ("exit", rc)
            return ("error", "json exit_code %s but d exited %s" % (doc.get("exit_code"), rc))
    if 0 <= rc <= 3:
        return ("exit", rc)
    return ("error", norm(j["err"]) if rc == 255 else "%s (exit %d)" % (norm(j["err"]), rc))


def fanout_units(j, names):
    """{peer: report} for a fan-out, or None when d failed before any peer."""
    units = {}
    if j["kind"] == "all_json":
        try:
            doc = json.loads(j["out"])
        except ValueError:
            return None
        if not isinstance(doc, list):
            return None
        for e in doc:
            p = e.get("peer")
            if e.get("error") == "offline":
                units[p] = ("offline", None)
            elif e.get("error"):
                units[p] = ("error", norm(e["error"]))
            elif e.get("timed_out"):
                units[p] = ("error", "timed out")
            elif e.get("signal") is not None:
                units[p] = ("error", "killed by signal %s" % e["signal"])
            elif e.get("code") is not None:
                units[p] = ("exit", e["code"])
            else:
                units[p] = ("error", "no status (%s)" % e.get("exit_code"))
        return units
    pat = re.compile(r"^(%s)\s{2,}(.*)$" % "|".join(re.escape(n) for n in names))
    for ln in j["err"].splitlines():
        mt = pat.match(ln)
        if not mt:
            continue
        p, word = mt.group(1), mt.group(2).strip()
        if word == "ok":
            units[p] = ("exit", 0)
        elif re.fullmatch(r"exit \d+", word):
            units[p] = ("exit", int(word.split()[1]))
        elif word.startswith("offline"):
            units[p] = ("offline", None)
        else:
            units[p] = ("error", norm(word))
    return units or None


def classify(run, names, live=False):
    # Jobs first: a job's .rc is written after its end marker, so markers read
    # second are never older than the statuses (while the run goes on).
    js = jobs(run, live)
    mk = markers(run)
    c = collections.Counter()
    reasons = collections.Counter()
    failed_ran = collections.Counter()
    bad = []
    per_min = collections.defaultdict(collections.Counter)
    seen_units = set()
    t0 = min((j["t"] for j in js), default=0)
    for j in js:
        minute = int((j["t"] - t0) // 60)
        pm = per_min[minute]
        c["invocations"] += 1
        pm["invocations"] += 1
        c["kind_" + j["kind"]] += 1
        if j["kind"].startswith("all"):
            units = fanout_units(j, names)
            if units is None:
                why = j["err"]
                try:
                    doc = json.loads(j["out"])
                    if isinstance(doc, dict) and doc.get("error"):
                        why = doc["error"]
                except ValueError:
                    pass
                r = "fan-out failed as a whole: %s (exit %s)" % (norm(why), j["rc"])
                reasons[r] += 1
                c["fanout_whole_failed"] += 1
                units = {}
                for h in names:
                    if (j["job"], h) in mk:
                        failed_ran[r] += 1
        else:
            units = {j["to"]: single_report(j)}
        any_lost = False
        for peer, rep in units.items():
            seen_units.add((j["job"], peer))
            starts, ends = mk.get((j["job"], peer), (0, []))
            c["units"] += 1
            pm["units"] += 1
            if starts > 1:
                c["ran_twice"] += 1
                bad.append(("ran_twice", j["job"], peer, rep, starts, ends))
            if rep[0] == "offline":
                c["offline_skipped"] += 1
                if starts:
                    c["offline_ran"] += 1
                    bad.append(("offline_ran", j["job"], peer, rep, starts, ends))
                continue
            if rep[0] == "exit":
                code = rep[1]
                if ends == [code] and starts == 1:
                    c["good"] += 1
                    pm["good"] += 1
                    c["good_ok" if code == 0 else "good_fail_status"] += 1
                    continue
                any_lost = True
                if code == 0:
                    c["ok_bad"] += 1
                    pm["MUST0"] += 1
                    bad.append(("ok_bad", j["job"], peer, rep, starts, ends))
                else:
                    c["status_bad"] += 1
                    pm["MUST0"] += 1
                    bad.append(("status_bad", j["job"], peer, rep, starts, ends))
                continue
            any_lost = True
            c["failed"] += 1
            pm["failed"] += 1
            reasons[rep[1]] += 1
            state = "ended" if ends else ("started" if starts else "not run")
            failed_ran["%s [job %s]" % (rep[1], state)] += 1
            c["failed_job_" + state.replace(" ", "_")] += 1
        if j["rc"] == 0 and (any_lost or not units):
            c["exit0_lost"] += 1
            pm["MUST0"] += 1
            bad.append(("exit0_lost", j["job"], j["to"], j["rc"], None, None))
    # A marker no unit accounts for: the job ran on a host d did not name.
    for (job, host), (starts, ends) in mk.items():
        if (job, host) in seen_units:
            continue
        j = next((x for x in js if x["job"] == job), None)
        if j is None or (live and j["rc"] is None):
            continue
        if j["kind"].startswith("all"):
            continue  # a fan-out that failed as a whole: counted above
        c["wrong_host"] += 1
        bad.append(("wrong_host", job, host, j["to"], starts, ends))
    return js, mk, c, reasons, failed_ran, bad, per_min


def audit(run, names, mk, asked_by):
    """Per host: jobs with a marker there vs rows on that host's side."""
    res = {}
    for h in names:
        txt = read(os.path.join(run, h, "audit.tsv"))
        if txt is None:
            res[h] = None
            continue
        rows = collections.Counter()
        errs = {}
        err_rows = collections.Counter()
        wrong_req = []
        req_rows = 0
        for ln in txt.splitlines():
            f = ln.split("\t")
            if len(f) < 10:
                continue
            side, code, sig, error, command = f[2], f[5], f[6], f[8], "\t".join(f[9:])
            mt = re.search(r"/ran/(J\d+)\.", command)
            if not mt:
                continue
            if side == "requester":
                req_rows += 1
                continue
            rows[mt.group(1)] += 1
            if asked_by.get(mt.group(1)) not in (None, f[3]):
                wrong_req.append("%s (row: %s, asked by %s)" % (mt.group(1), f[3], asked_by[mt.group(1)]))
            if error:
                errs[mt.group(1)] = norm(error)
                err_rows[norm(error)] += 1
            elif sig:
                errs[mt.group(1)] = "ended by signal %s" % sig
            else:
                errs[mt.group(1)] = "exit %s" % code
        ran = {job for (job, host) in mk if host == h}
        res[h] = {
            "rows": sum(rows.values()), "jobs_with_row": len(rows), "markers": len(ran),
            "requester_rows": req_rows,
            "marker_no_row": sorted(ran - set(rows)),
            "row_no_marker": sorted(set(rows) - ran),
            "dup_rows": sorted(k for k, v in rows.items() if v > 1),
            "row_errors": err_rows,
            "wrong_requester": wrong_req,
            "errs": errs,
        }
    return res


def samples(run):
    per = collections.OrderedDict()
    txt = read(os.path.join(run, "samples.tsv")) or ""
    for ln in txt.splitlines():
        f = ln.split("\t")
        if len(f) < 5 or not f[3] or not f[4]:
            continue
        t, h, pid, rss, fds = int(f[0]), f[1], f[2], int(f[3]), int(f[4])
        per.setdefault((h, pid), []).append((t, rss, fds))
    return per


def fmt_reasons(counter, indent="    "):
    return "".join("%s%5d  %s\n" % (indent, n, r) for r, n in counter.most_common())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out")
    ap.add_argument("--live", type=int)
    a = ap.parse_args()
    names = sorted({os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(a.run, "*", "log"))},
                   key=lambda n: (n != "lead", n))
    js, mk, c, reasons, failed_ran, bad, per_min = classify(a.run, names, live=a.live is not None)
    must = sum(c[k] for k in MUST_ZERO)
    if a.live is not None:
        print("soak t=%4ds: %d jobs finished (%d units): good %d, failed/lost %d, MUST-be-0 %d%s" % (
            a.live, c["invocations"], c["units"], c["good"], c["failed"], must,
            "  <-- " + ", ".join("%s %d" % (k, c[k]) for k in MUST_ZERO if c[k]) if must else ""))
        return
    meta = read(os.path.join(a.run, "meta")) or ""
    faults = [ln.split("\t") for ln in (read(os.path.join(a.run, "faults.tsv")) or "").splitlines()]
    o = []
    o.append("# soak with faults\n" + meta)
    fk = collections.Counter(f[1] for f in faults if len(f) > 2 and f[1] != "heal")
    o.append("faults injected: %s\n" % (", ".join("%s %d" % kv for kv in sorted(fk.items())) or "none"))
    o.append("\njobs started (d invocations): %d  (%s)\n" % (
        c["invocations"], ", ".join("%s %d" % (k[5:], c[k]) for k in sorted(c) if k.startswith("kind_"))))
    o.append("units (one job on one target; a fan-out has one per peer): %d\n" % c["units"])
    o.append("  good (reported status = the marker's, ran once): %d  (ok %d, failure status 1-3 reported %d)\n" % (
        c["good"], c["good_ok"], c["good_fail_status"]))
    o.append("  reported ok but did not run / not with 0 (MUST be 0): %d\n" % c["ok_bad"])
    o.append("  reported status 1-3 the job did not end with (MUST be 0): %d\n" % c["status_bad"])
    o.append("  exit 0 for a d run with a lost or failed job in it (MUST be 0): %d\n" % c["exit0_lost"])
    o.append("  a job run twice (MUST be 0): %d;  on a host d did not send it to (MUST be 0): %d\n" % (
        c["ran_twice"], c["wrong_host"]))
    o.append("  fan-out peers skipped as offline: %d (of them run anyway, MUST be 0: %d)\n" % (
        c["offline_skipped"], c["offline_ran"]))
    o.append("  reported failed/lost with a reason: %d  (the job there: not run %d, started but not ended %d, ended %d)\n" % (
        c["failed"], c["failed_job_not_run"], c["failed_job_started"], c["failed_job_ended"]))
    o.append(fmt_reasons(reasons))
    if c["fanout_whole_failed"]:
        o.append("  (fan-outs that failed as a whole, before any peer: %d)\n" % c["fanout_whole_failed"])
    o.append("  failed/lost, by reason and what the marker shows:\n")
    o.append(fmt_reasons(failed_ran))
    if bad:
        o.append("\nMUST-be-0 cases (first 20): kind job peer report starts ends\n")
        for b in bad[:20]:
            o.append("  %s\n" % (b,))

    au = audit(a.run, names, mk, {j["job"]: j["from"] for j in js})
    o.append("\naudit rows (target side, each host's d.db after a clean stop) vs markers (jobs that started there):\n")
    o.append("  %-5s %7s %7s %9s %12s %12s %8s %9s\n" % ("host", "markers", "rows", "req-rows", "marker-norow", "row-nomarker", "dup-rows", "other-req"))
    for h in names:
        r = au[h]
        if r is None:
            o.append("  %-5s (no audit.tsv)\n" % h)
            continue
        o.append("  %-5s %7d %7d %9d %12d %12d %8d %9d\n" % (h, r["markers"], r["rows"], r["requester_rows"],
                                                            len(r["marker_no_row"]), len(r["row_no_marker"]),
                                                            len(r["dup_rows"]), len(r["wrong_requester"])))
    for h in names:
        r = au[h]
        if not r:
            continue
        if r["row_errors"]:
            o.append("  %s rows with an error column:\n%s" % (h, fmt_reasons(r["row_errors"], "      ")))
        for job in r["marker_no_row"][:10]:
            o.append("  %s: marker without a row: %s %s\n" % (h, job, mk.get((job, h))))
        for w in r["wrong_requester"][:10]:
            o.append("  %s: row naming another requester than the one that asked: %s\n" % (h, w))
        for job in r["row_no_marker"][:10]:
            o.append("  %s: row without a marker: %s (%s)\n" % (h, job, r["errs"].get(job, "no error")))

    per = samples(a.run)
    o.append("\ndaemon RSS (MiB) and open fds, sampled every 10 s, per process (a restart is a new PID):\n")
    o.append("  %-5s %8s %6s %7s %7s %7s %7s %5s %5s %5s\n" % ("host", "pid", "life_s", "rss0", "rss_end", "rss_max", "growth", "fd0", "fdend", "fdmax"))
    for (h, pid), s in per.items():
        life = s[-1][0] - s[0][0]
        o.append("  %-5s %8s %6d %7.1f %7.1f %7.1f %+7.1f %5d %5d %5d\n" % (
            h, pid, life, s[0][1] / 1024, s[-1][1] / 1024, max(x[1] for x in s) / 1024,
            (s[-1][1] - s[0][1]) / 1024, s[0][2], s[-1][2], max(x[2] for x in s)))
    # Flat? For each process that lived at least half the run: the last third's
    # median against the first third's median (past the first minute's warm-up).
    span = max((s[-1][0] - s[0][0] for s in per.values()), default=0)
    for (h, pid), s in per.items():
        life = s[-1][0] - s[0][0]
        if life < max(span / 2, 60) or len(s) < 9:
            continue
        k = len(s) // 3
        first = sorted(x[1] for x in s[1:k + 1])[k // 2]
        last = sorted(x[1] for x in s[-k:])[k // 2]
        f_first = sorted(x[2] for x in s[1:k + 1])[k // 2]
        f_last = sorted(x[2] for x in s[-k:])[k // 2]
        o.append("  %s (PID %s, %d s): RSS median first third %.1f -> last third %.1f MiB (%+.1f %%); fds %d -> %d\n" % (
            h, pid, life, first / 1024, last / 1024, 100.0 * (last - first) / max(first, 1), f_first, f_last))

    o.append("\nper minute (by start time): invocations units good failed MUST0  faults that minute\n")
    t0 = min((j["t"] for j in js), default=0)
    fmin = collections.defaultdict(list)
    for f in faults:
        if len(f) > 2 and f[1] != "heal":
            fmin[int((float(f[0]) - t0) // 60)].append("%s %s" % (f[1], f[2]))
    for m in sorted(per_min):
        pm = per_min[m]
        o.append("  %3d %5d %5d %5d %5d %5d  %s\n" % (m, pm["invocations"], pm["units"], pm["good"], pm["failed"], pm["MUST0"], ", ".join(fmin.get(m, []))))
    o.append("\nMUST-be-0 total: %d\n" % must)
    text = "".join(o)
    print(text, end="")
    if a.out:
        with open(os.path.join(a.out, "counts.json"), "w") as f:
            json.dump({"counts": dict(c), "reasons": dict(reasons), "must_zero": must,
                       "audit": {h: (None if r is None else {k: v for k, v in r.items() if k not in ("errs", "row_errors")})
                                 for h, r in au.items()},
                       "rss": {"%s/%s" % k: v for k, v in per.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
