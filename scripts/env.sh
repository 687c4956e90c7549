# Sourced by the scripts: a cargo target directory outside the clone, so a fresh clone reuses
# earlier builds (CI clones anew on every run).
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  for dir in /var/cache/polc/target "${XDG_CACHE_HOME:-$HOME/.cache}/polc/target"; do
    if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; then
      export CARGO_TARGET_DIR="$dir"
      break
    fi
  done
fi
export PATH="$HOME/.cargo/bin:$PATH"
# A shared target directory keeps every old version of every test binary and incremental
# session: what no build has read for three days goes, so the disk does not fill up (it did
# once, at 69 GB). Cargo rebuilds anything it still needs.
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ -d "$CARGO_TARGET_DIR" ]; then
  find "$CARGO_TARGET_DIR" -mindepth 3 -maxdepth 3 -path '*/deps/*' -type f -atime +3 \
    -delete 2>/dev/null || true
  find "$CARGO_TARGET_DIR" -mindepth 3 -maxdepth 3 -path '*/incremental/*' -type d -atime +3 \
    -exec rm -rf {} + 2>/dev/null || true
  # Every rebuild of a test links new binaries next to the old ones: when the disk runs
  # low (under 30 GB free), what was not used in the last two hours goes.
  free_kb="$(df -Pk "$CARGO_TARGET_DIR" 2>/dev/null | awk 'NR == 2 { print $4 }')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt 31457280 ]; then
    find "$CARGO_TARGET_DIR" -mindepth 3 -maxdepth 3 -path '*/deps/*' -type f -amin +120 \
      -delete 2>/dev/null || true
    find "$CARGO_TARGET_DIR" -mindepth 2 -maxdepth 2 -name incremental -type d \
      -exec rm -rf {} + 2>/dev/null || true
  fi
fi
