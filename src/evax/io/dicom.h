// Reads DICOM images (DCMTK underneath) into float pixel values, and maps them to [0,1].
//
// dicom_read() returns one frame as CV_32F modality values, oriented so that brighter = denser:
//   1. the stored bits of each sample are extracted (BitsStored/HighBit mask, sign extension
//      when PixelRepresentation is 1), giving s in [s_min, s_max] = [0, 2^B - 1] or
//      [-2^(B-1), 2^(B-1) - 1], B = BitsStored;
//   2. the Modality LUT is applied: the first item of a Modality LUT Sequence when present
//      (v = LUT[clamp(s - first_mapped, 0, entries - 1)]), else RescaleSlope/Intercept when both
//      are present (v = slope * s + intercept), else v = s. [lo, hi] is the range of v over
//      every s in [s_min, s_max] (the modality range of the stored bits);
//   3. MONOCHROME1 is inverted over that range, v' = lo + hi - v, so that 1 = densest below.
// JPEG 2000 (transfer syntaxes 1.2.840.10008.1.2.4.90 lossless and .91 lossy; DCMTK has no
// codec for them) is decoded with OpenJPEG (io/j2k.h), one frame at a time: the frame's fragments
// are found through the Basic or Extended Offset Table, else one fragment per frame, else the
// fragments that start a codestream. The decoded samples are the stored values s of step 1, as
// pydicom + pylibjpeg-openjpeg give them: when the codestream's signedness differs from
// PixelRepresentation its low `precision` bits are read with the data set's signedness;
// otherwise they are used as decoded, not masked to BitsStored (a codestream precision above
// BitsStored is common). Steps 2 and 3 are the same as for native data; YBR_ICT/YBR_RCT decode
// to RGB.
// Colour images (RGB, YBR_FULL, YBR_FULL_422) become the BT.601 luminance
// 0.299 R + 0.587 G + 0.114 B (for YBR this is the Y sample itself), with [lo, hi] the stored
// range and no Modality LUT; ColorPolicy::kReject refuses them instead.
//
// The [0,1] rule (dicom_to_unit), shared with evax synth's documented value rule:
//   * VOI requested and present: x = the modality value before the MONOCHROME1 inversion; with
//     a VOI LUT Sequence (preferred, as pydicom does) y = LUT[clamp(x - first)] / (2^bits - 1);
//     else with WindowCenter c / WindowWidth w and VOILUTFunction
//       LINEAR (default, PS3.3 C.11.2.1.2.1): y = clamp((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
//       LINEAR_EXACT (C.11.2.1.3.2):          y = clamp((x - c) / w + 0.5, 0, 1)
//       SIGMOID (C.11.2.1.3.1):               y = 1 / (1 + exp(-4 (x - c) / w));
//     then y = 1 - y for MONOCHROME1.
//   * otherwise: y = (v' - lo) / (hi - lo), with v' after the MONOCHROME1 inversion.
// For a synth DICOM (stored q or M - q, slope > 0) the second case gives exactly q / M.
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace evax {

/// What dicom_read does with colour (RGB, YBR) images.
enum class ColorPolicy {
  kConvert,  ///< BT.601 luminance of the colour samples
  kReject,   ///< throw DataError naming the photometric interpretation
};

/// How to decode a DICOM file.
struct DicomOptions {
  /// Map to [0,1] through the file's VOI LUT or window when present (image_read_unit,
  /// `evax decode --voi`); dicom_read itself always returns modality values.
  bool apply_voi = false;
  /// Frame of a multi-frame image, 0-based (the first frame by default).
  int frame = 0;
  /// Colour images: luminance (default) or DataError.
  ColorPolicy color = ColorPolicy::kConvert;
};

/// A lookup table from a Modality or VOI LUT Sequence item.
struct DicomLut {
  int64_t first_mapped = 0;     ///< input value that maps to data[0]
  int bits = 16;                ///< nominal bits per entry (LUTDescriptor third value)
  std::vector<uint16_t> data;   ///< the entries (LUTDescriptor first value of them)
};

/// One decoded frame and the attributes that define its values.
struct DicomPixels {
  cv::Mat image;                  ///< CV_32F rows x cols, modality values, brighter = denser
  int rows = 0;                   ///< (0028,0010)
  int cols = 0;                   ///< (0028,0011)
  int samples_per_pixel = 1;      ///< 1 for grayscale, 3 for colour
  int bits_allocated = 0;         ///< (0028,0100)
  int bits_stored = 0;            ///< (0028,0101)
  int high_bit = 0;               ///< (0028,0102)
  bool is_signed = false;         ///< PixelRepresentation 1: two's complement samples
  std::string photometric;        ///< PhotometricInterpretation as in the file
  bool inverted = false;          ///< MONOCHROME1: `image` holds lo + hi - v
  bool is_color = false;          ///< `image` is the luminance of a colour image
  bool has_rescale = false;       ///< RescaleSlope and RescaleIntercept were applied
  double slope = 1.0;             ///< RescaleSlope (1 when absent)
  double intercept = 0.0;         ///< RescaleIntercept (0 when absent)
  bool has_modality_lut = false;  ///< a Modality LUT Sequence was applied (overrides rescale)
  DicomLut modality_lut;          ///< that LUT
  bool has_window = false;        ///< WindowCenter/Width present (first pair, width > 0)
  double window_center = 0.0;     ///< (0028,1050), modality units
  double window_width = 0.0;      ///< (0028,1051), modality units
  std::string voi_function = "LINEAR";  ///< (0028,1056): LINEAR, LINEAR_EXACT or SIGMOID
  bool has_voi_lut = false;       ///< a VOI LUT Sequence is present (first item)
  DicomLut voi_lut;               ///< that LUT
  std::string transfer_syntax_uid;   ///< transfer syntax the file was encoded with
  std::string transfer_syntax_name;  ///< its name, e.g. "JPEG Lossless, Non-hierarchical, ..."
  int frames = 1;                 ///< NumberOfFrames (1 when absent)
  int frame = 0;                  ///< the frame in `image`
  double lo = 0.0;                ///< modality value range of the stored bits: lowest
  double hi = 0.0;                ///< ... and highest (hi > lo)
};

/// Decodes one frame of the DICOM file at `path` (see the top of this file). Throws DataError
/// naming the file for unreadable or malformed files, unsupported transfer syntaxes
/// ("unsupported transfer syntax <UID> (<name>)"), missing or short pixel data, damaged
/// compressed data (JPEG 2000: OpenJPEG's message), and colour under ColorPolicy::kReject;
/// ConfigError for a negative frame. Thread-safe.
DicomPixels dicom_read(const std::string& path, const DicomOptions& options = {});

/// Maps decoded values to [0,1] by the rule at the top of this file: VOI (when `use_voi` and
/// the file has one) or the modality range of the stored bits. Returns CV_32F.
cv::Mat dicom_to_unit(const DicomPixels& pixels, bool use_voi);

/// Whether the file at `path` starts with a DICOM preamble ("DICM" at offset 128).
bool has_dicom_magic(const std::string& path);

}  // namespace evax
