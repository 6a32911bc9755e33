#include "evax/report/html.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/image.h"
#include "evax/io/png.h"

namespace evax {

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string markdown_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out += c;
  }
  return out;
}

std::string base64_encode(const std::string& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += k[v & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string format_metric(double v, int digits) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (std::fabs(v) >= 1e5 || std::fabs(v) < 1e-3) {
    std::snprintf(buf, sizeof buf, "%.*g", std::max(1, digits), v);
  } else {
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  }
  return buf;
}

std::string image_data_uri(const std::string& path, const EmbedImageOptions& o) {
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const std::exception&) {
    return "";
  }
  cv::Mat img;
  try {
    img = image_decode(bytes, path);
  } catch (const DataError&) {
    return "";  // not an image evax reads: no embed
  }
  const bool png = bytes.size() > 8 && bytes.compare(1, 3, "PNG") == 0;
  const int side = std::max(img.cols, img.rows);
  if (png && side <= o.max_side && static_cast<int64_t>(bytes.size()) <= o.max_bytes)
    return "data:image/png;base64," + base64_encode(bytes);
  if (img.depth() == CV_16U) img.convertTo(img, CV_8U, 1.0 / 257.0);
  if (side > o.max_side) {
    const double s = static_cast<double>(o.max_side) / side;
    cv::resize(img, img, cv::Size(std::max(1, int(img.cols * s)), std::max(1, int(img.rows * s))),
               0, 0, cv::INTER_AREA);
  }
  return "data:image/png;base64," + base64_encode(png_encode(img, 9));
}

}  // namespace evax
