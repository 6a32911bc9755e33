// A fast PNG decoder for the common training-image layouts, on libdeflate.
//
// Chest X-ray PNGs (ChestX-ray14, CheXpert exports, evax synth) are large, non-interlaced,
// 8- or 16-bit grey; libpng's zlib inflate dominates the loader's cost. This reader parses the
// chunks itself, checks the CRC of every critical chunk and the zlib Adler-32, inflates the
// whole IDAT stream with libdeflate (about 2.5x zlib) and unfilters the rows.
//
// It only takes what it can decode exactly as OpenCV does; anything else (palette, bit depth
// < 8, interlaced, grey + alpha, damaged or unusual files) returns nullopt and the caller falls
// back to cv::imdecode, which decodes or reports the error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include <opencv2/core.hpp>

namespace evax {

/// Decodes a PNG held in memory to the Mat cv::imdecode(IMREAD_UNCHANGED) gives: CV_8U/CV_16U
/// with 1 (grey), 3 (BGR) or 4 (BGRA) channels. nullopt when the file is not one this decoder
/// handles or is damaged in any way.
std::optional<cv::Mat> png_decode_fast(const uint8_t* data, size_t size);

}  // namespace evax
