// Reads any training image as one grayscale CV_32F plane in [0,1]: PNG (8 or 16 bit), JPEG and
// the other formats OpenCV decodes, and DICOM (dicom_read + dicom_to_unit, see dicom.h).
//
// Non-DICOM images: colour is reduced to the BT.601 luminance 0.299 R + 0.587 G + 0.114 B in
// float (no rounding), alpha is dropped, and values are divided by the depth's maximum (255 or
// 65535). An 8-bit PNG p written by evax synth therefore reads back as p / 255.
#pragma once

#include <opencv2/core.hpp>
#include <string>

#include "evax/io/dicom.h"

namespace evax {

/// How image_read_unit decodes a file.
struct ImageReadOptions {
  /// DICOM decoding: VOI, frame and colour policy (ignored for other formats).
  DicomOptions dicom;
};

/// Whether `path` is read as DICOM: extension .dcm/.dicom/.dic (any case) or "DICM" at byte 128.
bool is_dicom_path(const std::string& path);

/// Reads the image at `path` as CV_32F H x W in [0,1], brighter = denser. Throws DataError with
/// the path and the reason when the file is missing, empty, corrupt or of an unsupported depth.
cv::Mat image_read_unit(const std::string& path, const ImageReadOptions& options = {});

/// Reads a label mask: an 8-bit single-channel image (PNG) whose values are class ids or bits,
/// returned as CV_8U exactly as stored. DataError naming the file when it cannot be decoded or is
/// not 8-bit single-channel.
cv::Mat mask_read(const std::string& path);

/// Writes `img` (CV_8U grey or BGR, or CV_16U) as a PNG at `path`, atomically. DataError naming the
/// path when it cannot be encoded or written.
void image_write_png(const std::string& path, const cv::Mat& img);

}  // namespace evax
