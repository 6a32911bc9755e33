#include "evax/train/preempt.h"

#include <signal.h>

#include <atomic>

namespace evax {
namespace {

// Written by the handler; lock-free atomics are async-signal-safe.
std::atomic<int> g_first{0};
std::atomic<int> g_count{0};
std::atomic<bool> g_active{false};
struct sigaction g_old_term, g_old_usr1;

extern "C" void record_signal(int sig) {
  int none = 0;
  g_first.compare_exchange_strong(none, sig);
  g_count.fetch_add(1);
}

static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs lock-free atomics");

}  // namespace

PreemptGuard::PreemptGuard() {
  if (g_active.exchange(true)) return;
  installed_ = true;
  g_first = 0;
  g_count = 0;
  struct sigaction sa {};
  sa.sa_handler = record_signal;
  sigemptyset(&sa.sa_mask);
  // Blocking calls resume after the handler; the trainer looks at the flag between steps.
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, &g_old_term);
  ::sigaction(SIGUSR1, &sa, &g_old_usr1);
}

PreemptGuard::~PreemptGuard() {
  if (!installed_) return;
  if (g_count.load() == 0) {
    ::sigaction(SIGTERM, &g_old_term, nullptr);
    ::sigaction(SIGUSR1, &g_old_usr1, nullptr);
  }
  g_active = false;
}

int PreemptGuard::signal() const { return g_first.load(); }
int PreemptGuard::count() const { return g_count.load(); }

std::string signal_name(int sig) {
  if (sig == SIGTERM) return "SIGTERM";
  if (sig == SIGUSR1) return "SIGUSR1";
  if (sig == SIGINT) return "SIGINT";
  return "signal " + std::to_string(sig);
}

}  // namespace evax
