// Progress of long loops: a redrawn bar with rate and ETA on a terminal, plain periodic log lines
// otherwise (CI logs, files, non-zero ranks stay readable).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace evax {

struct ProgressOptions {
  /// Draw a bar when stderr is a terminal; periodic lines otherwise.
  bool auto_detect_tty = true;
  /// Force the terminal bar (tests; ignored when auto-detect finds a terminal).
  bool force_bar = false;
  /// Seconds between plain lines.
  double line_interval_s = 10.0;
  /// Print nothing at all (non-zero ranks).
  bool silent = false;
  /// Unit shown after the rate ("img", "step").
  std::string unit = "it";
};

/// Thread-safe progress reporter for `total` items.
class Progress {
 public:
  Progress(std::string label, int64_t total, ProgressOptions opts = {});
  ~Progress();
  /// Adds `n` finished items.
  void advance(int64_t n = 1);
  /// Sets the number of finished items.
  void set(int64_t done);
  /// Prints the final line (also done by the destructor).
  void finish();
  /// The line that would be printed now ("label 40/100 (40%) 12.5 img/s ETA 0:05").
  std::string status_line();

 private:
  void maybe_print(bool force);
  std::string bar_line(double elapsed);
  std::string plain_line(double elapsed);

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  ProgressOptions opts_;
  bool bar_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_print_;
  std::mutex mu_;
};

/// "1:02:03" or "2:03".
std::string format_duration(double seconds);

}  // namespace evax
