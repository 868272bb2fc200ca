#!/usr/bin/python3
"""doc_check.py [options] MARKDOWN...

The code blocks of the documentation (README.md, docs/guide.md) as a test:
every ```c and ```fortran block is compiled against the build tree, and the
blocks a reader runs are run, in the order of the text, in one scratch
directory per Markdown file, as a user following it would.

  1. Compile.  C with the build's MPI C wrapper ($HFDCP_MPICC), -std=c11
     -Wall -Werror, against include/ and libhfdcp; Fortran with its MPI
     Fortran wrapper ($HFDCP_MPIFORT), -std=f2018 -Wall -Werror (unused
     dummy arguments allowed, as C's -Wall allows unused parameters),
     against the build's module directory and libhfdcp_f.  A C block with a
     main() and a Fortran block with a `program` statement are compiled as
     they are.
     Any other block is a fragment, wrapped into a program:
       C: the standard headers (stdint, stdio, stdlib, string), mpi.h and
          hfdcp.h, the block's own #include lines, then main() calling
          MPI_Init, { prelude, block, epilogue }, MPI_Finalize.  `#line`
          directives make the compiler name the Markdown file and line.
          DOC_CHECK(cond) is defined for epilogues: it prints the condition
          and calls MPI_Abort when cond is false.
       Fortran: `program NAME`, then the specification statements (use,
          implicit, declarations with `::`) of the prelude, the block and
          the epilogue, the `use` statements first, `implicit none` unless
          there is one, then the executable statements of the prelude, the
          block and the epilogue between MPI_Init and MPI_Finalize (called
          through external subroutines, so that the program sees only the
          modules it uses itself: nothing is added to what the block shows),
          and the subroutines and functions of the block after `contains`.
     A line that is only `...` is an elision (the rest of the user's
     program) and is dropped.  Python blocks are syntax-checked (compile()).
     Other languages (sh, cmake, json, text) are not checked, and need no
     annotation (one on them is an error, as is one on a Python block with
     another key than skip).

  2. Run.  A block annotated `run: N` is run with $HFDCP_MPIEXEC -n N
     $HFDCP_MPIEXEC_FLAGS in the file's scratch directory, after every
     block is compiled, in the order of the text; it must exit with status 0.
     Its `before:` commands run first and its `check:` and `files:`
     checks after it.  The first failure stops the file's runs.

Annotations: an HTML comment (invisible when rendered) right before the
block's opening fence, with only blank lines between:

    <!-- doc-test: KEY: VALUE -->      e.g. <!-- doc-test: skip (needs a GPU) -->

or over several lines, one `KEY:` starting each entry, the lines that
follow (up to the next KEY:) continuing its value:

    <!-- doc-test
    program: save_c
    run: 4
    prelude: int rank, size;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    epilogue: DOC_CHECK(rc == HFDCP_OK);
    -->

Keys (all optional; prelude, epilogue, top, replace, before, check and
files may be repeated, and add up):
  skip: REASON     not compiled nor run, with the reason printed (also
                   written `skip (REASON)`); a C or Fortran block that cannot
                   be compiled must say why
  program: NAME    the program's name (executable, Fortran program unit);
                   default <markdown file stem>_<line of the fence>
  run: N           run on N ranks (the count the text gives); without it
                   the block is compiled only
  prelude: CODE    code before the block: the declarations and set-up a
                   fragment uses without showing them (tp_rank, buffers).
                   Fortran: declarations and statements, sorted as above
  epilogue: CODE   code after the block: checks of what it did (C:
                   DOC_CHECK(cond); Fortran: if (...) error stop "...")
  top: CODE        C only: code at file scope, before main()
  replace: OLD => NEW
                   compile the block with the text OLD (which must occur in
                   it) replaced by NEW: a path of the author's machine by
                   one in the scratch directory, or an elided
                   `/* ... */` comment by the calls it stands for
  before: COMMAND  a bash command run in the scratch directory before the
                   program (e.g. making a reference model with the tool)
  check: COMMAND   a bash command run in the scratch directory after the
                   program; it must exit with 0
  files: PATH...   paths (relative to the scratch directory, shell
                   patterns allowed) that must exist after the run
In COMMANDs, `hfdcp` is the build's tool, `mpirun -np N ...` (or -n N)
launches with the build's launcher and flags, and `python3` is the Python
running this script.  The comment ends at the first `-->`, wherever it is.

Options:
  --include DIR        hfdcp.h's directory (the source tree's include/)
  --lib-dir DIR        the directory of libhfdcp (and libhfdcp_f)
  --fortran-mod-dir D  the directory of hfdcp.mod; without it the Fortran
                       blocks are reported as not compiled (no bindings)
  --tool PATH          the hfdcp tool
  --work DIR           scratch directory (emptied first; removed when every
                       check passed, kept for a look otherwise)
  --timeout S          seconds per compile or run (default 180)
  --root DIR           the Markdown files are named relative to DIR
Environment: HFDCP_MPICC, HFDCP_MPIFORT, HFDCP_MPIEXEC, HFDCP_MPIEXEC_FLAGS
(CTest sets them: HFDCP_SCRIPT_ENV in mpi_tests/CMakeLists.txt).

Exit status 0 when every block compiled and every run and check passed, 1
otherwise (every compile failure is reported, then the runs are not made).
"""
import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

KEYS = ("skip", "program", "run", "prelude", "epilogue", "top", "replace",
        "before", "check", "files")
REPEATABLE = ("prelude", "epilogue", "top", "replace", "before", "check", "files")
KEY_RE = re.compile(r"^(%s)\s*:\s?(.*)$" % "|".join(KEYS))
SKIP_PAREN_RE = re.compile(r"^skip\s*\((.*)\)\s*$")
ROOT = os.getcwd()  # --root: Markdown paths are shown relative to it
FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


class DocError(Exception):
    """A malformed annotation or block: reported as a failure."""


class Block:
    def __init__(self, path, line, lang, code, ann):
        self.path = path      # the Markdown file
        self.line = line      # 1-based line of the opening fence
        self.lang = lang
        self.code = code      # list of (line number, text)
        self.ann = ann        # key -> list of (line number, text)
        stem = os.path.splitext(os.path.basename(path))[0].lower()
        self.name = self.one("program") or "%s_%d" % (re.sub(r"\W", "_", stem), line)
        if not re.match(r"^[A-Za-z]\w*$", self.name):
            raise DocError("%s: program name '%s' is not an identifier" % (self.where(), self.name))
        self.exe = None

    def where(self):
        return "%s:%d" % (os.path.relpath(self.path, ROOT), self.line)

    def one(self, key):
        v = self.ann.get(key)
        return v[0][1].strip() if v else None

    def values(self, key):
        return self.ann.get(key, [])

    def ranks(self):
        v = self.one("run")
        if v is None:
            return None
        m = re.match(r"^(\d+)(\s+ranks?)?$", v)
        if not m or int(m.group(1)) < 1:
            raise DocError("%s: 'run: %s': expected a rank count" % (self.where(), v))
        return int(m.group(1))


def parse_annotation(lines, first):
    """lines: the comment's lines, the first starting with '<!-- doc-test'.
    first: its line number.  Returns key -> [(line, text)]."""
    body = []
    for i, text in enumerate(lines):
        if i == 0:
            text = re.sub(r"^\s*<!--\s*doc-test\s*:?", "", text)
        if "-->" in text:
            text = text[:text.index("-->")]
        body.append((first + i, text))
    ann = {}
    key = None
    for lineno, text in body:
        s = text.strip()
        m = SKIP_PAREN_RE.match(s)
        if m:
            key = "skip"
            ann.setdefault(key, []).append([lineno, m.group(1)])
            continue
        m = KEY_RE.match(s)
        if m:
            key = m.group(1)
            if key in ann and key not in REPEATABLE:
                raise DocError("line %d: '%s' given twice" % (lineno, key))
            rest = m.group(2)
            # The value starts on this line, or on the next when it is empty.
            ann.setdefault(key, []).append([lineno if rest.strip() else lineno + 1, rest])
            continue
        if key is None:
            if s:
                raise DocError("line %d: '%s': expected KEY: (one of %s)"
                               % (lineno, s, ", ".join(KEYS)))
            continue
        v = ann[key][-1]
        v[1] = v[1] + "\n" + text if v[1].strip() else text
    # Dedent multi-line values (their first line may sit after the key).
    out = {}
    for k, vals in ann.items():
        out[k] = []
        for lineno, text in vals:
            vlines = text.split("\n")
            indents = [len(l) - len(l.lstrip()) for l in vlines[1:] if l.strip()]
            cut = min(indents) if indents else 0
            vlines = [vlines[0].strip()] + [l[cut:].rstrip() for l in vlines[1:]]
            while vlines and not vlines[-1].strip():
                vlines.pop()
            out[k].append((lineno, "\n".join(vlines)))
    if "skip" in out and len(out) > 1:
        raise DocError("line %d: 'skip' with other keys" % first)
    if "skip" in out and not out["skip"][0][1].strip():
        raise DocError("line %d: 'skip' needs a reason" % first)
    return out


def parse_markdown(path):
    """Every fenced block of path, with its annotation."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks = []
    pending = None  # (line, annotation) waiting for its block
    i = 0
    while i < len(lines):
        text = lines[i]
        if text.strip().startswith("<!-- doc-test"):
            start = i
            while "-->" not in lines[i]:
                i += 1
                if i == len(lines):
                    raise DocError("%s:%d: unterminated doc-test comment" % (path, start + 1))
            if pending:
                raise DocError("%s:%d: doc-test comment not followed by a code block"
                               % (path, pending[0]))
            try:
                pending = (start + 1, parse_annotation(lines[start:i + 1], start + 1))
            except DocError as e:
                raise DocError("%s: %s" % (path, e))
            i += 1
            continue
        m = FENCE_RE.match(text)
        if m:
            indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
            start = i
            code = []
            i += 1
            while i < len(lines):
                c = lines[i]
                if c.strip().startswith(fence[0] * len(fence)) and not c.strip().strip(fence[0]) \
                        and len(c) - len(c.lstrip()) <= indent + 3:
                    break
                # Content of an indented fence loses the fence's indentation.
                strip = min(indent, len(c) - len(c.lstrip()))
                code.append((i + 1, c[strip:]))
                i += 1
            if i == len(lines):
                raise DocError("%s:%d: unclosed code fence" % (path, start + 1))
            ann = pending[1] if pending else {}
            pending = None
            blocks.append(Block(path, start + 1, lang, code, ann))
            i += 1
            continue
        if pending and text.strip():
            raise DocError("%s:%d: doc-test comment not followed by a code block"
                           % (path, pending[0]))
        i += 1
    if pending:
        raise DocError("%s:%d: doc-test comment not followed by a code block" % (path, pending[0]))
    return blocks


def substituted(block):
    """The block's lines after its `replace:` entries and without `...`
    elisions: [(markdown line or None, text)]."""
    code = [(n, t) for n, t in block.code if t.strip() != "..."]
    for lineno, rep in block.values("replace"):
        parts = re.split(r"\s=>(?:\s|$)", rep, 1)
        if len(parts) != 2:
            raise DocError("%s (annotation line %d): replace needs 'OLD => NEW'"
                           % (block.where(), lineno))
        old, new = parts
        old, new = old.strip(), new.strip()
        for k, (n, t) in enumerate(code):
            if old in t:
                new_lines = t.replace(old, new, 1).split("\n")
                code[k:k + 1] = [(n, new_lines[0])] + [(None, l) for l in new_lines[1:]]
                break
        else:
            raise DocError("%s: replace: '%s' is not in the block" % (block.where(), old))
    return code


# ---- C ----

C_HEADERS = """#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include <hfdcp.h>
#define DOC_CHECK(cond) do { if (!(cond)) { \\
    fprintf(stderr, "doc-test check failed: %s (%s:%d)\\n", #cond, __FILE__, __LINE__); \\
    MPI_Abort(MPI_COMM_WORLD, 1); } } while (0)
"""


def c_lines(lines, path, out):
    """Append lines [(md line or None, text)] with #line directives."""
    expect = None
    for n, t in lines:
        if n is not None and n != expect:
            out.append('#line %d "%s"' % (n, path))
        out.append(t)
        expect = n + 1 if n is not None else None


def c_back(out, gen):
    """A #line directive that numbers what follows as lines of gen."""
    count = sum(t.count("\n") + 1 for t in out)
    out.append('#line %d "%s"' % (count + 2, gen))


def c_source(block, gen):
    code = substituted(block)
    path = os.path.abspath(block.path)
    out = ["/* %s, generated by doc_check.py */" % block.where()]
    if any(re.search(r"\bint\s+main\s*\(", t) for _, t in code):
        if block.values("prelude") or block.values("epilogue") or block.values("top"):
            raise DocError("%s: a complete program takes no prelude, epilogue or top"
                           % block.where())
        c_lines(code, path, out)
        return "\n".join(out) + "\n"
    out.append(C_HEADERS.rstrip("\n"))
    body = []
    for n, t in code:
        if t.lstrip().startswith("#include"):
            out.append(t)
            body.append((n, ""))
        else:
            body.append((n, t))
    for n, t in block.values("top"):
        c_lines(split_value(n, t), path, out)
        c_back(out, gen)
    out += ["int main(int argc, char **argv)", "{", "    MPI_Init(&argc, &argv);", "    {"]
    for n, t in block.values("prelude"):
        c_lines(split_value(n, t), path, out)
    c_lines(body, path, out)
    for n, t in block.values("epilogue"):
        c_lines(split_value(n, t), path, out)
    c_back(out, gen)
    out += ["    }", "    MPI_Finalize();", "    return 0;", "}"]
    return "\n".join(out) + "\n"


def split_value(n, text):
    return [(n + k, l) for k, l in enumerate(text.split("\n"))]


# ---- Fortran ----

F_SPEC_RE = re.compile(
    r"^\s*(use\b|implicit\b|import\b|"
    r"(real|integer|logical|complex|character|type|class|double\s+precision|procedure)"
    r"\b.*::)", re.I)
F_USE_RE = re.compile(r"^\s*use\b", re.I)
F_IMPLICIT_RE = re.compile(r"^\s*implicit\b", re.I)
F_PROC_RE = re.compile(
    r"^\s*((pure|elemental|recursive|impure|module)\s+)*"
    r"((real|integer|logical|complex|character)(\s*\([^)]*\))?\s+)?"
    r"(subroutine|function)\s+\w+", re.I)
F_END_PROC_RE = re.compile(r"^\s*end\s*(subroutine|function)\b", re.I)
F_PROGRAM_RE = re.compile(r"^\s*program\s+\w+", re.I)


def f_split(lines):
    """Sort Fortran lines [(n, text)] into (uses, implicit, decls, execs,
    procedures), a statement's continuation lines with it, a comment with
    what follows it."""
    uses, implicit, decls, execs, procs = [], [], [], [], []
    i = 0
    comments = []
    while i < len(lines):
        n, t = lines[i]
        s = t.strip()
        if not s or s.startswith("!"):
            comments.append((n, t))
            i += 1
            continue
        if F_PROC_RE.match(t):
            unit = comments + [(n, t)]
            comments = []
            i += 1
            while i < len(lines) and not F_END_PROC_RE.match(lines[i][1]):
                unit.append(lines[i])
                i += 1
            if i < len(lines):
                unit.append(lines[i])
                i += 1
            procs.extend(unit)
            continue
        stmt = [(n, t)]
        while stmt[-1][1].split("!")[0].rstrip().endswith("&") and i + 1 < len(lines):
            i += 1
            stmt.append(lines[i])
        i += 1
        if F_USE_RE.match(t):
            dest = uses
        elif F_IMPLICIT_RE.match(t):
            dest = implicit
        elif F_SPEC_RE.match(t):
            dest = decls
        else:
            dest = execs
        dest.extend(comments + stmt)
        comments = []
    execs.extend(comments)
    return uses, implicit, decls, execs, procs


def f_source(block):
    code = substituted(block)
    where = block.where()
    out = ["! %s, generated by doc_check.py" % where]
    if any(F_PROGRAM_RE.match(t) for _, t in code):
        if block.values("prelude") or block.values("epilogue"):
            raise DocError("%s: a complete program takes no prelude or epilogue" % where)
        out += [t for _, t in code]
        return "\n".join(out) + "\n"
    parts = {"prelude": [], "block": [], "epilogue": []}
    for key in ("prelude", "epilogue"):
        for n, t in block.values(key):
            parts[key] += split_value(n, t)
    parts["block"] = code
    split = {k: f_split(v) for k, v in parts.items()}
    src = os.path.relpath(block.path, ROOT)

    def section(idx, label):
        lines = []
        for k in ("prelude", "block", "epilogue"):
            got = split[k][idx]
            if got:
                first = next((n for n, _ in got if n is not None), None)
                lines.append("  ! %s (%s:%s)" % (k if k != "block" else "the block",
                                                 src, first))
                lines += ["  " + t for _, t in got]
        return lines

    out.append("program %s" % block.name)
    out += section(0, "use")
    implicit = section(1, "implicit")
    out += implicit if implicit else ["  implicit none"]
    out += section(2, "declarations")
    out.append("  call doc_test_mpi_init()")
    out += section(3, "statements")
    out.append("  call doc_test_mpi_finalize()")
    procs = section(4, "procedures")
    if procs:
        out.append("contains")
        out += procs
    out.append("end program %s" % block.name)
    out.append("""
subroutine doc_test_mpi_init()
  use mpi_f08, only: MPI_Init
  implicit none
  call MPI_Init()
end subroutine doc_test_mpi_init

subroutine doc_test_mpi_finalize()
  use mpi_f08, only: MPI_Finalize
  implicit none
  call MPI_Finalize()
end subroutine doc_test_mpi_finalize""")
    return "\n".join(out) + "\n"


# ---- running ----

def numbered(text):
    return "\n".join("%4d  %s" % (k + 1, l) for k, l in enumerate(text.split("\n")))


def run(cmd, cwd, timeout, env=None):
    """(status, output, seconds); status None on a timeout, after which the
    command's whole process group (the launcher's ranks too) is killed."""
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        status = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
        out, _ = p.communicate()
        status = None
    return status, out.decode(errors="replace"), time.time() - t0


def compile_block(block, args, gen_dir):
    """Compile block; returns None or the failure's text."""
    if block.lang == "c":
        src = os.path.join(gen_dir, block.name + ".c")
        text = c_source(block, src)
        cmd = [os.environ.get("HFDCP_MPICC", "mpicc"), "-std=c11", "-Wall", "-Werror",
               "-I", args.include, src, "-o", os.path.join(gen_dir, block.name),
               "-L", args.lib_dir, "-lhfdcp", "-Wl,-rpath," + args.lib_dir]
    else:
        src = os.path.join(gen_dir, block.name + ".f90")
        text = f_source(block)
        # -J: the module files of a program (none here) stay out of the way.
        # -Wno-unused-dummy-argument: as C's -Wall (no -Wunused-parameter); a
        # callback's interface is fixed (hfdcp_progress_fn) whatever it uses.
        cmd = [os.environ.get("HFDCP_MPIFORT", "mpifort"), "-std=f2018", "-Wall", "-Werror",
               "-Wno-unused-dummy-argument",
               "-I", args.fortran_mod_dir, "-J", gen_dir, src,
               "-o", os.path.join(gen_dir, block.name),
               "-L", args.lib_dir, "-lhfdcp_f", "-lhfdcp", "-Wl,-rpath," + args.lib_dir]
    with open(src, "w") as f:
        f.write(text)
    status, output, secs = run(cmd, gen_dir, args.timeout)
    if status != 0:
        return ("%s\n%s\n--- %s (generated from %s):\n%s"
                % (" ".join(shlex.quote(c) for c in cmd),
                   output if status is not None else output + "\n(timed out)",
                   src, block.where(), numbered(text)))
    block.exe = os.path.join(gen_dir, block.name)
    return None


def shell_env(args, bin_dir):
    env = dict(os.environ)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


SHELL_PREAMBLE = r'''
mpirun() {
  local n=
  while [ $# -gt 0 ]; do
    case "$1" in
      -np|-n) n=$2; shift 2 ;;
      *) break ;;
    esac
  done
  "$HFDCP_MPIEXEC" -n "${n:-1}" $HFDCP_MPIEXEC_FLAGS "$@"
}
set -e -o pipefail
'''


def shell(cmd, cwd, args, bin_dir):
    return run(["bash", "-c", SHELL_PREAMBLE + cmd], cwd, args.timeout, shell_env(args, bin_dir))


def run_block(block, args, scratch, bin_dir):
    """Run block with its before/check/files: (True, its time) or (False,
    the failure's text)."""
    for lineno, cmd in block.values("before"):
        status, output, secs = shell(cmd, scratch, args, bin_dir)
        if status != 0:
            return False, "before (line %d): %s: exit %s\n%s" % (lineno, cmd, status, output)
    n = block.ranks()
    launcher = [os.environ.get("HFDCP_MPIEXEC", "mpiexec"), "-n", str(n)]
    launcher += shlex.split(os.environ.get("HFDCP_MPIEXEC_FLAGS", ""))
    status, output, secs = run(launcher + [block.exe], scratch, args.timeout)
    if status != 0:
        why = "timed out after %d s" % args.timeout if status is None else "exit status %d" % status
        return False, "%s on %d ranks: %s\n%s" % (" ".join(launcher + [block.exe]), n, why, output)
    for lineno, cmd in block.values("check"):
        status, out2, _ = shell(cmd, scratch, args, bin_dir)
        if status != 0:
            return False, ("program output:\n%s\ncheck (line %d): %s: exit %s\n%s"
                           % (output, lineno, cmd, status, out2))
    for lineno, pats in block.values("files"):
        for pat in pats.split():
            if not glob.glob(os.path.join(scratch, pat)):
                return False, ("program output:\n%s\nfiles (line %d): no %s in %s (it has: %s)"
                               % (output, lineno, pat, scratch,
                                  " ".join(sorted(os.listdir(scratch)))))
    return True, "%.1f s" % secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--include", required=True)
    ap.add_argument("--lib-dir", required=True)
    ap.add_argument("--fortran-mod-dir", default="")
    ap.add_argument("--tool", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--root", default=os.getcwd())
    ap.add_argument("markdown", nargs="+")
    args = ap.parse_args()
    args.lib_dir = os.path.abspath(args.lib_dir)
    global ROOT
    ROOT = os.path.abspath(args.root)
    t_start = time.time()

    failures = []
    files = []
    for md in args.markdown:
        try:
            files.append((md, parse_markdown(md)))
        except DocError as e:
            failures.append("annotation: %s" % e)
    if failures:
        for f in failures:
            print("FAIL " + f)
        return 1

    shutil.rmtree(args.work, ignore_errors=True)
    bin_dir = os.path.join(args.work, "bin")
    os.makedirs(bin_dir)
    os.symlink(os.path.abspath(args.tool), os.path.join(bin_dir, "hfdcp"))
    os.symlink(sys.executable, os.path.join(bin_dir, "python3"))

    # 1. Compile every block.
    counts = {"compiled": 0, "run": 0, "skipped": 0, "syntax": 0, "other": 0}
    names = set()
    for md, blocks in files:
        stem = os.path.splitext(os.path.basename(md))[0].lower()
        gen_dir = os.path.join(args.work, stem, "build")
        os.makedirs(gen_dir)
        for b in blocks:
            label = "%-22s %-8s" % (b.where(), b.lang)
            if "skip" in b.ann:
                print("skip    %s %s" % (label, b.one("skip")))
                counts["skipped"] += 1
                continue
            if b.lang == "python":
                if b.ann:
                    failures.append("%s: a doc-test annotation other than skip on a "
                                    "Python block" % b.where())
                    continue
                try:
                    compile("\n".join(t for _, t in b.code) + "\n", b.where(), "exec")
                    print("syntax  %s ok" % label)
                    counts["syntax"] += 1
                except SyntaxError as e:
                    failures.append("%s: Python syntax: %s" % (b.where(), e))
                    print("FAIL    %s Python syntax: %s" % (label, e))
                continue
            if b.lang not in ("c", "fortran"):
                if b.ann:
                    failures.append("%s: a doc-test annotation on a %s block"
                                    % (b.where(), b.lang or "plain"))
                counts["other"] += 1
                continue
            if b.name in names:
                failures.append("%s: program name %s used twice" % (b.where(), b.name))
                continue
            names.add(b.name)
            if b.lang == "fortran" and not args.fortran_mod_dir:
                print("skip    %s %s: the Fortran bindings are not built" % (label, b.name))
                counts["skipped"] += 1
                continue
            t0 = time.time()
            try:
                err = compile_block(b, args, gen_dir)
            except DocError as e:
                err = str(e)
            if err:
                failures.append("%s: %s does not compile:\n%s" % (b.where(), b.name, err))
                print("FAIL    %s %s does not compile" % (label, b.name))
            else:
                counts["compiled"] += 1
                print("compile %s %s ok (%.1f s)" % (label, b.name, time.time() - t0))
    sys.stdout.flush()

    # 2. Run, in the order of each file.
    if not failures:
        for md, blocks in files:
            stem = os.path.splitext(os.path.basename(md))[0].lower()
            scratch = os.path.join(args.work, stem, "run")
            os.makedirs(scratch)
            for b in blocks:
                if b.exe is None:
                    continue
                try:
                    n = b.ranks()
                except DocError as e:
                    failures.append(str(e))
                    break
                if n is None:
                    continue
                label = "%-22s %-8s" % (b.where(), b.lang)
                ok, result = run_block(b, args, scratch, bin_dir)
                if ok:
                    counts["run"] += 1
                    print("run     %s %s on %d ranks ok (%s)" % (label, b.name, n, result))
                    sys.stdout.flush()
                else:
                    failures.append("%s: %s failed:\n%s" % (b.where(), b.name, result))
                    print("FAIL    %s %s on %d ranks" % (label, b.name, n))
                    break  # the later steps build on this one

    total = time.time() - t_start
    print("doc_check: %d blocks compiled, %d run, %d Python syntax-checked, %d skipped, "
          "%d in other languages; %.1f s"
          % (counts["compiled"], counts["run"], counts["syntax"], counts["skipped"],
             counts["other"], total))
    if failures:
        print()
        for f in failures:
            print("FAIL " + f)
            print()
        print("doc_check: %d failure(s); scratch directory kept: %s" % (len(failures), args.work))
        return 1
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
