#!/usr/bin/env bash
# Installs libz3 (with headers, a pkg-config file and the `z3` binary) under /usr/local from
# the PyPI wheel `z3-solver==5.4.1.0`, the version the `z3` crate needs (Debian's libz3-dev is
# too old). Idempotent: does nothing when that version is already installed. Needs root (or a
# PREFIX you can write) and PyPI.
set -euo pipefail
VERSION=5.4.1.0
PREFIX="${PREFIX:-/usr/local}"
pc="$PREFIX/lib/pkgconfig/z3.pc"
if [[ -f "$pc" ]] && grep -q "^Version: ${VERSION%.0}$" "$pc" && [[ -e "$PREFIX/lib/libz3.so" ]]; then
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps "z3-solver==$VERSION" -d "$tmp"
python3 - "$tmp" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{tmp}/z3_solver-*.whl")[0]) as z:
    for name in z.namelist():
        if name.startswith(("z3/lib/libz3", "z3/include/")) or name.endswith("/data/bin/z3"):
            z.extract(name, f"{tmp}/x")
PY
mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/include" "$PREFIX/bin"
lib="$(ls "$tmp"/x/z3/lib/libz3.so.* | head -n1)"
install -m 0644 "$lib" "$PREFIX/lib/$(basename "$lib")"
ln -sf "$(basename "$lib")" "$PREFIX/lib/libz3.so"
install -m 0644 "$tmp"/x/z3/include/*.h "$PREFIX/include/"
install -m 0755 "$tmp"/x/z3_solver-*.data/data/bin/z3 "$PREFIX/bin/z3"
cat > "$pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: z3
Description: The Z3 theorem prover (from the z3-solver wheel)
Version: ${VERSION%.0}
Libs: -L\${libdir} -lz3
Cflags: -I\${includedir}
PC
if command -v ldconfig >/dev/null; then ldconfig; fi
