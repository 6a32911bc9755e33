// PNG decoding and encoding on libdeflate, without libpng or OpenCV's imgcodecs.
//
// Decoding gives exactly what cv::imdecode(buf, IMREAD_UNCHANGED) gave with OpenCV 4.6 on
// libpng, for every layout the PNG specification allows:
//
//   grey 1/2/4-bit      CV_8UC1, samples scaled to the full range (1-bit 1 -> 255, 4-bit 15 -> 255)
//   grey 8/16-bit       CV_8UC1 / CV_16UC1 (a tRNS colour key is ignored, as OpenCV does)
//   grey + alpha        CV_8UC4 / CV_16UC4: B = G = R = grey, then alpha
//   RGB                 CV_8UC3 / CV_16UC3, BGR; with a tRNS colour key CV_8UC4 / CV_16UC4 BGRA,
//                       alpha 0 where the pixel equals the key and the maximum elsewhere
//   palette 1/2/4/8-bit CV_8UC3 BGR; with a tRNS chunk CV_8UC4 BGRA (entries past tRNS opaque)
//   RGBA                CV_8UC4 / CV_16UC4, BGRA
//
// 16-bit samples come in host byte order; Adam7-interlaced files decode to the same pixels.
// Gamma, colour profiles and the like are not applied (OpenCV does not either).
//
// The decoder is fast on the common training image (a large non-interlaced 8- or 16-bit grey
// PNG): it inflates the whole IDAT stream at once with libdeflate (about 2.5x zlib) and unfilters
// the rows in place. It is also strict, where libpng would only warn: a bad CRC in any chunk, a
// bad Adler-32, data that ends early or holds more rows than the header says, IDATs that are not
// consecutive, a missing IEND, a palette index past the palette and any structural error are a
// DataError naming the reason. Images over 2^30 pixels or 2^20 pixels a side (OpenCV's limits)
// are refused before anything is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <opencv2/core.hpp>

namespace evax {

/// The largest image the PNG and JPEG decoders accept (OpenCV's limits).
constexpr int64_t kMaxImagePixels = int64_t{1} << 30;
constexpr int64_t kMaxImageSide = int64_t{1} << 20;

/// Whether `data` starts with the 8-byte PNG signature.
bool is_png(const uint8_t* data, size_t size);

/// Decodes a PNG held in memory to the continuous Mat cv::imdecode(IMREAD_UNCHANGED) gives (see
/// the table above). DataError "PNG: <reason>" when the file is damaged, truncated or invalid.
cv::Mat png_decode(const uint8_t* data, size_t size);

/// Encodes `img` (CV_8U or CV_16U; 1 channel grey, 3 BGR or 4 BGRA) as a non-interlaced PNG of the
/// same depth (RGB/RGBA stored), each row with the filter of the smallest sum of absolute values
/// (libpng's heuristic; none at level 0) and one zlib stream from libdeflate at `level` (0 = stored
/// only, 1 fastest … 9 zlib's best, up to 12). DataError for other types or levels.
std::string png_encode(const cv::Mat& img, int level);

}  // namespace evax
