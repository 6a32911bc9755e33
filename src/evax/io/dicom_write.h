// Writes one 16-bit grayscale radiograph as a DICOM file (Computed Radiography Image IOD,
// explicit VR little endian). Everything in the file comes from the arguments: no clock, no
// random UIDs, so equal inputs give byte-identical files.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace evax {

/// UID root of files made by evax. Placeholder arc under the Medical Connections root;
/// replace it with a registered root before using evax UIDs outside of test data.
inline constexpr const char* kEvaxUidRoot = "1.2.826.0.1.3680043.10.1234";

/// Deterministic UID: `kEvaxUidRoot` + "." + the parts joined by ".". Asserts the DICOM limit
/// of 64 characters.
std::string dicom_uid(std::initializer_list<uint64_t> parts);

/// Attributes of one single-frame 16-bit grayscale DICOM image.
struct DicomGray16 {
  std::string sop_instance_uid;              ///< required, e.g. from dicom_uid()
  std::string study_instance_uid;            ///< required
  std::string series_instance_uid;           ///< required
  std::string patient_id;                    ///< (0010,0020)
  std::string patient_name;                  ///< (0010,0010), DICOM PN such as "Synth^P00045"
  std::string patient_sex;                   ///< "M", "F", "O" or empty
  std::string patient_age;                   ///< "045Y" form, or empty
  std::string modality = "CR";               ///< (0008,0060)
  std::string view_position;                 ///< "PA", "AP", "LL", ... or empty
  std::string body_part = "CHEST";           ///< (0018,0015)
  std::string patient_orientation = "L\\F";  ///< row and column directions in the patient
  std::string study_date = "20200101";       ///< fixed dates: never the current date
  std::string study_time = "120000";         ///< fixed time
  std::string study_id = "1";                ///< (0020,0010)
  int series_number = 1;                     ///< (0020,0011)
  int instance_number = 1;                   ///< (0020,0013)
  int rows = 0;                              ///< image height in pixels
  int columns = 0;                           ///< image width in pixels
  int bits_stored = 16;                      ///< 12..16 (BitsAllocated is 16, HighBit = this-1)
  bool monochrome1 = false;                  ///< MONOCHROME1: higher stored values look darker
  bool has_rescale = false;                  ///< write the modality LUT below
  double rescale_slope = 1.0;                ///< modality value = slope * stored + intercept
  double rescale_intercept = 0.0;            ///< see rescale_slope
  std::string rescale_type = "US";           ///< (0028,1054), "US" = unspecified units
  bool has_window = false;                   ///< write the VOI window below
  double window_center = 0.0;                ///< in modality units
  double window_width = 0.0;                 ///< in modality units, > 0
};

/// Writes `pixels` (rows*columns values, row-major, each < 2^bits_stored) with `meta` to `path`.
/// The folder must exist. Throws evax::DataError naming the path when the file cannot be written.
void write_dicom_gray16(const std::string& path, const DicomGray16& meta,
                        const std::vector<uint16_t>& pixels);

/// Formats a DICOM DS value: shortest round-trip decimal, locale independent, at most 16 chars.
std::string dicom_ds(double value);

}  // namespace evax
