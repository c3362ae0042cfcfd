#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Reference pages from the documentation comments of the public headers.

The headers are the one source: every public declaration there carries its
contract in the comment above it.  This script reads those comments and
writes, for include/cfutures.h,

    docs/man/man3/<name>.3   one roff page per function or close group (the
                             declarations under one comment, or under
                             comments with no blank line between them),
                             named after its first function; every other
                             name in the group gets a ".so" page pointing
                             at it, so `man cf_submit_with` works too;
    docs/man/man3/cfutures.3 the overview: conventions, sections, pages;
    docs/reference.md        the same text as one Markdown page;

and the same for the MPI engine's include/cfutures_mpi.h in
docs/man-mpi/man3/ (overview cfutures_mpi.3) and docs/reference-mpi.md,
installed with that library only.

    tools/gen_reference.py            regenerate the files in the tree
    tools/gen_reference.py --check    exit 1 (and show a diff) if the files
                                      in the tree are not what the header
                                      gives; a ctest case runs this

How the header is read: blocks are separated by blank lines.  A banner
comment ("/* ----") opens a section.  A block that starts with a comment
opens a group; a block of declarations without a comment joins the group
before it (an options struct and its _init function) or, at the start of
a section, the group after it (an opaque typedef).  A comment standing
alone after a group is a note on that group.  Names starting with cf__ or
CF__ are internal and never shown; the #else branch of a conditional is
skipped (the C++ variant of CF_ARGS).
"""
import difflib
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Library:
    """One public header and where its pages go."""

    def __init__(self, header, man_dir, markdown, overview, library, pkg, summary,
                 section, example):
        self.header = header        # under include/
        self.man_dir = man_dir      # relative to ROOT
        self.markdown = markdown
        self.overview = overview    # the overview page's name
        self.library = library      # for -l
        self.pkg = pkg              # pkg-config name
        self.summary = summary      # the overview's NAME line
        self.section = section      # the section of a header without banners
        self.example = example      # a page the Markdown's opening names


LIBRARIES = [
    Library("cfutures.h", os.path.join("docs", "man", "man3"),
            os.path.join("docs", "reference.md"), "cfutures", "cfutures", "cfutures",
            "Python's concurrent.futures for C: futures, thread and process pools, "
            "map, wait, as_completed", "cfutures", "cf_submit"),
    Library("cfutures_mpi.h", os.path.join("docs", "man-mpi", "man3"),
            os.path.join("docs", "reference-mpi.md"), "cfutures_mpi", "cfutures-mpi",
            "cfutures-mpi", "the MPI engine of cfutures: the executor API on MPI ranks",
            "The MPI engine", "cf_mpi_pool_new"),
]


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*cfutures\s+VERSION\s+([0-9.]+)", f.read())
    if not m:
        sys.exit("gen_reference: no project(cfutures VERSION x.y.z) in CMakeLists.txt")
    return m.group(1)


# ---- reading the header ---------------------------------------------------

class Item:
    """One comment, #define or declaration of the header."""

    def __init__(self, kind, lines):
        self.kind = kind          # "comment", "define" or "code"
        self.lines = lines

    def comment_text(self):
        """The comment's lines without the /* * */ frame, indentation kept."""
        out = []
        for i, line in enumerate(self.lines):
            s = line.rstrip()
            if s.strip() == "*/":
                s = ""
            elif i == 0:
                s = re.sub(r"^\s*/\*+ ?", "", s)
            else:
                s = re.sub(r"^\s*\* ?", "", s, count=1) if s.strip().startswith("*") else s.strip()
            if s.endswith("*/"):
                s = s[:-2].rstrip()
            out.append(s)
        while out and not out[0].strip():
            out.pop(0)
        while out and not out[-1].strip():
            out.pop()
        return out

    def is_banner(self):
        return self.kind == "comment" and self.lines[0].lstrip().startswith("/* --")

    def names(self):
        """(name, what) pairs this item declares, internal ones left out."""
        text = "\n".join(self.lines)
        found = []
        if self.kind == "define":
            m = re.match(r"\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)", text)
            if m:
                found.append((m.group(1), "macro"))
        elif self.kind == "code":
            flat = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
            if flat.lstrip().startswith("typedef"):
                body = re.sub(r"\{.*\}", "{}", flat, flags=re.S)
                m = re.search(r"\(\s*\*?\s*([A-Za-z_]\w*)\s*\)\s*\(", body) or \
                    re.search(r"([A-Za-z_]\w*)\s*\(", body) or \
                    re.search(r"([A-Za-z_]\w*)\s*;\s*$", body.strip())
                if m:
                    found.append((m.group(1), "type"))
            else:
                head = flat.split("{")[0]
                m = re.search(r"([A-Za-z_]\w*)\s*\(", head)
                if m:
                    found.append((m.group(1), "function"))
        # Public names carry the prefix; others (include guards, the MPI
        # library's own switches the MPI header sets) are not ours.
        return [(n, w) for n, w in found
                if n.startswith(("cf_", "CF_")) and not n.startswith(("cf__", "CF__"))]

    def synopsis(self):
        """What the SYNOPSIS shows of this item."""
        if self.kind == "define":
            first = self.lines[0].rstrip()
            if first.endswith("\\"):
                m = re.match(r"\s*#\s*define\s+(\w+(\([^)]*\))?)", first)
                return ["#define " + m.group(1) + " ..."]
            return [re.sub(r"\s+", " ", first)]
        lines = [l.rstrip() for l in self.lines]
        text = "\n".join(lines)
        if not text.lstrip().startswith("typedef") and "{" in text:
            # an inline function: its prototype, not its body
            text = text.split("{")[0].rstrip() + ";"
            lines = text.split("\n")
        lines = [re.sub(r"\s*CF__(PRINTF\([^)]*\)|WARN_UNUSED)", "", l) for l in lines]
        if lines and not lines[-1].strip():
            lines.pop()
        if lines[-1].strip() == ";":
            lines.pop()
            lines[-1] += ";"
        return lines


def read_items(path):
    """The header as a list of blocks, each a list of Items."""
    with open(path) as f:
        lines = f.read().split("\n")
    blocks, block = [], []
    i, n = 0, len(lines)
    skipping = []   # a stack: True while inside an #else branch

    def flush():
        nonlocal block
        if block:
            blocks.append(block)
        block = []

    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
            continue
        if stripped.startswith("#"):
            directive = re.match(r"#\s*(\w+)", stripped).group(1)
            if directive in ("if", "ifdef", "ifndef"):
                skipping.append(False)
            elif directive == "else" or directive == "elif":
                skipping[-1] = True
            elif directive == "endif":
                skipping.pop()
            start = i
            while lines[i].rstrip().endswith("\\"):
                i += 1
            i += 1
            if directive == "define" and not any(skipping):
                block.append(Item("define", lines[start:i]))
            continue
        if re.match(r"/\*\s*SPDX-License-Identifier:.*\*/$", stripped):
            i += 1              # the licence tag, not documentation
            continue
        if stripped.startswith("/*"):
            start = i
            while "*/" not in lines[i]:
                i += 1
            i += 1
            if not any(skipping):
                block.append(Item("comment", lines[start:i]))
            continue
        if re.match(r'extern\s+"C"\s*\{$|\}$', stripped):
            i += 1              # the C++ linkage guard
            continue
        # a declaration: up to a ';' (or an inline function's closing brace)
        # at brace depth 0
        start, depth = i, 0
        while True:
            code = re.sub(r"/\*.*?\*/|//.*", "", lines[i])
            depth += code.count("{") - code.count("}")
            i += 1
            end = code.rstrip()
            if depth == 0 and (end.endswith(";") or (end.endswith("}") and "{" in
                               "".join(lines[start:i]))):
                break
        if not any(skipping):
            block.append(Item("code", lines[start:i]))
    flush()
    return blocks


class Group:
    def __init__(self, section):
        self.section = section
        self.entries = []         # (names declared after it, comment lines)
        self.code = []            # Items shown in the synopsis
        self.notes = []           # comment lines of notes standing alone
        self.names = []           # (name, what)

    def add(self, items):
        pending = []
        for it in items:
            if it.kind == "comment":
                self.entries.append(([], it.comment_text()))
            else:
                self.code.append(it)
                for nm in it.names():
                    self.names.append(nm)
                    if self.entries:
                        self.entries[-1][0].append(nm[0])
        return pending

    def name(self):
        """The page's name: its first function, else its first type, else
        its first macro."""
        for what in ("function", "type", "macro"):
            for n, w in self.names:
                if w == what:
                    return n
        return self.names[0][0]

    def error_table(self):
        """[(name, value, text)] of CF_ERROR_TABLE, if this group has it."""
        for it in self.code:
            if it.kind == "define" and "CF_ERROR_TABLE(X)" in it.lines[0]:
                return re.findall(r'X\((\w+),\s*(-?\d+),\s*"([^"]*)"\)', "\n".join(it.lines))
        return []


class Section:
    def __init__(self, title, intro):
        self.title = title
        self.intro = intro
        self.groups = []
        self.intro_group = None

    def types_group(self):
        """The group of the types declared without a comment of their own
        right after the banner: the banner's text describes them."""
        if self.intro_group is None:
            self.intro_group = Group(self)
            self.intro_group.entries.append(([], self.intro))
            self.groups.append(self.intro_group)
        return self.intro_group


def declares_types(block):
    return all(it.kind == "code" and it.lines[0].lstrip().startswith("typedef")
               for it in block)


def parse(path, default_section):
    blocks = read_items(path)
    preamble = blocks[0][0].comment_text()
    sections, waiting = [], []
    if not any(b[0].is_banner() for b in blocks[1:]):
        sections.append(Section(default_section, []))
    for block in blocks[1:]:
        first = block[0]
        if first.is_banner() and len(first.lines) > 1:
            text = first.comment_text()
            text = [l for l in text if not re.match(r"^-+$", l.strip())]
            while text and not text[0].strip():
                text.pop(0)
            sections.append(Section(text[0].strip(), text[1:]))
            waiting = []
            block = block[1:]
            if not block:
                continue
            first = block[0]
        if first.is_banner():       # a one-line sub-heading: no content
            block = block[1:]
            if not block:
                continue
            first = block[0]
        if not sections:
            continue                # before the first section: guards, includes
        sec = sections[-1]
        if not any(it.names() for it in block):
            if all(it.kind == "comment" for it in block) and sec.groups:
                for it in block:
                    sec.groups[-1].notes.append(it.comment_text())
            continue
        if first.kind != "comment":
            if declares_types(block):
                if not sec.groups or sec.groups == [sec.intro_group]:
                    sec.types_group().add(block)
                else:
                    waiting.append(block)   # for the group that follows
            elif sec.groups:
                sec.groups[-1].add(block)
            else:
                waiting.append(block)
            continue
        g = Group(sec)
        for w in waiting:
            g.add(w)
        waiting = []
        g.add(block)
        sec.groups.append(g)
    return preamble, sections


# ---- text of the comments -------------------------------------------------

def paragraphs(lines):
    """Comment lines as ("text", words) and ("pre", lines) chunks: a line
    that starts with a space is laid out by hand (a list, a table, code)."""
    out = []
    for line in lines:
        if not line.strip():
            out.append(("break", None))
        elif line.startswith(" "):
            if out and out[-1][0] == "pre":
                out[-1][1].append(line)
            else:
                out.append(("pre", [line]))
        else:
            if out and out[-1][0] == "text":
                out[-1][1].append(line.strip())
            else:
                out.append(("text", [line.strip()]))
    result = []
    for kind, body in out:
        if kind == "pre":
            indent = min(len(l) - len(l.lstrip()) for l in body if l.strip())
            body = [l[indent:] for l in body]
        if kind != "break":
            result.append((kind, body))
    return result


def first_sentence(lines):
    words = []
    for kind, body in paragraphs(lines):
        if kind != "text":
            break
        words.extend(body)
        joined = " ".join(words)
        m = re.search(r"^(.*?[.:])(\s|$)", joined)
        if m:
            return m.group(1).rstrip(".:")
    return " ".join(words).rstrip(".:")


def roff_escape(s):
    s = s.replace("\\", "\\e")
    s = s.replace("-", "\\-")
    if s.startswith((".", "'")):
        s = "\\&" + s
    return s


def roff_text(lines):
    out = []
    for kind, body in paragraphs(lines):
        if kind == "text":
            out.append(".PP")
            out.extend(roff_escape(l) for l in body)
        else:
            out.append(".PP")
            out.append(".in +4n")
            out.append(".nf")
            out.extend(roff_escape(l) if l else "" for l in body)
            out.append(".fi")
            out.append(".in")
    return out


def md_text(lines):
    out = []
    for kind, body in paragraphs(lines):
        if kind == "text":
            text = " ".join(body)
            out.append(text.replace("*", "\\*").replace("<", "&lt;"))
        else:
            out.append("```\n" + "\n".join(body) + "\n```")
        out.append("")
    return out


# ---- writing --------------------------------------------------------------

def synopsis_lines(group):
    lines = []
    table = group.error_table()
    for it in group.code:
        if table and it.kind == "code" and "CF_ERROR_TABLE(" in "".join(it.lines):
            # the enum the table generates, written out
            lines.append(it.lines[0].rstrip())
            width = max(len("CF_%s = %s," % (n, v)) for n, v, _ in table)
            for n, v, text in table:
                lines.append("    %-*s /* %s */" % (width, "CF_%s = %s," % (n, v), text))
            lines.append("} %s;" % it.names()[0][0])
            continue
        lines.extend(it.synopsis())
    return lines


def man_page(lib, group, version, siblings):
    names = [n for n, _ in group.names]
    title = group.name()
    summary = first_sentence(group.entries[0][1]) if group.entries else ""
    out = ['.\\" Generated by tools/gen_reference.py from include/%s; do not edit.' % lib.header,
           '.TH %s 3 "" "cfutures %s" "cfutures manual"' % (title.upper(), version),
           ".nh",
           ".SH NAME",
           "%s \\- %s" % (", ".join(roff_escape(n) for n in names), roff_escape(summary)),
           ".SH SYNOPSIS",
           ".nf",
           ".B #include <%s>" % lib.header,
           ".PP"]
    out.extend(roff_escape(l) if l else "" for l in synopsis_lines(group))
    out.append(".fi")
    out.append(".PP")
    out.append(link_line(lib))
    out.append(".SH DESCRIPTION")
    for i, (described, text) in enumerate(group.entries):
        if i > 0 and described:
            out.append(".SS " + ", ".join(roff_escape(n) for n in described))
        out.extend(roff_text(text))
    if group.notes:
        out.append(".SH NOTES")
        for note in group.notes:
            out.extend(roff_text(note))
    out.append(".SH SEE ALSO")
    refs = [lib.overview] + [s for s in siblings if s != title]
    if lib.overview != "cfutures":
        refs.append("cfutures")
    out.append(",\n".join(".BR %s (3)" % roff_escape(r) for r in refs))
    out.append(".PP")
    out.append("The section \\(lq%s\\(rq of \\fB%s\\fP(3)." %
               (roff_escape(group.section.title), roff_escape(lib.overview)))
    return "\n".join(out) + "\n"


def link_line(lib):
    return ("Link with \\fB\\-l%s\\fP (\\fBpkg\\-config \\-\\-cflags \\-\\-libs %s\\fP)." %
            (roff_escape(lib.library), roff_escape(lib.pkg)))


def overview_page(lib, preamble, sections, version):
    out = ['.\\" Generated by tools/gen_reference.py from include/%s; do not edit.' % lib.header,
           '.TH %s 3 "" "cfutures %s" "cfutures manual"' % (lib.overview.upper(), version),
           ".nh",
           ".SH NAME",
           "%s \\- %s" % (roff_escape(lib.overview), roff_escape(lib.summary)),
           ".SH SYNOPSIS",
           ".nf",
           ".B #include <%s>" % lib.header,
           ".fi",
           ".PP",
           link_line(lib),
           ".SH DESCRIPTION"]
    out.extend(roff_text(preamble))
    for sec in sections:
        out.append(".SH " + roff_escape(sec.title.upper()))
        out.extend(roff_text(sec.intro))
        if sec.groups:
            out.append(".PP")
            out.append("Pages:")
            for g in sec.groups:
                out.append(".TP")
                out.append(".BR %s (3)" % roff_escape(g.name()))
                summary = first_sentence(g.entries[0][1]) if g.entries else ""
                others = [n for n, _ in g.names if n != g.name()]
                line = roff_escape(summary)
                if others:
                    line += " (also " + ", ".join(roff_escape(n) for n in others) + ")"
                out.append(line)
    out.append(".SH SEE ALSO")
    if lib.overview != "cfutures":
        out.append(".BR cfutures (3).")
    out.append("The README and docs/design.md of the cfutures sources;")
    out.append("the same reference as one page: %s." % lib.markdown)
    return "\n".join(out) + "\n"


def anchor(name):
    return name.lower()


def markdown(lib, preamble, sections, version):
    out = ["<!-- Generated by tools/gen_reference.py from include/%s; do not edit. -->" %
           lib.header,
           "# %s %s reference" % (lib.pkg, version), "",
           "Every public declaration of `include/%s`, with the contract "
           "written above it there. The same text is installed as man pages "
           "(`man %s`, `man %s`, ...)." % (lib.header, lib.overview,
                                           lib.example), ""]
    out.extend(md_text(preamble))
    out.append("## Contents")
    out.append("")
    for sec in sections:
        out.append("* **%s**: %s" % (sec.title, ", ".join(
            "[`%s`](#%s)" % (g.name(), anchor(g.name())) for g in sec.groups)))
    out.append("")
    for sec in sections:
        out.append("## " + sec.title)
        out.append("")
        out.extend(md_text(sec.intro))
        for g in sec.groups:
            out.append('<a id="%s"></a>' % anchor(g.name()))
            out.append("")
            out.append("### " + ", ".join("`%s`" % n for n, _ in g.names))
            out.append("")
            out.append("```c")
            out.extend(synopsis_lines(g))
            out.append("```")
            out.append("")
            for i, (described, text) in enumerate(g.entries):
                if g is sec.intro_group and i == 0:
                    continue    # the section's text, just above
                if i > 0 and described:
                    out.append("**%s**" % ", ".join("`%s`" % n for n in described))
                    out.append("")
                out.extend(md_text(text))
            for note in g.notes:
                out.extend(md_text(note))
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def generate(lib, version):
    """{relative path: content} of every file generated for `lib`."""
    preamble, sections = parse(os.path.join(ROOT, "include", lib.header), lib.section)
    files = {}
    seen = {}
    MAN_DIR = lib.man_dir
    for sec in sections:
        siblings = [g.name() for g in sec.groups]
        for g in sec.groups:
            if not g.entries:
                sys.exit("gen_reference: %s has no documentation comment" % g.name())
            page = g.name()
            files[os.path.join(MAN_DIR, page + ".3")] = man_page(lib, g, version, siblings)
            for n, _ in g.names:
                if n in seen:
                    sys.exit("gen_reference: %s is in two groups (%s, %s)" % (n, seen[n], page))
                seen[n] = page
                if n != page:
                    files[os.path.join(MAN_DIR, n + ".3")] = ".so man3/%s.3\n" % page
    files[os.path.join(MAN_DIR, lib.overview + ".3")] = overview_page(lib, preamble, sections,
                                                                       version)
    files[lib.markdown] = markdown(lib, preamble, sections, version)
    return files


def main(argv):
    check = "--check" in argv[1:]
    version = project_version()
    files, present = {}, set()
    for lib in LIBRARIES:
        if not os.path.exists(os.path.join(ROOT, "include", lib.header)):
            continue
        files.update(generate(lib, version))
        man_abs = os.path.join(ROOT, lib.man_dir)
        if os.path.isdir(man_abs):
            present |= {os.path.join(lib.man_dir, f) for f in os.listdir(man_abs)}
    stale = sorted(present - set(files))
    if check:
        bad = False
        for rel, text in sorted(files.items()):
            path = os.path.join(ROOT, rel)
            old = open(path).read() if os.path.exists(path) else ""
            if old != text:
                bad = True
                sys.stdout.writelines(difflib.unified_diff(
                    old.splitlines(True), text.splitlines(True), "a/" + rel, "b/" + rel))
        for rel in stale:
            bad = True
            print("stale page: %s" % rel)
        if bad:
            print("the reference pages differ from the headers: "
                  "run tools/gen_reference.py and commit the result")
            return 1
        print("reference pages match the headers (%d files)" % len(files))
        return 0
    for lib in LIBRARIES:
        os.makedirs(os.path.join(ROOT, lib.man_dir), exist_ok=True)
    for rel in stale:
        os.remove(os.path.join(ROOT, rel))
    for rel, text in files.items():
        with open(os.path.join(ROOT, rel), "w") as f:
            f.write(text)
    print("wrote %d files" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
