// Building blocks of a self-contained HTML page: escaping, number formatting, base64 and images
// embedded as data: URIs (downscaled when large), so a report never fetches anything.
#pragma once

#include <cstdint>
#include <string>

namespace evax {

/// `s` with & < > " ' replaced by entities: safe in element text and in quoted attributes.
std::string html_escape(const std::string& s);

/// `s` as one Markdown table cell: '|' escaped, line breaks as spaces.
std::string markdown_cell(const std::string& s);

/// Standard base64 (RFC 4648, with padding) of `bytes`.
std::string base64_encode(const std::string& bytes);

/// A number as a report shows it: `digits` significant decimals after the point for |v| < 1000
/// ("0.9298" for 4), plain integers without a fraction, "-" for NaN, "inf"/"-inf".
std::string format_metric(double v, int digits = 4);

/// How an image is embedded.
struct EmbedImageOptions {
  int max_side = 640;             ///< longer side in pixels; larger images are downscaled
  int64_t max_bytes = 400 << 10;  ///< a PNG above this is re-encoded smaller
};

/// An image file as a `data:image/png;base64,...` URI: the file's own bytes when it is a PNG
/// within the limits, else decoded and re-encoded as PNG at most `max_side` pixels on its longer
/// side. "" when the file cannot be read or decoded (the report then says so instead).
std::string image_data_uri(const std::string& path, const EmbedImageOptions& o = {});

}  // namespace evax
