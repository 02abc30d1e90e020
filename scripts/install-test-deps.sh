#!/usr/bin/env bash
# Installs what the tests need and a fresh Debian machine lacks (PostgreSQL server binaries,
# Chromium and chromedriver), with apt-get (as root, or through sudo for Chromium), and puts
# the PostgreSQL bin dir first in PATH. scripts/test.sh sources it before `cargo test`; run it
# alone to install the test dependencies only:
#     bash scripts/install-test-deps.sh
# Sourced, it leaves PATH exported to the caller (`set -euo pipefail` is the caller's).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
fi

# The PostgreSQL backend's tests start throwaway clusters (crates/logbook-pgtest) and need the
# server binaries; they fail, never skip, without them. Install the distribution's package when
# initdb is neither in PATH nor in /usr/lib/postgresql/*/bin, and put its bin dir first in PATH.
postgres_bin_dir() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}
echo "==> PostgreSQL server binaries"
if ! PG_BIN_DIR=$(postgres_bin_dir); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: initdb/pg_ctl not found and not root: install the postgresql package" >&2
        exit 1
    fi
    echo "initdb not found: apt-get install postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update </dev/null
    apt-get install -y --no-install-recommends postgresql </dev/null
    if ! PG_BIN_DIR=$(postgres_bin_dir); then
        echo "error: the postgresql package installed no initdb in /usr/lib/postgresql/*/bin" >&2
        exit 1
    fi
fi
export PATH="$PG_BIN_DIR:$PATH"
echo "PostgreSQL binaries: $PG_BIN_DIR ($("$PG_BIN_DIR/pg_ctl" --version))"

# The dashboard's end-to-end test (examples/dashboard/tests/browser_restart.rs) drives headless
# Chromium through chromedriver; it fails, never skips, without them. Install Debian's packages
# when either is missing (with sudo when not root).
echo "==> Chromium and chromedriver"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "error: chromium/chromedriver missing and not root (no sudo): apt-get install chromium chromium-driver" >&2
            exit 1
        fi
        SUDO="sudo"
    fi
    echo "chromium or chromedriver not found: apt-get install chromium chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update </dev/null
    $SUDO apt-get install -y --no-install-recommends chromium chromium-driver </dev/null
fi
echo "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: version unknown'); $(/usr/bin/chromedriver --version)"
