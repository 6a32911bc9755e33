// JPEG decoding with libjpeg-turbo through the libjpeg API (Debian libjpeg62-turbo-dev).
//
// Gives what cv::imdecode(buf, IMREAD_UNCHANGED) gave with OpenCV 4.6 on the same library:
//
//   1 component (grey)                 CV_8UC1
//   3 components (YCbCr or RGB)        CV_8UC3, BGR
//   4 components (CMYK or YCCK)        CV_8UC3, BGR from the stored (Adobe-inverted) CMYK values
//                                      c, m, y, k as R = k - ((255 - c) * k >> 8), likewise G
//                                      from m and B from y (OpenCV's conversion)
//
// with libjpeg's defaults, as OpenCV and Pillow decode: the accurate integer IDCT (JDCT_ISLOW),
// fancy (smooth) chroma upsampling, no scaling. Baseline, progressive, arithmetic-coded and
// restart-marker files all decode; EXIF orientation is not applied (IMREAD_UNCHANGED does not).
//
// Every libjpeg error is a DataError, never an exit(): a custom error manager longjmps out of the
// library. libjpeg only warns about corrupt entropy-coded data and a file that ends early (it
// then fills the rest of the image with grey); evax treats those warnings as errors too, so a
// damaged file is never read as a silently wrong image. Only the harmless metadata warnings
// (an unknown JFIF revision or Adobe transform code) pass.
#pragma once

#include <cstddef>
#include <cstdint>

#include <opencv2/core.hpp>

namespace evax {

/// Whether `data` starts like a JPEG file (the SOI marker FF D8 and the next marker's FF).
bool is_jpeg(const uint8_t* data, size_t size);

/// Decodes a JPEG held in memory (see the table above). DataError "JPEG: <reason>" when the file
/// is damaged, truncated, unsupported or over 2^30 pixels.
cv::Mat jpeg_decode(const uint8_t* data, size_t size);

}  // namespace evax
