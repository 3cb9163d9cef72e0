"""Code generated from protos/ by scripts/gen-protos.sh; do not edit."""
