// Small string helpers shared by the parsers.
#pragma once

#include <string>
#include <vector>

namespace evax {

/// Splits at every `sep`, keeping empty fields: "a,,b" → {"a", "", "b"}; "" → {""}.
inline std::vector<std::string> split_on(const std::string& s, char sep) {
  std::vector<std::string> parts(1);
  for (char c : s) {
    if (c == sep) parts.emplace_back();
    else parts.back() += c;
  }
  return parts;
}

}  // namespace evax

namespace evax {

/// Joins with `sep` between the parts: {"a", "b"} → "a, b".
inline std::string join_with(const std::vector<std::string>& parts, const std::string& sep = ", ") {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

}  // namespace evax
