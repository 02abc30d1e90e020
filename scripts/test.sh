#!/usr/bin/env bash
# The test command of README.md: installs what the tests need and a fresh machine lacks, then
# runs every test. `.ci/run` calls this same script. Arguments go to `cargo test --workspace`.
#     bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# PostgreSQL server binaries and Chromium + chromedriver: installed when missing, and the
# PostgreSQL bin dir put first in PATH (scripts/install-test-deps.sh, runnable alone).
source scripts/install-test-deps.sh

# The workspace: unit, integration and doc tests of every crate.
cargo test --workspace "$@"

# The newcomer trial (issue 12): a crate outside the workspace, written from the docs alone with
# `logbook` as its one dependency. It shares the workspace's target directory (same profiles) so
# that common dependencies are built once; --locked: its Cargo.lock is committed.
cargo test --locked --manifest-path tests/newcomer/Cargo.toml \
    --target-dir "${CARGO_TARGET_DIR:-$PWD/target}"
