#!/usr/bin/env bash
# Check that every runtime dependency of tinypds installs from WHEELS on Linux aarch64
# (Raspberry Pi OS 64-bit) for CPython 3.11 and 3.13: no compiler needed on the Pi.
#
# Resolves the dependencies in pyproject.toml (with their own dependencies) for that
# platform with pip download --only-binary=:all:, so a package with no matching wheel fails.
# Accepted platform tags: manylinux2014_aarch64 and manylinux_2_17 ... manylinux_2_36_aarch64
# (Debian 12 "bookworm", glibc 2.36, is the base of Raspberry Pi OS 64-bit), each passed to
# pip explicitly because pip does not widen a --platform to older glibc tags by itself.
# Needs network access to PyPI. Usage: scripts/check_aarch64_wheels.sh [PYTHON_VERSION ...]
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
GLIBC_MAX=${GLIBC_MAX:-36}
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 "$GLIBC_MAX"); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.11 3.13)

mapfile -t DEPS < <("$PYTHON" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as fh:
    print("\n".join(tomllib.load(fh)["project"]["dependencies"]))
PY
)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinypds-wheels.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
status=0
for v in "${VERSIONS[@]}"; do
    dest="$WORK/$v"
    echo "== CPython $v on linux aarch64 (manylinux2014 .. manylinux_2_$GLIBC_MAX): ${DEPS[*]}"
    if "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-cache-dir \
            --only-binary=:all: "${PLATFORMS[@]}" --python-version "$v" --implementation cp \
            -d "$dest" "${DEPS[@]}"; then
        echo "   ok: $(ls "$dest" | wc -l) wheels"
        ls "$dest" | sed 's/^/     /'
    else
        echo "== FAIL: some dependency has no linux aarch64 wheel for CPython $v" >&2
        status=1
    fi
done
exit $status
