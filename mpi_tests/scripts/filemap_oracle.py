"""filemap_oracle.py - the reference's file layout helpers, in Python.

The oracle of mpi_tests/test_filemap.c.  It follows the reference module's
documented behaviour (../shared/reference/REFERENCE.md section 5):

    python3 filemap_oracle.py names < names.json
        stdin: a JSON list of file names.  stdout: a JSON list, per name,
        the 1-based index its base name carries, or 0 when it is not
        recognised ("model.safetensors" is 1; else re.search of
        r"-(\\d+)-of-(\\d+)\\.safetensors$" with 1 <= index <= count).

    python3 filemap_oracle.py map DIR < rules.json
        stdin: {"rules": [[pattern, replacement], ...]} (a key map, applied
        as the reference's _get_key_renaming_mapping: the first rule whose
        re.subn replaces something gives the new name).  stdout:
        {"map": {new name: index}, "fallback": true|false}: the tensor
        names of DIR's model.safetensors.index.json (else of the headers
        of its *.safetensors files) mapped to their files' indices; when
        the recognised indices are not exactly 1..N for N > 1 distinct
        files, the files are numbered 1..N in sorted name order instead
        ("fallback": true).  A later name overwrites an earlier one, as in
        a Python dict.
"""
import json
import os
import re
import struct
import sys


def file_index(filename):
    """(index, recognised) as the reference reads a file name."""
    base = filename.split("/")[-1]
    if base == "model.safetensors":
        return 1, True
    m = re.search(r"-(\d+)-of-(\d+)\.safetensors$", base)
    if m:
        idx, total = int(m.group(1)), int(m.group(2))
        if 1 <= idx <= total:
            return idx, True
    return 1, False


def rename(rules, key):
    for pattern, replacement in rules:
        new_key, n = re.subn(pattern, replacement, key)
        if n > 0:
            return new_key
    return key


def header_names(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return [k for k in header if k != "__metadata__"]


def pairs(directory):
    """(tensor name, file name) pairs of the reference model."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return list(json.load(f).get("weight_map", {}).items())
    out = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            out += [(t, name) for t in header_names(os.path.join(directory, name))]
    return out


def layout(directory, rules):
    fqn_index, fqn_file, file_status = {}, {}, {}
    for fqn, filename in pairs(directory):
        fqn = rename(rules, fqn)
        idx, parsed = file_index(filename)
        fqn_index[fqn] = idx
        fqn_file[fqn] = filename
        file_status[filename] = (idx, parsed)
    files = set(file_status)
    parsed = {i for i, ok in file_status.values() if ok}
    fallback = len(files) > 1 and parsed != set(range(1, len(files) + 1))
    if fallback:
        dense = {f: i for i, f in enumerate(sorted(files), start=1)}
        fqn_index = {fqn: dense[f] for fqn, f in fqn_file.items()}
    return {"map": fqn_index, "fallback": fallback}


def main():
    if sys.argv[1] == "names":
        names = json.load(sys.stdin)
        out = []
        for n in names:
            idx, ok = file_index(n)
            out.append(idx if ok else 0)
        json.dump(out, sys.stdout)
    elif sys.argv[1] == "map":
        rules = json.load(sys.stdin).get("rules", [])
        json.dump(layout(sys.argv[2], rules), sys.stdout)
    else:
        sys.exit("usage: filemap_oracle.py names | map DIR")


if __name__ == "__main__":
    main()
