#include "evax/core/progress.h"

#include <unistd.h>

#include <cstdio>
#include <exception>
#include <sstream>

#include "evax/core/log.h"

namespace evax {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

Progress::Progress(std::string label, int64_t total, ProgressOptions opts)
    : label_(std::move(label)), total_(total), opts_(std::move(opts)) {
  bar_ = !opts_.silent && (opts_.force_bar || (opts_.auto_detect_tty && isatty(STDERR_FILENO)));
  start_ = last_print_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  // Unwinding after an error: the error line is what the user needs, not a last progress line.
  if (std::uncaught_exceptions() > 0) {
    if (bar_ && !finished_ && !opts_.silent) std::fputc('\n', stderr);
    return;
  }
  try {
    finish();
  } catch (...) {
  }
}

void Progress::advance(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += n;
  maybe_print(false);
}

void Progress::set(int64_t done) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ = done;
  maybe_print(false);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  maybe_print(true);
  if (bar_ && !opts_.silent) std::fputc('\n', stderr);
}

std::string Progress::status_line() {
  std::lock_guard<std::mutex> lock(mu_);
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return plain_line(elapsed);
}

std::string Progress::plain_line(double elapsed) {
  std::ostringstream os;
  const double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  os << label_ << " " << done_;
  if (total_ > 0) os << "/" << total_ << " (" << (100 * done_ / total_) << "%)";
  char r[32];
  std::snprintf(r, sizeof r, "%.1f", rate);
  os << " " << r << " " << opts_.unit << "/s";
  if (total_ > 0 && done_ < total_ && rate > 0)
    os << " ETA " << format_duration((total_ - done_) / rate);
  else
    os << " elapsed " << format_duration(elapsed);
  return os.str();
}

std::string Progress::bar_line(double elapsed) {
  const int width = 30;
  int filled = total_ > 0 ? static_cast<int>(width * std::min<int64_t>(done_, total_) / total_) : 0;
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::string line = plain_line(elapsed);
  auto sp = line.find(' ');
  return "\r" + label_ + " [" + bar + "]" + line.substr(sp) + "\x1b[K";
}

void Progress::maybe_print(bool force) {
  if (opts_.silent) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  if (bar_) {
    if (!force && since < 0.1) return;  // redraw at most 10 times a second
    std::fputs(bar_line(elapsed).c_str(), stderr);
    std::fflush(stderr);
  } else {
    if (!force && since < opts_.line_interval_s) return;
    log_info(plain_line(elapsed));
  }
  last_print_ = now;
}

}  // namespace evax
