#!/usr/bin/env bash
# Passes `go test -v` output through and keeps go test's exit status visible:
# prints the PASS/FAIL lines at the end so CI logs are easy to read.
set -o pipefail
tee /tmp/shoal-e2e.log
status=${PIPESTATUS[0]}
echo "---- e2e summary ----"
grep -E '^(--- (PASS|FAIL|SKIP)|ok|FAIL)' /tmp/shoal-e2e.log || true
grep -q -E '^(FAIL|--- FAIL)' /tmp/shoal-e2e.log && exit 1
grep -q '^ok' /tmp/shoal-e2e.log || exit 1
exit 0
