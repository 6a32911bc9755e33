// Reads any training image as one grayscale CV_32F plane in [0,1]: PNG (every bit depth, colour
// type and interlacing; png.h), JPEG (jpeg.h) and DICOM (dicom_read + dicom_to_unit, see
// dicom.h). Files are told apart by their first bytes (DICOM also by extension); any other format
// (TIFF, BMP, WebP, …) is a DataError that says so: convert such images to PNG first.
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

/// Decodes PNG or JPEG bytes, told apart by their signature, to the continuous Mat that
/// cv::imdecode(IMREAD_UNCHANGED) gave: CV_8U or CV_16U, 1 (grey), 3 (BGR) or 4 (BGRA) channels.
/// DataError "image <source>: <reason>" when the bytes are damaged or another format.
cv::Mat image_decode(const std::string& bytes, const std::string& source);

/// Reads the image at `path` as CV_32F H x W in [0,1], brighter = denser. Throws DataError with
/// the path and the reason when the file is missing, empty, corrupt or of an unsupported format.
cv::Mat image_read_unit(const std::string& path, const ImageReadOptions& options = {});

/// Reads a label mask: an 8-bit single-channel image (PNG) whose values are class ids or bits,
/// returned as CV_8U exactly as stored. DataError naming the file when it cannot be decoded or is
/// not 8-bit single-channel.
cv::Mat mask_read(const std::string& path);

/// How image_write_png writes a file.
struct PngWriteOptions {
  /// png_encode's zlib-like level, 0 (stored) to 12; 1, the fastest, is about as fast as
  /// OpenCV's default PNG writer, with files a few percent larger than zlib's best.
  int level = 1;
  /// Temporary file, fsync and rename (write_file_atomic), so a reader never sees a torn file;
  /// false: a plain write, for tools that write thousands of files (evax synth, mask builders).
  bool atomic = true;
};

/// Writes `img` (CV_8U or CV_16U; grey, BGR or BGRA) as a PNG at `path`. DataError naming the
/// path when it cannot be encoded or written.
void image_write_png(const std::string& path, const cv::Mat& img,
                     const PngWriteOptions& options = {});

}  // namespace evax
