#!/usr/bin/env python3
"""Print, in dependency order (deps first), the module paths relative to
/lib/modules/ for the named modules and everything they depend on, reading
`depends=` from each .ko's .modinfo section (objcopy). Used by
qemu-smoke.sh to make /etc/cairn/modules the way the builder is meant to.

usage: modclosure.py ROOT KVER MODULE...   (ROOT contains lib/modules/KVER)
"""
import os, subprocess, sys, tempfile

root, kver, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
base = os.path.join(root, "lib/modules", kver)
index = {}
for d, _, files in os.walk(base):
    for f in files:
        if f.endswith(".ko"):
            index[f[:-3].replace("-", "_")] = os.path.relpath(os.path.join(d, f), os.path.join(root, "lib/modules"))

def depends(rel):
    with tempfile.NamedTemporaryFile() as t:
        subprocess.run(["objcopy", "-O", "binary", "--only-section=.modinfo",
                        os.path.join(root, "lib/modules", rel), t.name], check=True)
        for field in open(t.name, "rb").read().split(b"\0"):
            if field.startswith(b"depends="):
                return [x for x in field[8:].decode().split(",") if x]
    return []

order, seen = [], set()
def visit(name):
    name = name.replace("-", "_")
    if name in seen:
        return
    seen.add(name)
    rel = index.get(name)
    if rel is None:
        return  # built in
    for d in depends(rel):
        visit(d)
    order.append(rel)

for w in wanted:
    visit(w)
print(f"# {len(order)} modules for {kver}, dependencies first")
print("\n".join(order))
