#!/usr/bin/env python3
"""Lists every fn in a Rust tree over N lines (signature to closing brace); the house rule is 80.

Usage: scripts/fn-length.py src [80]. Exits 1 when one is over.
"""
import os, re, sys
root = sys.argv[1]; limit = int(sys.argv[2]) if len(sys.argv) > 2 else 80
fn_re = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"[^"]*"\s+)?fn\s+(\w+)')
bad = 0
for dirpath, _, files in os.walk(root):
    for f in sorted(files):
        if not f.endswith('.rs'): continue
        path = os.path.join(dirpath, f)
        lines = open(path, encoding='utf-8').read().split('\n')
        i = 0
        while i < len(lines):
            m = fn_re.match(lines[i])
            if not m: i += 1; continue
            indent = len(lines[i]) - len(lines[i].lstrip())
            # find the closing brace at the same indentation
            j = i
            while j < len(lines):
                s = lines[j]
                if j > i and s.strip() == '}' and len(s) - len(s.lstrip()) == indent: break
                if j == i or j > i:
                    if s.rstrip().endswith(';') and '{' not in ''.join(lines[i:j+1]): break  # declaration only
                j += 1
            n = j - i + 1
            if n > limit:
                bad += 1; print(f"{path}:{i+1}: fn {m.group(7)} is {n} lines")
            i += 1
print(f"{bad} function(s) over {limit} lines", file=sys.stderr)
sys.exit(1 if bad else 0)
