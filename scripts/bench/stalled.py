#!/usr/bin/env python3
"""stalled.py D SOCKET PEER N TARGET_PID REQUESTER_PID: start N `d execOnPeer`
clients on SOCKET running `yes` on PEER, their stdout a pipe never read (stalled
readers), wait until the daemons' memory stops growing, print the peak RSS
(VmHWM) of the target and requester daemons, then end the clients (by PID)."""
import subprocess
import sys
import time

d, sock, peer, n, target, requester = sys.argv[1:7]
n = int(n)


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


clients = []
try:
    for _ in range(n):
        clients.append(subprocess.Popen(
            [d, "--socket", sock, "execOnPeer", "--peer", peer, "--directory", "/",
             "--shellCmd", "exec yes 0123456789abcdefghijklmnopqrstuvwxyz"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
    last, stable, t0 = None, 0, time.time()
    while time.time() - t0 < 120:
        time.sleep(1)
        now = (status(target, "VmRSS"), status(requester, "VmRSS"))
        stable = stable + 1 if now == last else 0
        last = now
        if stable >= 5:
            break
    running = sum(1 for c in clients if c.poll() is None)
    print(f"{n} stalled readers ({running} clients still blocked) after {time.time() - t0:.0f} s:")
    print(f"  target    ({peer}) peak RSS {status(target, 'VmHWM') / 1024:.1f} MiB, now {status(target, 'VmRSS') / 1024:.1f} MiB")
    print(f"  requester         peak RSS {status(requester, 'VmHWM') / 1024:.1f} MiB, now {status(requester, 'VmRSS') / 1024:.1f} MiB")
finally:
    for c in clients:
        c.kill()
    for c in clients:
        c.wait()
