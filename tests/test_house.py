"""The house rules of syncws's code, checked on its source (no sockets).

* No import cycle between syncws's modules: a module's imports are read from
  its source, those inside functions included (a deferred import is still a
  cycle, only hidden); those under ``if TYPE_CHECKING:`` are left out, since
  they never run.
* No function longer than :data:`MAX_FUNCTION_LINES` lines of code: lines
  that aren't blank, a comment or the function's docstring; in Python and
  in the C speedups alike.
* No measured figure (a time, a size, a rate, an instruction count, a
  speed-up, "on CPython 3.11") in a comment or a docstring of the package's
  source, but the few of :data:`ALLOWED_FIGURES`: figures drift from the
  code they describe, and live in docs/performance.rst and bench/NOTES.rst,
  beside the commands that measured them. A comment on a hot path says
  "hot path: see docs/performance.rst#<section>".
"""

from __future__ import annotations

import ast
import io
import pathlib
import re
import tokenize
from typing import Dict, Iterator, List, Optional, Set, Tuple

import syncws

PACKAGE = pathlib.Path(syncws.__file__).parent

MAX_FUNCTION_LINES = 100

# The compiled modules (setup.py's extensions): no source to read, and they
# import nothing of syncws.
EXTENSIONS = {"syncws._speedups"}

# Functions over the limit, each with the issue that removes it. Empty: keep
# it so, or name the issue here.
KNOWN_LONG_FUNCTIONS: Set[str] = set()


def module_name(path: pathlib.Path) -> str:
    """``syncws/extensions/permessage_deflate.py`` -> ``syncws.extensions.permessage_deflate``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, pathlib.Path]:
    """Every module of the package, by name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_imports(node: ast.AST) -> Iterator[ast.AST]:
    """Every import statement in ``node`` that can run, at any depth."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    children = node.orelse if isinstance(node, ast.If) and _is_type_checking(node) else ast.iter_child_nodes(node)
    for child in children:
        yield from _run_time_imports(child)


def _resolve(name: str, known: Dict[str, pathlib.Path]) -> Optional[str]:
    """The syncws module ``name`` is, or is in; ``None`` outside syncws."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> Dict[str, Set[str]]:
    """``{module: the syncws modules it imports}``, from the source."""
    known = modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: Set[str] = set()
        for node in _run_time_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                if node.level:
                    base = package
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # `from . import x` imports the module x when there is one.
                submodules = [f"{base}.{alias.name}" for alias in node.names]
                targets = [module for module in submodules if module in known or module in EXTENSIONS]
                targets = targets or [base]
            for target in targets:
                resolved = None if target in EXTENSIONS else _resolve(target, known)
                if resolved is not None and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """A cycle of the graph, as the modules along it, or ``None``."""
    done: Set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        # Depth first, with the path kept, iteratively.
        path: List[str] = []
        on_path: Set[str] = set()
        stack: List[Tuple[str, Iterator[str]]] = []

        def enter(node: str) -> None:
            path.append(node)
            on_path.add(node)
            stack.append((node, iter(sorted(graph.get(node, ())))))

        enter(start)
        while stack:
            node, children = stack[-1]
            for child in children:
                if child in on_path:
                    return path[path.index(child):] + [child]
                if child not in done:
                    enter(child)
                    break
            else:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_is_read_whole() -> None:
    graph = import_graph()
    # At the top, from a subpackage, inside a function (a deferred import),
    # but not under TYPE_CHECKING (protocol.py's import of metrics).
    assert "syncws.handshake" in graph["syncws.opening"]
    assert "syncws.extensions.permessage_deflate" in graph["syncws.client"]
    assert "syncws.logconfig" in graph["syncws.wsgi"]
    assert "syncws.metrics" not in graph["syncws.protocol"]
    assert graph["syncws.datastructures"] == set()


def test_no_import_cycle() -> None:
    graph = import_graph()
    # The package imports its public modules; none of them imports it back.
    importers_of_package = sorted(name for name, edges in graph.items() if "syncws" in edges)
    assert importers_of_package == []
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def code_lines(function: ast.AST, lines: List[str]) -> int:
    """Lines of code of a function: not blank, not a comment, not its docstring."""
    assert isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
    docstring: Tuple[int, int] = (0, -1)
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        docstring = (first.lineno, first.end_lineno or first.lineno)
    assert function.end_lineno is not None
    count = 0
    for number in range(function.lineno, function.end_lineno + 1):
        if docstring[0] <= number <= docstring[1]:
            continue
        text = lines[number - 1].strip()
        if text and not text.startswith("#"):
            count += 1
    return count


def long_functions() -> Dict[str, int]:
    """``{"module.function": lines of code}`` of the functions over the limit."""
    found = {}
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = code_lines(node, lines)
                if count > MAX_FUNCTION_LINES:
                    found[f"{name}.{node.name}"] = count
    return found


def test_code_lines_leave_out_docstrings_comments_and_blanks() -> None:
    source = 'def f():\n    """Doc.\n\n    More.\n    """\n    # why\n\n    return 1\n'
    function = ast.parse(source).body[0]
    assert code_lines(function, source.splitlines()) == 2


def c_function_lines(source: str) -> Dict[str, int]:
    """``{function: lines of code}`` of a C file in the speedups' style.

    A function's name starts its line, its body's braces stand alone on
    theirs; its lines of code run from the name to the closing brace,
    neither blank nor comment.
    """
    blanked = re.sub(r"/\*.*?\*/|//[^\n]*", lambda match: re.sub(r"[^\n]", " ", match.group()), source, flags=re.S)
    lines = blanked.splitlines()
    found = {}
    for number, line in enumerate(lines):
        if line != "{":
            continue
        start = number - 1
        while not re.match(r"\w+\(", lines[start]):
            start -= 1
        name = re.match(r"\w+", lines[start])
        assert name is not None
        end = lines.index("}", number)
        found[name.group()] = sum(1 for text in lines[start:end + 1] if text.strip())
    return found


def test_c_function_lines_leave_out_comments_and_blanks() -> None:
    source = "/* A\n * doc. */\nstatic int\nf(int a,\n  int b)\n{\n    /* why */\n\n    return a; // and\n}\n"
    assert c_function_lines(source) == {"f": 5}


def test_no_long_function() -> None:
    found = long_functions()
    new = {name: count for name, count in found.items() if name not in KNOWN_LONG_FUNCTIONS}
    assert new == {}, f"functions over {MAX_FUNCTION_LINES} lines of code: split them"
    # A known one that got short leaves the list.
    assert sorted(KNOWN_LONG_FUNCTIONS - set(found)) == []


def test_no_long_c_function() -> None:
    functions = c_function_lines((PACKAGE / "speedups.c").read_text(encoding="utf-8"))
    assert "parse_simple_frames" in functions and "pack_frame" in functions  # the file is read whole
    long = {name: count for name, count in functions.items() if count > MAX_FUNCTION_LINES}
    assert long == {}, f"C functions over {MAX_FUNCTION_LINES} lines of code: split them"


# -- measured figures ---------------------------------------------------------

#: What a measured figure looks like in a comment or a docstring.
FIGURE = re.compile(
    r"\d[\d,.]*\s*(?:ns|µs|us|ms)\b"  # a time
    r"|\d[\d,.]*\s*(?:[KMG]i?B)\b"  # a size
    r"|\b(?:[KMG]i?B|msg)/s\b"  # a rate
    r"|\bcallgrind\b|\d[\d,.]*k?\s+instructions\b"  # instruction counts
    r"|\d[\d.]*\s*×|\b(?:[x×]|times) (?:faster|slower)\b"  # speed-ups
    r"|(?<![%\w])\d+(?:\.\d+)?\s?%(?![0-9A-Fa-f]{2})"  # shares (not %XX escapes)
    r"|(?:about|~)\s*\d[\d,.]*\s*bytes\b"  # measured sizes in bytes
    r"|\bon CPython 3\.\d+",  # a claim about one interpreter's speed
)

#: Figures that may stay, each a fact the code states rather than a
#: measurement: ``(file, the figure's text)``. Each must still be found.
ALLOWED_FIGURES: Set[Tuple[str, str]] = {
    ("exceptions.py", "64 KiB"),  # a limit: the response body kept for an error
    ("extensions/permessage_deflate.py", "32 KiB"),  # RFC 7692: 15-bit windows
    ("streams.py", "1 MiB"),  # a limit: the bytes of one page of a recovery
    ("writer.py", "2 KiB"),  # the BSDs' default send low-water mark (SO_SNDLOWAT)
}


def comments_and_docstrings(path: pathlib.Path) -> Iterator[Tuple[int, str]]:
    """``(line, text)`` of every comment and docstring of a Python or C file."""
    source = path.read_text(encoding="utf-8")
    if path.suffix == ".c":
        for match in re.finditer(r"/\*.*?\*/|//[^\n]*", source, re.S):
            yield source.count("\n", 0, match.start()) + 1, match.group()
        return
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        # Docstrings, and the strings that document an attribute.
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            yield node.lineno, node.value.value


def figures(files: Set[str]) -> Dict[Tuple[str, str], List[int]]:
    """``{(file, figure): [lines]}`` of the measured figures in ``files``."""
    found: Dict[Tuple[str, str], List[int]] = {}
    for path in sorted(PACKAGE.rglob("*")):
        name = path.relative_to(PACKAGE).as_posix()
        if path.suffix not in (".py", ".c") or name not in files:
            continue
        for line, text in comments_and_docstrings(path):
            for match in FIGURE.finditer(text):
                found.setdefault((name, " ".join(match.group().split())), []).append(line)
    return found


def package_files() -> Set[str]:
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*") if path.suffix in (".py", ".c")}


def test_figures_are_recognized() -> None:
    samples = [
        "# costs 2-6 µs per message", "# about 300 bytes", "#: saves 112 KiB per compressor",
        "# 25k instructions (callgrind)", "# 1.5× faster", "# about 7% of a send", "# 480 MiB/s",
        "# on CPython 3.11, a call costs", "# 100 ns", "# three times faster",
    ]
    assert [bool(FIGURE.search(sample)) for sample in samples] == [True] * len(samples)
    others = ["# /caf%C3%A9/%70rivate", "# RFC 6455 §5.3", "# read 2**16 bytes", "# every 20 seconds"]
    assert [bool(FIGURE.search(sample)) for sample in others] == [False] * len(others)


def test_no_measured_figure_in_comments() -> None:
    found = figures(package_files())
    unexpected = {key: lines for key, lines in found.items() if key not in ALLOWED_FIGURES}
    assert unexpected == {}, "measured figures in code: move them to docs/performance.rst or bench/NOTES.rst"
    # Each allowed figure is still there: the list only shrinks.
    assert sorted(ALLOWED_FIGURES - set(found)) == []


# -- the module map -----------------------------------------------------------


def test_the_design_page_maps_every_module() -> None:
    """docs/design.rst's module map names every module of the package."""
    design = (PACKAGE.parent / "docs" / "design.rst").read_text(encoding="utf-8")
    house = design[design.index("The house\n"):design.index("The opening handshake\n")]
    mapped = set(re.findall(r"``(syncws(?:\.\w+)*)``", house))
    # A package is mapped by its modules (syncws.extensions by permessage_deflate).
    missing = sorted(
        name for name in modules() if name not in mapped and not any(m.startswith(name + ".") for m in mapped)
    )
    assert missing == [], "add these modules to docs/design.rst's module map"
