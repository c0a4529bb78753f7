#!/usr/bin/env bash
# EMR bootstrap action: install imagegraph's pinned runtime stack and wheel on a node.
# Usage (as a bootstrap action): bootstrap.sh s3://bucket/prefix
# where the prefix holds requirements.txt and imagegraph-*.whl.
set -euo pipefail
prefix="${1:?usage: bootstrap.sh s3://bucket/prefix}"
work="$(mktemp -d)"
aws s3 cp "${prefix%/}/requirements.txt" "$work/"
aws s3 cp "${prefix%/}/" "$work/" --recursive --exclude "*" --include "imagegraph-*.whl"
sudo python3 -m pip install --quiet -r "$work/requirements.txt"
sudo python3 -m pip install --quiet --no-deps "$work"/imagegraph-*.whl
