"""keymap_oracle.py - what Python's own `re` makes of key maps.

The oracle of mpi_tests/test_keymap.c.  Reads JSON on stdin:

    {"maps": [{"rules": [[pattern, replacement], ...], "keys": [key, ...]},
              ...]}

and prints JSON on stdout, one entry per map, in order:

    {"maps": [{"error": null | {"rule": i, "type": "error", "message": m},
               "results": [new_key, ...]}, ...]}

A map renames a key as the reference's _get_key_renaming_mapping does: the
first rule for which re.subn(pattern, replacement, key) makes at least one
replacement gives the new key; no match leaves the key unchanged.

"error" is the first rule (0-based) that Python refuses: re.subn on an empty
string compiles the pattern and, when the replacement has a backslash, the
template, whether or not anything matches.  "results" is empty then.
"""
import json
import re
import sys
import warnings


def check_rule(pattern, replacement):
    with warnings.catch_warnings():
        # Forms deprecated in 3.11 (e.g. \g<+1>) are errors for hfdcp, as
        # in later Pythons; FutureWarnings ("possible nested set") are not.
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        re.subn(pattern, replacement, "")


def rename(rules, key):
    for pattern, replacement in rules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            new_key, n = re.subn(pattern, replacement, key)
        if n > 0:
            return new_key
    return key


def run(spec):
    out = []
    for m in spec["maps"]:
        rules = [tuple(r) for r in m["rules"]]
        entry = {"error": None, "results": []}
        for i, (pattern, replacement) in enumerate(rules):
            try:
                check_rule(pattern, replacement)
            except Exception as e:  # re.error, IndexError, ValueError, ...
                entry["error"] = {"rule": i, "type": type(e).__name__,
                                  "message": str(e)}
                break
        if entry["error"] is None:
            entry["results"] = [rename(rules, k) for k in m["keys"]]
        out.append(entry)
    return {"maps": out}


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout, ensure_ascii=True)
    sys.stdout.write("\n")
