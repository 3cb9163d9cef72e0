#!/usr/bin/env bash
# Regenerates sandbox/_proto from protos/: the one command for generated code.
set -euo pipefail
cd "$(dirname "$0")/.."
out=sandbox/_proto
rm -rf "$out/sandbox"
python -m grpc_tools.protoc -I protos \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" \
  protos/sandbox/v1/sandbox.proto
touch "$out/sandbox/__init__.py" "$out/sandbox/v1/__init__.py"
# protoc writes imports rooted at the proto path; root them at this package instead.
sed -i 's/^from sandbox\.v1 import/from sandbox._proto.sandbox.v1 import/' "$out"/sandbox/v1/*_grpc.py
