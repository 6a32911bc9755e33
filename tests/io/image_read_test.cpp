// image_read_unit: PNG (8/16 bit, gray/colour/alpha), JPEG, DICOM by extension or magic, and
// corrupt or unsupported files; mask_read; image_write_png.
#include "evax/io/image.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <opencv2/imgproc.hpp>
#include <random>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/dicom_write.h"
#include "evax/io/png.h"
#include "io/jpeg_write.h"
#include "io/mat_util.h"
#include "test_util.h"

using evax::test::max_abs_mat_diff;

using Catch::Matchers::Contains;

namespace {

cv::Mat gradient(int rows, int cols, int type, double max) {
  cv::Mat m(rows, cols, CV_64F);
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) m.at<double>(y, x) = std::fmod(x * 37.0 + y * 11.0, max + 1);
  m.at<double>(0, 0) = 0;
  m.at<double>(rows - 1, cols - 1) = max;
  cv::Mat out;
  m.convertTo(out, type);
  return out;
}

/// BT.601 luminance of a BGR(A) image in float, per pixel, / `max`.
cv::Mat luminance(const cv::Mat& bgr, double max) {
  cv::Mat out(bgr.size(), CV_32F);
  for (int y = 0; y < bgr.rows; ++y)
    for (int x = 0; x < bgr.cols; ++x) {
      double v[4] = {0, 0, 0, 0};
      for (int c = 0; c < bgr.channels(); ++c)
        v[c] = bgr.depth() == CV_8U ? bgr.ptr<uint8_t>(y)[x * bgr.channels() + c]
                                    : bgr.ptr<uint16_t>(y)[x * bgr.channels() + c];
      out.at<float>(y, x) = static_cast<float>((0.114 * v[0] + 0.587 * v[1] + 0.299 * v[2]) / max);
    }
  return out;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

void require_data_error(const std::string& path, const std::string& fragment) {
  try {
    evax::image_read_unit(path);
    FAIL("no DataError for " << path);
  } catch (const evax::DataError& e) {
    INFO("message: " << e.what());
    CHECK_THAT(e.what(), Contains(path));
    CHECK_THAT(e.what(), Contains(fragment));
  }
}

}  // namespace

TEST_CASE("image_read_unit: PNG and JPEG", "[image]") {
  evax::test::TempDir tmp("image_read");
  SECTION("8-bit gray PNG reads as p / 255 exactly") {
    const cv::Mat p = gradient(17, 29, CV_8U, 255);
    evax::image_write_png(tmp / "g8.png", p);
    cv::Mat want;
    p.convertTo(want, CV_32F, 1.0 / 255);
    const cv::Mat got = evax::image_read_unit(tmp / "g8.png");
    CHECK(got.type() == CV_32F);
    CHECK(max_abs_mat_diff(got, want) == 0);
  }
  SECTION("16-bit gray PNG reads as p / 65535") {
    const cv::Mat p = gradient(8, 300, CV_16U, 65535);
    evax::image_write_png(tmp / "g16.png", p);
    cv::Mat want;
    p.convertTo(want, CV_32F, 1.0 / 65535);
    CHECK(max_abs_mat_diff(evax::image_read_unit(tmp / "g16.png"), want) == 0);
  }
  SECTION("colour PNG (8 and 16 bit, with and without alpha) reads as luminance") {
    for (int depth : {CV_8U, CV_16U}) {
      for (int channels : {3, 4}) {
        const double max = depth == CV_8U ? 255 : 65535;
        cv::Mat planes[4];
        for (int c = 0; c < channels; ++c) {
          planes[c] = gradient(9, 13, depth, max);
          if (c < 3) cv::flip(planes[c], planes[c], c - 1);  // a different image per channel
        }
        cv::Mat bgr;
        cv::merge(planes, channels, bgr);
        const std::string path = tmp / ("c" + std::to_string(channels) + ".png");
        evax::image_write_png(path, bgr);
        INFO("depth " << depth << ", channels " << channels);
        CHECK(max_abs_mat_diff(evax::image_read_unit(path), luminance(bgr, max)) <= 1e-6);
      }
    }
  }
  SECTION("JPEG (lossy) reads close to its source") {
    const cv::Mat p = gradient(32, 48, CV_8U, 255);
    cv::Mat smooth;
    cv::GaussianBlur(p, smooth, cv::Size(0, 0), 2.0);
    evax::test::JpegWriteOptions o;
    o.quality = 100;
    write_bytes(tmp / "a.jpg", evax::test::jpeg_write(smooth, o));
    cv::Mat want;
    smooth.convertTo(want, CV_32F, 1.0 / 255);
    CHECK(max_abs_mat_diff(evax::image_read_unit(tmp / "a.jpg"), want) <= 4.0 / 255);
  }
}

TEST_CASE("image_read_unit: DICOM by extension or by the DICM magic", "[image]") {
  evax::test::TempDir tmp("image_read_dicom");
  evax::DicomGray16 m;
  m.sop_instance_uid = evax::dicom_uid({5, 1});
  m.study_instance_uid = evax::dicom_uid({5, 2});
  m.series_instance_uid = evax::dicom_uid({5, 3});
  m.rows = 4;
  m.columns = 5;
  m.bits_stored = 12;
  m.monochrome1 = true;
  std::vector<uint16_t> stored(20);
  for (int i = 0; i < 20; ++i) stored[i] = static_cast<uint16_t>(i * 200);
  const std::string dcm = tmp / "x.dcm";
  evax::write_dicom_gray16(dcm, m, stored);
  const std::string bytes = evax::read_file(dcm);
  write_bytes(tmp / "upper.DCM", bytes);
  write_bytes(tmp / "no_extension", bytes);
  write_bytes(tmp / "looks_like.png", bytes);  // the magic wins over a wrong extension
  for (const std::string name : {"x.dcm", "upper.DCM", "no_extension", "looks_like.png"}) {
    INFO(name);
    CHECK(evax::is_dicom_path(tmp / name));
    const cv::Mat u = evax::image_read_unit(tmp / name);
    REQUIRE(u.size() == cv::Size(5, 4));
    for (int i = 0; i < 20; ++i)  // MONOCHROME1: 1 - s / 4095
      CHECK(u.ptr<float>()[i] == Approx(1.0 - i * 200 / 4095.0).margin(1e-6));
  }
  CHECK_FALSE(evax::is_dicom_path(tmp / "missing.png"));
}

TEST_CASE("image_read_unit: unreadable, corrupt and unsupported files throw DataError",
          "[image]") {
  evax::test::TempDir tmp("image_read_bad");
  const cv::Mat p = gradient(64, 64, CV_8U, 255);
  evax::image_write_png(tmp / "good.png", p);
  const std::string png = evax::read_file(tmp / "good.png");

  require_data_error(tmp / "missing.png", "cannot read");
  write_bytes(tmp / "empty.png", "");
  require_data_error(tmp / "empty.png", "file is empty");

  std::mt19937 rng(11);
  std::string junk(3000, '\0');
  for (char& c : junk) c = static_cast<char>(rng());
  write_bytes(tmp / "random.png", junk);
  require_data_error(tmp / "random.png", "not a PNG or JPEG file");
  // A real PNG signature and header followed by garbage, and a PNG cut short.
  write_bytes(tmp / "garbage.png", png.substr(0, 33) + junk);
  require_data_error(tmp / "garbage.png", "PNG: ");
  write_bytes(tmp / "cut.png", png.substr(0, png.size() / 3));
  require_data_error(tmp / "cut.png", "truncated");
  write_bytes(tmp / "random.dcm", junk);
  CHECK_THROWS_AS(evax::image_read_unit(tmp / "random.dcm"), evax::DataError);

  // Formats other than PNG, JPEG and DICOM are named and refused.
  write_bytes(tmp / "float.tiff", std::string("II*\0\x08\0\0\0", 8) + junk);
  require_data_error(tmp / "float.tiff", "a TIFF file");
  require_data_error(tmp / "float.tiff", "evax reads PNG, JPEG and DICOM images");
}

TEST_CASE("mask_read: 8-bit single-channel PNGs only", "[image]") {
  evax::test::TempDir tmp("mask_read");
  const cv::Mat m = gradient(9, 11, CV_8U, 7);
  evax::image_write_png(tmp / "m.png", m);
  const cv::Mat got = evax::mask_read(tmp / "m.png");
  CHECK(got.isContinuous());
  CHECK(max_abs_mat_diff(got, m) == 0);
  const auto mask_error = [&](const std::string& path) -> std::string {
    try {
      evax::mask_read(path);
    } catch (const evax::DataError& e) {
      return e.what();
    }
    return "read";
  };
  evax::image_write_png(tmp / "c.png", cv::Mat(4, 4, CV_8UC3, cv::Scalar(1, 2, 3)));
  CHECK_THAT(mask_error(tmp / "c.png"),
             Contains(tmp / "c.png") && Contains("3 channel(s) of 8 bits"));
  evax::image_write_png(tmp / "d.png", cv::Mat(4, 4, CV_16U, cv::Scalar(1)));
  CHECK_THAT(mask_error(tmp / "d.png"), Contains("1 channel(s) of 16 bits"));
  write_bytes(tmp / "bad.png", "\x89PNG\r\n\x1a\n");
  CHECK_THAT(mask_error(tmp / "bad.png"), Contains("mask '" + (tmp / "bad.png") + "': PNG: "));
  CHECK_THAT(mask_error(tmp / "missing.png"), Contains("missing.png"));
}

TEST_CASE("image_write_png: atomic or plain, level, errors naming the path", "[image]") {
  evax::test::TempDir tmp("image_write");
  const cv::Mat img = gradient(20, 30, CV_16U, 65535);
  for (bool atomic : {true, false})
    for (int level : {0, 1, 9}) {
      evax::PngWriteOptions o;
      o.atomic = atomic;
      o.level = level;
      const std::string path =
          tmp / ("w" + std::to_string(atomic) + std::to_string(level) + ".png");
      evax::image_write_png(path, img, o);
      CHECK(evax::read_file(path) == evax::png_encode(img, level));
    }
  CHECK(evax::read_file(tmp / "w00.png").size() > evax::read_file(tmp / "w09.png").size());
  try {
    evax::image_write_png(tmp / "f.png", cv::Mat(2, 2, CV_32F));
    FAIL("no DataError");
  } catch (const evax::DataError& e) {
    CHECK_THAT(e.what(), Contains("cannot encode PNG " + (tmp / "f.png")));
  }
  evax::PngWriteOptions plain;
  plain.atomic = false;
  CHECK_THROWS_AS(evax::image_write_png(tmp / "no/such/dir/x.png", img, plain), evax::DataError);
  CHECK_THROWS_AS(evax::image_write_png(tmp / "no/such/dir/x.png", img), evax::DataError);
}
