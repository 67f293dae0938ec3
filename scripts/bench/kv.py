#!/usr/bin/env python3
"""kv.py FILE KEY=VALUE...: merge into the JSON object in FILE (created if missing).
A VALUE that parses as JSON (numbers, true, null, ...) is stored as such, else as a string."""
import json
import os
import sys

path = sys.argv[1]
data = {}
if os.path.exists(path):
    with open(path) as f:
        data = json.load(f)
for arg in sys.argv[2:]:
    k, _, v = arg.partition("=")
    try:
        data[k] = json.loads(v)
    except ValueError:
        data[k] = v
with open(path + ".tmp", "w") as f:
    json.dump(data, f, indent=1)
os.replace(path + ".tmp", path)
