# The server image: `sandbox serve`, no Docker engine inside. Build from the repository root:
#
#   docker build -f deploy/docker/server.Dockerfile -t registry.example.com/sandbox/server:0.1.0 .
#
# It carries the runtime image's Dockerfile (SANDBOX_IMAGE_DIR) so that a server whose
# engine lacks the runtime image can build it there; on Kubernetes the image comes
# preloaded in the DinD sidecar instead (dind-runsc/), since the pods have no egress.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SANDBOX_IMAGE_DIR=/opt/sandbox/images/python

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sandbox ./sandbox
RUN pip install . && rm -rf /src
COPY images/python /opt/sandbox/images/python

# The uid the Kubernetes manifests expect (runAsUser 10001); the engine's socket is
# reached through the supplementary group 2375 (dockerd --group=2375).
RUN groupadd --gid 10001 sandbox \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin sandbox
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9090
ENTRYPOINT ["sandbox"]
CMD ["serve", "--listen=0.0.0.0:50051", "--metrics-listen=0.0.0.0:9090"]
