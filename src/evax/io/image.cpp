#include "evax/io/image.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <optional>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/png.h"

namespace evax {

bool is_dicom_path(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".dcm" || ext == ".dicom" || ext == ".dic" || has_dicom_magic(path);
}

namespace {

cv::Mat opencv_decode(const std::string& bytes, const std::string& path) {
  cv::Mat raw;
  try {
    // imdecode rather than imread: no path encoding issues, and the read error is ours.
    const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8U,
                      const_cast<char*>(bytes.data()));
    raw = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    raise<DataError>("image ", path, ": OpenCV cannot decode it: ", e.what());
  }
  if (raw.empty())
    raise<DataError>("image ", path,
                     ": OpenCV returned an empty image (corrupt file or unsupported format)");
  return raw;
}

}  // namespace

cv::Mat image_read_unit(const std::string& path, const ImageReadOptions& options) {
  if (is_dicom_path(path)) {
    const DicomPixels p = dicom_read(path, options.dicom);
    return dicom_to_unit(p, options.dicom.apply_voi);
  }
  const std::string bytes = read_file(path);  // DataError naming the path when unreadable
  if (bytes.empty()) raise<DataError>("image ", path, ": file is empty");
  // Most training PNGs take the libdeflate path; everything else, and every damaged file, goes
  // through OpenCV, which decodes it or says why not.
  std::optional<cv::Mat> fast =
      png_decode_fast(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  const cv::Mat raw = fast ? std::move(*fast) : opencv_decode(bytes, path);
  double scale;
  switch (raw.depth()) {
    case CV_8U: scale = 1.0 / 255.0; break;
    case CV_16U: scale = 1.0 / 65535.0; break;
    default:
      raise<DataError>("image ", path, ": unsupported pixel depth (OpenCV depth code ",
                       raw.depth(), "); expected 8 or 16 bit unsigned");
  }
  cv::Mat f;
  raw.convertTo(f, CV_32F, scale);
  cv::Mat gray;
  switch (f.channels()) {
    case 1: gray = f; break;
    case 2: cv::extractChannel(f, gray, 0); break;  // gray + alpha
    case 3: cv::cvtColor(f, gray, cv::COLOR_BGR2GRAY); break;
    case 4: cv::cvtColor(f, gray, cv::COLOR_BGRA2GRAY); break;
    default:
      raise<DataError>("image ", path, ": unsupported channel count ", f.channels());
  }
  return gray;
}

cv::Mat mask_read(const std::string& path) {
  const std::string bytes = read_file(path);
  cv::Mat m;
  try {
    m = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8U,
                             const_cast<char*>(bytes.data())),
                     cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    raise<DataError>("mask '", path, "': cannot decode (", e.what(), ")");
  }
  if (m.empty()) raise<DataError>("mask '", path, "': not a decodable image");
  if (m.type() != CV_8UC1)
    raise<DataError>("mask '", path, "': must be 8-bit single-channel, has ", m.channels(),
                     " channel(s) of depth ", m.depth() == CV_16U ? "16" : "other than 8", " bits");
  return m;
}

void image_write_png(const std::string& path, const cv::Mat& img) {
  std::vector<uchar> buf;
  bool ok = false;
  try {
    ok = cv::imencode(".png", img, buf);
  } catch (const cv::Exception& e) {
    raise<DataError>("cannot encode PNG ", path, ": ", e.what());
  }
  if (!ok) raise<DataError>("cannot encode PNG ", path);
  write_file_atomic(path, std::string(buf.begin(), buf.end()));
}

}  // namespace evax
