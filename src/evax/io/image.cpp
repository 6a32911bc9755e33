#include "evax/io/image.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/imgproc.hpp>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/jpeg.h"
#include "evax/io/png.h"

namespace evax {

bool is_dicom_path(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".dcm" || ext == ".dicom" || ext == ".dic" || has_dicom_magic(path);
}

namespace {

// What a file that is neither PNG nor JPEG probably is, from its first bytes, for the message.
std::string format_guess(const std::string& b) {
  const auto starts = [&](const char* magic, size_t n, size_t at = 0) {
    return b.size() >= at + n && b.compare(at, n, magic, n) == 0;
  };
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "a TIFF file";
  if (starts("BM", 2)) return "a BMP file";
  if (starts("GIF8", 4)) return "a GIF file";
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return "a WebP file";
  if (starts("\xff\x4f\xff\x51", 4) || starts("\0\0\0\x0cjP  ", 8)) return "a JPEG 2000 file";
  if (starts("DICM", 4, 128)) return "a DICOM file";
  std::string hex;
  for (size_t i = 0; i < std::min<size_t>(b.size(), 8); ++i) {
    char h[4];
    std::snprintf(h, sizeof h, "%s%02x", i ? " " : "", static_cast<unsigned char>(b[i]));
    hex += h;
  }
  return "an unknown format, starting with bytes " + hex;
}

// Decodes PNG or JPEG bytes by their signature; DataError with the bare reason.
cv::Mat decode_bytes(const std::string& bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.empty()) raise<DataError>("file is empty");
  if (is_png(p, bytes.size())) return png_decode(p, bytes.size());
  if (is_jpeg(p, bytes.size())) return jpeg_decode(p, bytes.size());
  raise<DataError>("not a PNG or JPEG file (", format_guess(bytes),
                   "); evax reads PNG, JPEG and DICOM images");
}

}  // namespace

cv::Mat image_decode(const std::string& bytes, const std::string& source) {
  try {
    return decode_bytes(bytes);
  } catch (const DataError& e) {
    raise<DataError>("image ", source, ": ", e.what());
  }
}

cv::Mat image_read_unit(const std::string& path, const ImageReadOptions& options) {
  if (is_dicom_path(path)) {
    const DicomPixels p = dicom_read(path, options.dicom);
    return dicom_to_unit(p, options.dicom.apply_voi);
  }
  const std::string bytes = read_file(path);  // DataError naming the path when unreadable
  const cv::Mat raw = image_decode(bytes, path);
  const double scale = raw.depth() == CV_16U ? 1.0 / 65535.0 : 1.0 / 255.0;  // 8 or 16 bit only
  cv::Mat f;
  raw.convertTo(f, CV_32F, scale);
  cv::Mat gray;
  switch (f.channels()) {
    case 1: gray = f; break;
    case 3: cv::cvtColor(f, gray, cv::COLOR_BGR2GRAY); break;
    case 4: cv::cvtColor(f, gray, cv::COLOR_BGRA2GRAY); break;
    default: EVAX_ASSERT(false, "decoder gave ", f.channels(), " channels for ", path);
  }
  return gray;
}

cv::Mat mask_read(const std::string& path) {
  const std::string bytes = read_file(path);
  cv::Mat m;
  try {
    m = decode_bytes(bytes);
  } catch (const DataError& e) {
    raise<DataError>("mask '", path, "': ", e.what());
  }
  if (m.type() != CV_8UC1)
    raise<DataError>("mask '", path, "': must be 8-bit single-channel, has ", m.channels(),
                     " channel(s) of ", m.depth() == CV_16U ? 16 : 8, " bits");
  return m;
}

void image_write_png(const std::string& path, const cv::Mat& img, const PngWriteOptions& options) {
  std::string png;
  try {
    png = png_encode(img, options.level);
  } catch (const DataError& e) {
    raise<DataError>("cannot encode PNG ", path, ": ", e.what());
  }
  if (options.atomic) {
    write_file_atomic(path, png);
    return;
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(png.data(), static_cast<std::streamsize>(png.size()));
  f.close();
  if (!f) raise<DataError>("cannot write PNG ", path, ": ", std::strerror(errno));
}

}  // namespace evax
