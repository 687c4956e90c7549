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
