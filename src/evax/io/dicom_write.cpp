#include "evax/io/dicom_write.h"

#include <dcmtk/config/osconfig.h>  // must come first among DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include <charconv>
#include <cmath>

#include "evax/core/error.h"

namespace evax {

std::string dicom_uid(std::initializer_list<uint64_t> parts) {
  std::string uid = kEvaxUidRoot;
  for (uint64_t p : parts) uid += "." + std::to_string(p);
  EVAX_ASSERT(uid.size() <= 64, "UID longer than 64 characters: ", uid);
  return uid;
}

std::string dicom_ds(double value) {
  EVAX_ASSERT(std::isfinite(value), "DS value is not finite");
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof buf, value);
  std::string s(buf, res.ptr);
  if (s.size() > 16) {  // DS holds 16 characters; fall back to fewer significant digits
    res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::general, 9);
    s.assign(buf, res.ptr);
  }
  EVAX_ASSERT(s.size() <= 16, "DS value too long: ", s);
  return s;
}

namespace {

// Collects the first failure so the element list below stays flat.
class Putter {
 public:
  explicit Putter(DcmDataset* ds) : ds_(ds) {}
  void str(const DcmTagKey& tag, const std::string& value) {
    keep(ds_->putAndInsertString(DcmTag(tag), value.c_str()), tag);
  }
  void u16(const DcmTagKey& tag, int value) {
    keep(ds_->putAndInsertUint16(DcmTag(tag), static_cast<Uint16>(value)), tag);
  }
  void u16_array(const DcmTagKey& tag, const uint16_t* data, size_t count) {
    keep(ds_->putAndInsertUint16Array(DcmTag(tag), data, static_cast<unsigned long>(count)), tag);
  }
  const OFCondition& status() const { return status_; }
  const DcmTagKey& failed_tag() const { return failed_; }

 private:
  void keep(const OFCondition& c, const DcmTagKey& tag) {
    if (status_.good() && c.bad()) {
      status_ = c;
      failed_ = tag;
    }
  }
  DcmDataset* ds_;
  OFCondition status_ = EC_Normal;
  DcmTagKey failed_;
};

}  // namespace

void write_dicom_gray16(const std::string& path, const DicomGray16& m,
                        const std::vector<uint16_t>& pixels) {
  EVAX_ASSERT(m.rows > 0 && m.columns > 0 && m.rows <= 65535 && m.columns <= 65535);
  EVAX_ASSERT(m.bits_stored >= 12 && m.bits_stored <= 16, "bits_stored=", m.bits_stored);
  EVAX_ASSERT(pixels.size() == static_cast<size_t>(m.rows) * static_cast<size_t>(m.columns),
              "pixel count ", pixels.size());
  EVAX_ASSERT(!m.sop_instance_uid.empty() && !m.study_instance_uid.empty() &&
              !m.series_instance_uid.empty());
  EVAX_ASSERT(!m.has_rescale || m.rescale_slope != 0.0);
  EVAX_ASSERT(!m.has_window || m.window_width > 0.0);
  if (m.bits_stored < 16) {
    const uint16_t limit = static_cast<uint16_t>((1u << m.bits_stored) - 1u);
    for (uint16_t v : pixels) EVAX_ASSERT(v <= limit, "pixel value ", v, " exceeds BitsStored");
  }

  DcmFileFormat file;
  Putter put(file.getDataset());
  // SOP common, patient, study, series, equipment
  put.str(DCM_SOPClassUID, UID_ComputedRadiographyImageStorage);
  put.str(DCM_SOPInstanceUID, m.sop_instance_uid);
  put.str(DCM_ImageType, "DERIVED\\PRIMARY");
  put.str(DCM_StudyDate, m.study_date);
  put.str(DCM_SeriesDate, m.study_date);
  put.str(DCM_ContentDate, m.study_date);
  put.str(DCM_StudyTime, m.study_time);
  put.str(DCM_SeriesTime, m.study_time);
  put.str(DCM_ContentTime, m.study_time);
  put.str(DCM_AccessionNumber, "");
  put.str(DCM_Modality, m.modality);
  put.str(DCM_Manufacturer, "evax");
  put.str(DCM_ReferringPhysicianName, "");
  put.str(DCM_PatientName, m.patient_name);
  put.str(DCM_PatientID, m.patient_id);
  put.str(DCM_PatientBirthDate, "");
  put.str(DCM_PatientSex, m.patient_sex);
  if (!m.patient_age.empty()) put.str(DCM_PatientAge, m.patient_age);
  put.str(DCM_BodyPartExamined, m.body_part);
  put.str(DCM_ViewPosition, m.view_position);
  put.str(DCM_StudyInstanceUID, m.study_instance_uid);
  put.str(DCM_SeriesInstanceUID, m.series_instance_uid);
  put.str(DCM_StudyID, m.study_id);
  put.str(DCM_SeriesNumber, std::to_string(m.series_number));
  put.str(DCM_InstanceNumber, std::to_string(m.instance_number));
  put.str(DCM_PatientOrientation, m.patient_orientation);
  put.str(DCM_BurnedInAnnotation, "NO");
  put.str(DCM_LossyImageCompression, "00");
  // image pixel module
  put.u16(DCM_SamplesPerPixel, 1);
  put.str(DCM_PhotometricInterpretation, m.monochrome1 ? "MONOCHROME1" : "MONOCHROME2");
  put.u16(DCM_Rows, m.rows);
  put.u16(DCM_Columns, m.columns);
  put.u16(DCM_BitsAllocated, 16);
  put.u16(DCM_BitsStored, m.bits_stored);
  put.u16(DCM_HighBit, m.bits_stored - 1);
  put.u16(DCM_PixelRepresentation, 0);
  if (m.has_window) {
    put.str(DCM_WindowCenter, dicom_ds(m.window_center));
    put.str(DCM_WindowWidth, dicom_ds(m.window_width));
  }
  if (m.has_rescale) {
    put.str(DCM_RescaleIntercept, dicom_ds(m.rescale_intercept));
    put.str(DCM_RescaleSlope, dicom_ds(m.rescale_slope));
    put.str(DCM_RescaleType, m.rescale_type);
  }
  put.u16_array(DCM_PixelData, pixels.data(), pixels.size());
  if (put.status().bad())
    raise<DataError>("cannot build DICOM ", path, ": element ", put.failed_tag().toString().c_str(),
                     ": ", put.status().text());

  const OFCondition c = file.saveFile(path.c_str(), EXS_LittleEndianExplicit, EET_ExplicitLength,
                                      EGL_withoutGL, EPD_noChange, 0, 0, EWM_createNewMeta);
  if (c.bad()) raise<DataError>("cannot write DICOM file ", path, ": ", c.text());
}

}  // namespace evax
