#!/usr/bin/env bash
# EMR bootstrap action (runs on every node before Spark starts). The launcher
# (python -m imagegraph.emr) uploads this file and adds it with these arguments; PYTHON is
# the settings' package.node_python, the one place the nodes' interpreter is named.
#
#   bootstrap.sh PYTHON                          make sure Python 3.11 is at PYTHON, the
#                                                interpreter the packed environment links to
#   bootstrap.sh PYTHON unpack ARCHIVE_URI DIR   also unpack the packed environment once on
#                                                this node into DIR (python_env: node_archive)
#   bootstrap.sh PYTHON install PREFIX WHEEL     also install requirements.txt (without
#                                                pyspark: EMR's own comes first) under
#                                                constraints.txt and the imagegraph wheel from
#                                                the S3 PREFIX into PYTHON (python_env:
#                                                bootstrap; the nodes need PyPI access)
set -euo pipefail
usage="usage: bootstrap.sh PYTHON [unpack ARCHIVE_URI DIR | install PREFIX WHEEL]"
python="${1:?$usage}"

if [ ! -x "$python" ]; then
  sudo dnf install -y -q "$(basename "$python")"
fi
[ $# -eq 1 ] && exit 0

mode="$2"
work="$(mktemp -d)"
case "$mode" in
  unpack)
    archive="${3:?$usage}"
    dir="${4:?$usage}"
    aws s3 cp --only-show-errors "$archive" "$work/environment.tar.gz"
    sudo mkdir -p "$dir"
    sudo tar -xzf "$work/environment.tar.gz" -C "$dir"
    sudo chmod -R a+rX "$dir"
    ;;
  install)
    prefix="${3%/}"
    wheel="${4:?$usage}"
    aws s3 cp --only-show-errors "$prefix/requirements.txt" "$work/"
    aws s3 cp --only-show-errors "$prefix/constraints.txt" "$work/"
    aws s3 cp --only-show-errors "$prefix/$wheel" "$work/"
    grep -v -i -E '^(pyspark|py4j)([=<>!~ ;]|$)' "$work/requirements.txt" > "$work/nodes.txt"
    if ! "$python" -m pip --version >/dev/null 2>&1; then
      sudo dnf install -y -q "$(basename "$python")-pip"
    fi
    sudo "$python" -m pip install --quiet -r "$work/nodes.txt" -c "$work/constraints.txt"
    sudo "$python" -m pip install --quiet --no-deps "$work/$wheel"
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
rm -rf "$work"
