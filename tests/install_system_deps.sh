#!/usr/bin/env bash
# System packages the tests need besides the Python ones: Debian's slurm-wlm and munge, for
# tests/integration/test_slurm.py (it starts its own one-node SLURM cluster as root), and
# chromium, for the HTML report test of tests/integration/test_demo.py (opens it headless).
# Idempotent; uses sudo when not root. Without them that test fails, naming what is missing.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v chromium >/dev/null; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge chromium >/dev/null
