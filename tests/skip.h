// Visible skips. Catch2 v2 has no SKIP, so EVAX_SKIP(reason) prints a marker line that ctest's
// SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt) turns into "***Skipped" (listed under "The
// following tests did not run"), warns, and returns from the test case. Use it only at the top
// of a TEST_CASE, before any SECTION, when a tool or data set the test needs is missing;
// tools/ci_check_skips.py fails CI for skipped tests not in tools/ci_allowed_skips.txt.
//
//   if (!have_tool()) EVAX_SKIP("dcmdump is not on PATH (Debian package dcmtk)");
//   if (!fs::is_directory(d)) EVAX_SKIP("no split lists at " << d);
#pragma once

#include <catch2/catch.hpp>
#include <iostream>
#include <sstream>
#include <string>

#include "test_config.h"  // EVAX_SKIP_MARKER

namespace evax::test {

/// Prints the marker line ctest matches (stdout, flushed, on a line of its own).
inline void announce_skip(const std::string& reason) {
  std::cout << '\n' << EVAX_SKIP_MARKER << ": " << reason << std::endl;
}

}  // namespace evax::test

#define EVAX_SKIP(reason)                                 \
  do {                                                    \
    std::ostringstream evax_skip_reason_;                 \
    evax_skip_reason_ << reason;                          \
    ::evax::test::announce_skip(evax_skip_reason_.str()); \
    WARN("skipped: " << evax_skip_reason_.str());         \
    return;                                               \
  } while (0)
