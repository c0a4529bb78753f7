#!/usr/bin/env bash
# EMR bootstrap action (runs on every node before Spark starts).
#
#   bootstrap.sh                              make sure Python 3.11 is at /usr/bin/python3.11,
#                                             the interpreter the packed environment links to
#   bootstrap.sh s3://bucket/prefix WHEEL     also install requirements.txt and the imagegraph
#                                             wheel from that prefix into it (python_env:
#                                             bootstrap; the nodes need PyPI access)
#
# The launcher (python -m imagegraph.emr) uploads this file and adds it with these arguments.
set -euo pipefail
python=/usr/bin/python3.11

if [ ! -x "$python" ]; then
  sudo dnf install -y -q python3.11
fi
[ $# -eq 0 ] && exit 0

prefix="${1%/}"
wheel="${2:?usage: bootstrap.sh [s3://bucket/prefix imagegraph-VERSION-py3-none-any.whl]}"
work="$(mktemp -d)"
aws s3 cp --only-show-errors "$prefix/requirements.txt" "$work/"
aws s3 cp --only-show-errors "$prefix/$wheel" "$work/"
if ! "$python" -m pip --version >/dev/null 2>&1; then
  sudo dnf install -y -q python3.11-pip
fi
sudo "$python" -m pip install --quiet -r "$work/requirements.txt"
sudo "$python" -m pip install --quiet --no-deps "$work/$wheel"
