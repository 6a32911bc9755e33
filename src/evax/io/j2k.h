// JPEG 2000 decoding from memory (OpenJPEG underneath), for DICOM transfer syntaxes
// 1.2.840.10008.1.2.4.90 (lossless only) and .91 (lossy): a raw J2K codestream, or a JP2 file
// (detected by its signature box; non-conformant in DICOM but seen in the wild).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace evax {

/// A decoded JPEG 2000 image: every component at full resolution.
struct J2kImage {
  int width = 0;
  int height = 0;
  int components = 0;
  int precision = 0;       ///< bits per sample of every component (SIZ Ssiz + 1)
  bool is_signed = false;  ///< component 0 holds two's complement samples (SIZ Ssiz bit 7)
  /// Samples, component-interleaved per pixel (R G B R G B …), rows top to bottom: the values
  /// OpenJPEG decodes (negative when `is_signed`), any inverse colour transform (RCT/ICT)
  /// already applied.
  std::vector<int32_t> samples;
};

/// What the caller expects (from the DICOM attributes); checked after the main header, before
/// any sample is decoded, so that a damaged header cannot make OpenJPEG allocate gigabytes.
struct J2kExpect {
  int width = 0;       ///< Columns
  int height = 0;      ///< Rows
  int components = 0;  ///< SamplesPerPixel
};

/// Decodes one JPEG 2000 codestream or JP2 file of `size` bytes at `data`. Strict: a truncated
/// or damaged stream throws DataError "JPEG 2000: …" with OpenJPEG's own messages and never
/// decodes partially; so do a size or component count other than `expect`, subsampled
/// components, and components of different precision. Thread-safe.
J2kImage j2k_decode(const uint8_t* data, size_t size, const J2kExpect& expect);

}  // namespace evax
