#include "evax/io/dicom_write.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "skip.h"
#include "test_util.h"

using Catch::Matchers::Contains;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

evax::DicomGray16 sample_meta() {
  evax::DicomGray16 m;
  m.sop_instance_uid = evax::dicom_uid({3, 7, 42});
  m.study_instance_uid = evax::dicom_uid({1, 7, 42});
  m.series_instance_uid = evax::dicom_uid({2, 7, 42});
  m.patient_id = "P00001";
  m.patient_name = "Synth^P00001";
  m.patient_sex = "F";
  m.patient_age = "054Y";
  m.view_position = "PA";
  m.rows = 3;
  m.columns = 5;
  m.bits_stored = 12;
  m.monochrome1 = true;
  m.has_rescale = true;
  m.rescale_slope = 0.5;
  m.rescale_intercept = -1024;
  m.has_window = true;
  m.window_center = 0.5 * 4095 * 0.5 - 1024;
  m.window_width = 4095 * 0.5;
  return m;
}

std::vector<uint16_t> sample_pixels() {
  std::vector<uint16_t> px(15);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint16_t>(i * 273);  // up to 3822
  return px;
}

std::string get_string(DcmDataset* ds, const DcmTagKey& tag) {
  OFString v;
  REQUIRE(ds->findAndGetOFStringArray(tag, v).good());
  return v.c_str();
}

uint16_t get_u16(DcmDataset* ds, const DcmTagKey& tag) {
  Uint16 v = 0;
  REQUIRE(ds->findAndGetUint16(tag, v).good());
  return v;
}

bool have_dcmdump() { return std::system("command -v dcmdump >/dev/null 2>&1") == 0; }

}  // namespace

TEST_CASE("DICOM writer: attributes and pixels read back with DCMTK") {
  evax::test::TempDir tmp("dicom_write");
  const std::string path = tmp / "a.dcm";
  const evax::DicomGray16 m = sample_meta();
  const std::vector<uint16_t> px = sample_pixels();
  evax::write_dicom_gray16(path, m, px);

  DcmFileFormat file;
  REQUIRE(file.loadFile(path.c_str()).good());
  DcmDataset* ds = file.getDataset();
  CHECK(ds->getOriginalXfer() == EXS_LittleEndianExplicit);
  CHECK(get_string(ds, DCM_SOPClassUID) == UID_ComputedRadiographyImageStorage);
  CHECK(get_string(ds, DCM_SOPInstanceUID) == m.sop_instance_uid);
  CHECK(get_string(ds, DCM_StudyInstanceUID) == m.study_instance_uid);
  CHECK(get_string(ds, DCM_SeriesInstanceUID) == m.series_instance_uid);
  CHECK(get_string(ds, DCM_PatientID) == "P00001");
  CHECK(get_string(ds, DCM_PatientName) == "Synth^P00001");
  CHECK(get_string(ds, DCM_Modality) == "CR");
  CHECK(get_string(ds, DCM_ViewPosition) == "PA");
  CHECK(get_string(ds, DCM_StudyDate) == "20200101");
  CHECK(get_string(ds, DCM_PhotometricInterpretation) == "MONOCHROME1");
  CHECK(get_string(ds, DCM_RescaleSlope) == "0.5");
  CHECK(get_string(ds, DCM_RescaleIntercept) == "-1024");
  CHECK(get_string(ds, DCM_RescaleType) == "US");
  CHECK(get_string(ds, DCM_WindowWidth) == "2047.5");
  CHECK(get_u16(ds, DCM_Rows) == 3);
  CHECK(get_u16(ds, DCM_Columns) == 5);
  CHECK(get_u16(ds, DCM_BitsAllocated) == 16);
  CHECK(get_u16(ds, DCM_BitsStored) == 12);
  CHECK(get_u16(ds, DCM_HighBit) == 11);
  CHECK(get_u16(ds, DCM_PixelRepresentation) == 0);
  CHECK(get_u16(ds, DCM_SamplesPerPixel) == 1);
  const Uint16* data = nullptr;
  unsigned long count = 0;
  REQUIRE(ds->findAndGetUint16Array(DCM_PixelData, data, &count).good());
  REQUIRE(count == px.size());
  CHECK(std::vector<uint16_t>(data, data + count) == px);
}

TEST_CASE("DICOM writer: optional modules are left out when not asked for") {
  evax::test::TempDir tmp("dicom_plain");
  evax::DicomGray16 m = sample_meta();
  m.has_rescale = false;
  m.has_window = false;
  m.monochrome1 = false;
  m.bits_stored = 16;
  evax::write_dicom_gray16(tmp / "b.dcm", m, sample_pixels());
  DcmFileFormat file;
  REQUIRE(file.loadFile((tmp / "b.dcm").c_str()).good());
  DcmDataset* ds = file.getDataset();
  CHECK_FALSE(ds->tagExists(DCM_RescaleSlope));
  CHECK_FALSE(ds->tagExists(DCM_WindowCenter));
  CHECK(get_string(ds, DCM_PhotometricInterpretation) == "MONOCHROME2");
  CHECK(get_u16(ds, DCM_HighBit) == 15);
}

TEST_CASE("DICOM writer: same input gives byte-identical files") {
  evax::test::TempDir tmp("dicom_same");
  evax::write_dicom_gray16(tmp / "a.dcm", sample_meta(), sample_pixels());
  evax::write_dicom_gray16(tmp / "b.dcm", sample_meta(), sample_pixels());
  const std::string a = slurp(tmp / "a.dcm");
  CHECK(a.size() > 132);
  CHECK(a == slurp(tmp / "b.dcm"));
  CHECK(a.compare(128, 4, "DICM") == 0);
}

TEST_CASE("DICOM writer: an unwritable path throws DataError naming it") {
  evax::test::TempDir tmp("dicom_bad");
  const std::string bad = tmp / "no/such/dir/x.dcm";
  CHECK_THROWS_AS(evax::write_dicom_gray16(bad, sample_meta(), sample_pixels()), evax::DataError);
  CHECK_THROWS_WITH(evax::write_dicom_gray16(bad, sample_meta(), sample_pixels()), Contains(bad));
}

TEST_CASE("DICOM writer: contract violations are internal errors") {
  evax::test::TempDir tmp("dicom_contract");
  evax::DicomGray16 m = sample_meta();
  std::vector<uint16_t> px = sample_pixels();
  px[0] = 4096;  // does not fit 12 bits
  CHECK_THROWS_AS(evax::write_dicom_gray16(tmp / "x.dcm", m, px), evax::InternalError);
  CHECK_THROWS_AS(evax::write_dicom_gray16(tmp / "x.dcm", m, std::vector<uint16_t>(3)),
                  evax::InternalError);
  m.bits_stored = 8;
  CHECK_THROWS_AS(evax::write_dicom_gray16(tmp / "x.dcm", m, sample_pixels()), evax::InternalError);
}

TEST_CASE("DICOM UIDs are deterministic and at most 64 characters") {
  CHECK(evax::dicom_uid({3, 0, 12}) == std::string(evax::kEvaxUidRoot) + ".3.0.12");
  CHECK(evax::dicom_uid({1, 2}) == evax::dicom_uid({1, 2}));
  const uint64_t big = UINT64_MAX;
  CHECK(evax::dicom_uid({3, big, 9999999}).size() <= 64);
  CHECK_THROWS_AS(evax::dicom_uid({big, big, big}), evax::InternalError);
}

TEST_CASE("DICOM DS values are short, exact decimals") {
  CHECK(evax::dicom_ds(0.5) == "0.5");
  CHECK(evax::dicom_ds(-1024) == "-1024");
  CHECK(evax::dicom_ds(2) == "2");
  CHECK(evax::dicom_ds(1.0 / 3.0).size() <= 16);
  CHECK(std::stod(evax::dicom_ds(1.0 / 3.0)) == Approx(1.0 / 3.0));
}

TEST_CASE("DICOM writer: dcmdump reads the file without warnings") {
  if (!have_dcmdump()) EVAX_SKIP("dcmdump is not on PATH (Debian package dcmtk)");
  evax::test::TempDir tmp("dicom_dump");
  evax::write_dicom_gray16(tmp / "a.dcm", sample_meta(), sample_pixels());
  const std::string cmd = "dcmdump '" + (tmp / "a.dcm") + "' >'" + (tmp / "out.txt") + "' 2>'" +
                          (tmp / "err.txt") + "'";
  CHECK(std::system(cmd.c_str()) == 0);
  CHECK(slurp(tmp / "err.txt").empty());
  CHECK_THAT(slurp(tmp / "out.txt"), Contains("MONOCHROME1"));
}
