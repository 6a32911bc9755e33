#!/usr/bin/env bash
# evax developer entry point. Installs what is missing, configures, builds, then runs one thing:
#   tools/dev.sh demo [evax demo options]   the main job on the embedded synthetic default
#   tools/dev.sh test [ctest options]       the whole test suite
#   tools/dev.sh build                      set-up and build only
# Idempotent: a second run with nothing changed only re-checks and re-links.
# Environment: EVAX_CACHE (default ~/.cache/evax: venv + ccache, shared by clones),
#              EVAX_BUILD (default <repo>/build), EVAX_JOBS (default: number of cores).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EVAX_CACHE:-$HOME/.cache/evax}
BUILD=${EVAX_BUILD:-$ROOT/build}
JOBS=${EVAX_JOBS:-$(nproc)}
say() { printf '\033[1m[evax setup]\033[0m %s\n' "$*" >&2; }

ensure_apt() {
  local missing=()
  while read -r pkg; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done < "$ROOT/tools/apt-packages.txt"
  ((${#missing[@]} == 0)) && return
  say "installing Debian packages: ${missing[*]}"
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The venv lives outside the clone, keyed by the pinned requirements, so fresh clones reuse it;
# later reference packages (requirements-extra.txt) go into the same venv without moving it.
ensure_venv() {
  local req="$ROOT/tools/requirements.txt"
  local torch_ver key
  torch_ver=$(sed -n 's/^torch==//p' "$req")
  key=$(sha256sum "$req" | cut -c1-12)
  VENV="$CACHE/venv-torch$torch_ver-$key"
  if [[ ! -f "$VENV/.complete" ]]; then
    say "creating Python environment $VENV (torch $torch_ver and test references)"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -r "$req"
    touch "$VENV/.complete"
  fi
  local extra="$ROOT/tools/requirements-extra.txt" stamp
  stamp="$VENV/.extra-$(sha256sum "$extra" | cut -c1-12)"
  if [[ ! -f "$stamp" ]]; then
    say "installing the extra test references into $VENV (tools/requirements-extra.txt)"
    "$VENV/bin/pip" install -q -r "$extra"
    touch "$stamp"
  fi
  PY="$VENV/bin/python"
}

ensure_build() {
  export CCACHE_DIR="$CACHE/ccache"
  # Paths under the clone hashed relative to it: every clone (CI's, the fresh-machine check's)
  # shares the compiled objects.
  export CCACHE_BASEDIR="$ROOT"
  export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
  local torch_cmake
  torch_cmake=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  if [[ ! -f "$BUILD/build.ninja" ]] || ! grep -q "EVAX_PYTHON:FILEPATH=$PY\$" "$BUILD/CMakeCache.txt"; then
    say "configuring $BUILD"
    # A different venv means a different torch: drop cached paths (TORCH_LIBRARY …) from the old one.
    rm -f "$BUILD/CMakeCache.txt"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$torch_cmake" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
      -DEVAX_PYTHON="$PY" -Wno-dev >/dev/null
  fi
  say "building (ninja -j$JOBS)"
  cmake --build "$BUILD" -j "$JOBS"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  demo|test|build) ;;
  *) echo "usage: tools/dev.sh demo|test|build [args...]" >&2; exit 2 ;;
esac
ensure_apt
ensure_venv
ensure_build
case "$cmd" in
  demo) exec "$BUILD/evax" demo "$@" ;;
  test) exec ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" "$@" ;;
  build) ;;
esac
