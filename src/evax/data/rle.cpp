// Run-length codec of SIIM masks (see RleFormat).
#include <string>

#include "evax/data/adapters_internal.h"

namespace evax {

namespace adapters_detail {

// Relative (SIIM stage 1): each start counts from the end of the previous run. Standard (Kaggle):
// 1-based absolute starts, which must increase; a file in the other format fails loudly instead
// of painting a wrong mask.
RleRuns parse_rle(const std::string& rle, int64_t total, RleFormat format,
                  const std::string& where) {
  EVAX_ASSERT(format != RleFormat::kAuto, "parse_rle needs a concrete RLE format");
  const std::vector<std::string> toks = split_blanks(rle);
  if (toks.size() % 2 != 0)
    raise<DataError>(where, "RLE has an odd number of values (", toks.size(), ")");
  RleRuns runs;
  int64_t pos = 0;
  for (size_t i = 0; i < toks.size(); i += 2) {
    int64_t v[2];
    for (int k = 0; k < 2; ++k) {
      const std::string& s = toks[i + static_cast<size_t>(k)];
      if (!all_digits(s) || s.size() > 12)
        raise<DataError>(where, "RLE value '", s, "' is not a non-negative integer");
      v[k] = std::stoll(s);
    }
    if (format == RleFormat::kRelative) {
      pos += v[0];
      if (pos + v[1] > total)
        raise<DataError>(where, "RLE run at ", pos, " of length ", v[1], " ends past the ", total,
                         " pixels of the mask (a standard, absolute RLE? see --rle)");
    } else {
      if (v[0] < 1 || v[0] - 1 < pos)
        raise<DataError>(where, "standard RLE start ", v[0],
                         v[0] < 1 ? " is not 1-based"
                                  : " does not lie after the previous run (a relative, SIIM "
                                    "stage-1 RLE? see --rle)");
      pos = v[0] - 1;
      if (pos + v[1] > total)
        raise<DataError>(where, "RLE run at ", pos, " of length ", v[1], " ends past the ", total,
                         " pixels of the mask");
    }
    runs.emplace_back(pos, v[1]);
    pos += v[1];
  }
  return runs;
}

void paint_runs(cv::Mat& mask, const RleRuns& runs) {
  const int64_t rows = mask.rows;
  for (const auto& [start, len] : runs)
    for (int64_t k = start; k < start + len; ++k)
      mask.at<uint8_t>(static_cast<int>(k % rows), static_cast<int>(k / rows)) = 255;
}

}  // namespace adapters_detail

using namespace adapters_detail;

void rle_decode_into(const std::string& rle, cv::Mat& mask, const std::string& where,
                     RleFormat format) {
  EVAX_ASSERT(mask.type() == CV_8U && !mask.empty());
  paint_runs(mask, parse_rle(rle, static_cast<int64_t>(mask.total()), format, where));
}

std::string rle_encode(const cv::Mat& mask) {
  EVAX_ASSERT(mask.type() == CV_8U);
  std::string out;
  const int64_t rows = mask.rows, total = static_cast<int64_t>(mask.total());
  int64_t prev_end = 0;
  for (int64_t k = 0; k < total;) {
    const auto on = [&](int64_t i) {
      return mask.at<uint8_t>(static_cast<int>(i % rows), static_cast<int>(i / rows)) != 0;
    };
    if (!on(k)) {
      ++k;
      continue;
    }
    int64_t e = k;
    while (e < total && on(e)) ++e;
    out += (out.empty() ? "" : " ") + std::to_string(k - prev_end) + " " + std::to_string(e - k);
    prev_end = e;
    k = e;
  }
  return out.empty() ? "-1" : out;
}

}  // namespace evax
