#!/usr/bin/env bash
# Packs what evax's build needs from Debian into one tarball for a machine that has a compiler,
# CMake, CUDA and a Python torch but none of the Debian libraries and no network (the lent GPU
# machine): the headers, CMake/pkg-config files and shared libraries of the -dev packages in
# tools/apt-packages.txt, their -dev dependencies, and every shared library those need at run
# time, minus the C/C++ runtime (glibc, libstdc++, libgcc). Static archives are left out.
#
#   tools/gpu_sysroot.sh [--out FILE.tar.xz]     (default: build-gpu-sysroot/sysroot.tar.xz)
#   tools/gpu_sysroot.sh --list                  the files it would pack, one a line, then the
#                                                uncompressed total on stderr (no tarball)
#
# Taken from this machine's installed packages (tools/dev.sh build installs them), so the files
# are Debian's, byte for byte. `tools/gpu_check.sh --sysroot FILE.tar.xz` unpacks it into / with
# --skip-old-files (nothing already there is replaced; Debian's CMake files name absolute
# /usr/lib paths) before it configures. Prints the tarball's size; fails when it is over 60 MiB
# (the device tool carries at most 64 MiB with the working tree).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/build-gpu-sysroot/sysroot.tar.xz"
LIST=0
while (($#)); do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --list) LIST=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_sysroot: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
LIMIT_MB=60
ARCH_LIB=/usr/lib/x86_64-linux-gnu

# The -dev packages evax builds against (build tools, Python, the browser test's packages and the
# dcmtk command-line tools are not needed to build), and their -dev dependencies, recursively.
mapfile -t queue < <(grep -Ev '^\s*(#|$)' "$ROOT/tools/apt-packages.txt" |
                     grep -E -- '-dev$|^catch2$' | sort -u)
declare -A seen=()
pkgs=()
while ((${#queue[@]})); do
  p=${queue[0]}
  queue=("${queue[@]:1}")
  [[ -n "${seen[$p]:-}" ]] && continue
  seen[$p]=1
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    { echo "gpu_sysroot: $p is not installed (run tools/dev.sh build first)" >&2; exit 1; }
  pkgs+=("$p")
  while read -r dep; do
    [[ "$dep" == *-dev || "$dep" == catch2 ]] && queue+=("$dep")
  done < <(apt-cache depends --installed --no-recommends --no-suggests "$p" 2>/dev/null |
           awk '$1 == "Depends:" {print $2}' | tr -d '<>' | sed 's/:any$//')
done

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
list="$STAGE/files"
: >"$list"
for p in "${pkgs[@]}"; do
  dpkg -L "$p" | while read -r f; do
    [[ -f "$f" || -L "$f" ]] || continue
    case "$f" in
      /usr/include/*|*/cmake/*|*/pkgconfig/*|$ARCH_LIB/*.so|$ARCH_LIB/*.so.*) echo "$f" ;;
    esac
  done >>"$list"
done

# Shared libraries: what the -dev packages' .so links point to, and everything those load
# (ldd), except the C/C++ runtime every machine has.
runtime='^(libc|libm|libdl|librt|libpthread|libresolv|libutil|libgcc_s|libstdc\+\+|ld-linux-x86-64)\.so'
mapfile -t libs < <(grep -E '\.so(\.|$)' "$list" | sort -u)
declare -A have=()
i=0
while ((i < ${#libs[@]})); do
  f=${libs[$i]}
  i=$((i + 1))
  [[ -n "${have[$f]:-}" ]] && continue
  have[$f]=1
  echo "$f" >>"$list"
  real=$(readlink -f "$f")
  [[ -e "$real" ]] || continue
  echo "$real" >>"$list"
  # The soname link (libfoo.so.1) is what the dynamic loader opens.
  soname=$(objdump -p "$real" 2>/dev/null | awk '$1 == "SONAME" {print $2}')
  [[ -n "$soname" && -e "$(dirname "$real")/$soname" ]] && echo "$(dirname "$real")/$soname" >>"$list"
  while read -r dep; do
    [[ -n "$dep" ]] || continue
    [[ $(basename "$dep") =~ $runtime ]] && continue
    [[ "$dep" == /lib/* && -e "/usr$dep" ]] && dep="/usr$dep"  # merged /usr: one name per file
    libs+=("$dep")
  done < <(ldd "$real" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
done

sort -u "$list" -o "$list"
if ((LIST)); then
  cat "$list"
  echo "gpu_sysroot: ${#pkgs[@]} packages, $(wc -l <"$list") files," \
       "$(($(tr '\n' '\0' <"$list" | du -ck --files0-from=- | tail -1 | cut -f1) / 1024)) MiB" \
       "uncompressed" >&2
  exit 0
fi
export XZ_OPT=${XZ_OPT:--6 -T0}
mkdir -p "$(dirname "$OUT")"
tar -C / --no-recursion -cJf "$OUT.tmp" -T <(sed 's|^/||' "$list")
mv "$OUT.tmp" "$OUT"
size_kb=$(du -k "$OUT" | cut -f1)
echo "gpu_sysroot: ${#pkgs[@]} packages, $(wc -l <"$list") files, $((size_kb / 1024)) MiB: $OUT"
if ((size_kb > LIMIT_MB * 1024)); then
  echo "gpu_sysroot: FAILED: over ${LIMIT_MB} MiB" >&2
  exit 1
fi
