#include "evax/core/cpu_dispatch.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace {

std::atomic<long> queries{0};

bool keep_vendor_check() {
  static const bool keep = [] {
    const char* e = std::getenv("EVAX_MKL_VENDOR_CHECK");
    return e && std::strcmp(e, "keep") == 0;
  }();
  return keep;
}

}  // namespace

// MKL's service function (see the header). Linked into every executable with
// --undefined/--export-dynamic-symbol (src/CMakeLists.txt, on evax_core), so it precedes libtorch_cpu's own.
extern "C" __attribute__((visibility("default"))) int mkl_serv_intel_cpu_true() {
  queries.fetch_add(1, std::memory_order_relaxed);
  if (keep_vendor_check()) {
    using Fn = int (*)();
    static const Fn next = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "mkl_serv_intel_cpu_true"));
    return next ? next() : 0;
  }
  return 1;
}

namespace evax {

bool mkl_vendor_override_active() {
  void* bound = dlsym(RTLD_DEFAULT, "mkl_serv_intel_cpu_true");
  return bound == reinterpret_cast<void*>(&mkl_serv_intel_cpu_true) && !keep_vendor_check();
}

long mkl_vendor_queries() { return queries.load(std::memory_order_relaxed); }

}  // namespace evax
