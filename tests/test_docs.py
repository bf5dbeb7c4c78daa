"""The README and the documentation site (docs/, mkdocs.yml) say what the code does.

`mkdocs build --strict` (.ci/run) checks the site's own links, anchors and API references;
these tests need no MkDocs and compile nothing: the README's length and links (which the
site does not build), every relative link of docs/*.md as well, the configuration page
against get_base_config(), the API page's names against the package, and the cheap
commands the pages show (export and prepare, on a few phantoms) run as shown.
"""

from __future__ import annotations

import importlib
import pathlib
import re
import shlex
import unicodedata

import ml_collections
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(path: pathlib.Path, keep_code: bool = False) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks, inline code removed unless
    ``keep_code`` (it is part of a heading's text)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line if keep_code else re.sub(r"`[^`]*`", "", line))
    return lines


def slugify(text: str) -> str:
    """The anchor Python-Markdown's toc extension (MkDocs' default) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = re.sub(r"[`*]", "", text)  # code and emphasis marks
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: pathlib.Path) -> set[str]:
    """The heading anchors of a Markdown page (a repeated heading gets ``_1``, ``_2``...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path, keep_code=True):
        m = HEADING.match(line)
        if m:
            slug = slugify(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}_{n}")
    return out


def relative_links(path: pathlib.Path) -> list[str]:
    return [
        target
        for line in prose_lines(path)
        for target in LINK.findall(line)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; at most {MAX_README_LINES}: move the details to a "
        "page under docs/ and link it."
    )


def quick_start_commands(page: pathlib.Path) -> list[str]:
    quick = page.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", quick, re.S)


def test_readme_test_command_is_the_one_ci_runs():
    """The Quick start's second command is CI's test command, word for word (.ci/run), and
    the site's home page shows the same two commands."""
    commands = quick_start_commands(README)
    assert len(commands) == 2, commands
    assert quick_start_commands(DOCS / "index.md") == commands
    test_command = commands[1].strip()
    assert "-m pytest" in test_command
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in (line.strip() for line in ci)


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    """Every relative link names a file of the repository, and its #anchor a heading there."""
    assert relative_links(README), "the link pattern found no link at all in README.md"
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_pages_show_the_phantom_figures():
    """Each figure under docs/ is shown by a page (they moved there from the README)."""
    shown = {
        (page.parent / t).resolve() for page in PAGES for t in relative_links(page) if "." in t
    }
    figures = sorted(DOCS.glob("*.png"))
    assert figures
    assert [f.name for f in figures if f.resolve() not in shown] == []


# --- the configuration page -----------------------------------------------------------------


def config_leaves(config, prefix=""):
    """``(dotted field, value)`` of every field; an empty ConfigDict is a field."""
    for key in config:
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict) and len(value):
            yield from config_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def documented_fields() -> dict[str, str]:
    """Field -> default cell of the rows under "Every field" in docs/configuration.md."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    section = text.split("## Every field", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", section, re.M)
    fields = [field for field, _ in rows]
    assert len(fields) == len(set(fields)), "a field listed twice"
    return dict(rows)


def shown_default(field: str, value) -> str:
    """How the page writes a default: Python's repr, the class list by its constant's name."""
    if field == "data.classes":
        from chestattn_jax.data.classes import NIH_CLASSES

        assert tuple(value) == tuple(NIH_CLASSES)
        return "NIH_CLASSES"
    if isinstance(value, ml_collections.ConfigDict):
        return repr(value.to_dict())
    return repr(value)


def test_configuration_page_lists_every_field_with_its_default():
    from chestattn_jax.config import get_base_config

    fields = dict(config_leaves(get_base_config()))
    page = documented_fields()
    assert sorted(set(fields) - set(page)) == [], "fields missing from docs/configuration.md"
    assert sorted(set(page) - set(fields)) == [], "docs/configuration.md lists unknown fields"
    wrong = {
        field: (page[field], shown_default(field, value))
        for field, value in fields.items()
        if page[field] != shown_default(field, value)
    }
    assert wrong == {}, "defaults on the page (page, code)"


# --- the API reference page -----------------------------------------------------------------


def api_names() -> list[str]:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^::: ([\w.]+)\s*$", text, re.M)


def test_api_reference_names_exist():
    """Each ``::: name`` of docs/api.md is a module or an attribute of the package."""
    names = api_names()
    assert len(names) >= 5
    missing = []
    for name in names:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ModuleNotFoundError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert missing == []


# --- the cheap commands the pages show ------------------------------------------------------


def shown_commands(module: str) -> list[list[str]]:
    """Every ``python -m MODULE ...`` command in a bash block of the README or docs/*.md,
    continuation lines joined, each once, in page order."""
    commands = []
    for page in [README, *PAGES]:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            block = re.sub(r"\\\n\s*", " ", block)
            for line in block.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith(f"python -m {module} "):
                    argv = shlex.split(line)[3:]
                    if argv not in commands:
                        commands.append(argv)
    return commands


def set_flag(argv: list[str], name: str, value) -> list[str]:
    return [a for a in argv if not a.startswith(f"--{name}=")] + [f"--{name}={value}"]


def flag(argv: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return values[-1] if values else None


@pytest.mark.slow
def test_the_export_and_prepare_commands_shown_run_on_a_few_phantoms(tmp_path, cli):
    """Each export and prepare command of the pages, run as shown with its folders moved under
    tmp_path and a dozen phantoms: a prepare whose raw folder no export of the pages writes
    (the downloaded data sets) reads an export of that layout."""
    exports = shown_commands("chestattn_jax.data.export")
    prepares = shown_commands("chestattn_jax.data.prepare")
    assert exports and prepares

    def moved(argv):
        return [
            re.sub(r"=/(\S+)", lambda m: "=" + str(tmp_path / m.group(1).replace("/", "_")), a)
            for a in argv
        ]

    def run(module, argv):
        for name in ("out_dir", "raw_dir", "data_dir"):  # nothing is written outside tmp_path
            assert flag(argv, name) is None or flag(argv, name).startswith(str(tmp_path)), argv
        proc = cli(*argv, module=module, timeout=300)
        assert proc.returncode == 0, f"python -m {module} {shlex.join(argv)}:\n{proc.stderr}"
        return proc

    for argv in exports:
        argv = set_flag(moved(argv), "num_images", 12)
        run("chestattn_jax.data.export", argv)
        assert (pathlib.Path(flag(argv, "out_dir")) / "chestattn_export.json").exists()
    for argv in prepares:
        argv = set_flag(moved(argv), "num_workers", 0)
        raw_dir = pathlib.Path(flag(argv, "raw_dir"))
        if not raw_dir.exists():
            layout = flag(argv, "dataset")  # the export's layouts are named as the data sets
            run(
                "chestattn_jax.data.export",
                [f"--layout={layout}", f"--out_dir={raw_dir}", "--num_images=12"],
            )
        proc = run("chestattn_jax.data.prepare", argv)
        size = flag(argv, "image_size")
        built = list(pathlib.Path(flag(argv, "data_dir")).glob(f"*/{size}px/*/"))
        assert built, proc.stdout + proc.stderr
