#!/usr/bin/env bash
# Runs every fuzz target in turn for SECS seconds each (default 660), one
# fuzzer at a time, from seed corpora written by the test suite. Logs go to
# fuzz/logs/<target>.log; the last libFuzzer status line of each is what
# docs/fuzzing.md records.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-660}
TARGETS=${TARGETS:-"frame_parse body_parse records auth_verify netconf pcap_decode log_read ipc_frames"}
mkdir -p corpus logs
(cd .. && FUZZ_CORPUS_DIR="$PWD/fuzz/corpus" cargo test -q --release --test fuzz_regressions -- --ignored write_seed_corpora >/dev/null)
cp ../netconf/*.toml corpus/netconf/ 2>/dev/null || true
for t in $TARGETS; do
  echo "== $t $(date -u +%H:%M:%S)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$t" "corpus/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || echo "   $t exited with $? (see logs/$t.log)"
  grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "logs/$t.log" | tail -1 || true
done
