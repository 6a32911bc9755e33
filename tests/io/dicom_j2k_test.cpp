// JPEG 2000 DICOM (1.2.840.10008.1.2.4.90 lossless, .91 lossy), decoded through OpenJPEG:
// lossless files equal their uncompressed originals exactly, every file equals what pydicom 3
// with pylibjpeg-openjpeg decodes, damaged codestreams are DataErrors naming the file. The
// fixtures (a 15-of-16-bit MONOCHROME1 chest radiograph, signed data with a rescale, precision
// and signedness that disagree with the data set, multi-frame and multi-fragment layouts, JP2,
// RGB) are written at test time by tools/make_j2k_fixtures.py into the build tree.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/dicom.h"
#include "evax/io/image.h"
#include "evax/io/safetensors.h"
#include "io/mat_util.h"
#include "test_util.h"

using evax::test::max_abs_mat_diff;

using Catch::Matchers::Contains;

namespace {

constexpr const char* kLossless = "1.2.840.10008.1.2.4.90";
constexpr const char* kLossy = "1.2.840.10008.1.2.4.91";

/// The fixtures, written once per test process (about a second).
struct Fixtures {
  std::unique_ptr<evax::test::TempDir> dir;
  nlohmann::json index;
  const nlohmann::json& at(const std::string& name) const { return index.at("fixtures").at(name); }
  std::string path(const std::string& name) const { return at(name).at("file"); }
};

const Fixtures& fixtures() {
  static const Fixtures f = [] {
    Fixtures out;
    // No silent pass without the reference: the tests fail, saying what is missing.
    if (std::string(EVAX_PYTHON).empty())
      FAIL("EVAX_PYTHON not configured: the JPEG 2000 tests need pydicom and pylibjpeg-openjpeg "
           "(tools/make_j2k_fixtures.py)");
    out.dir = std::make_unique<evax::test::TempDir>("dicom_j2k");
    const std::string log = *out.dir / "log.txt";
    const std::string cmd = std::string(EVAX_PYTHON) + " " +
                            evax::test::source_path("tools/make_j2k_fixtures.py") + " --out " +
                            out.dir->str() + " > " + log + " 2>&1";
    const int rc = std::system(cmd.c_str());
    INFO("command: " << cmd << "\n" << evax::read_file(log));
    if (rc != 0) FAIL("tools/make_j2k_fixtures.py failed: the JPEG 2000 reference is missing");
    out.index = nlohmann::json::parse(evax::read_file(out.dir->str() + "/index.json"));
    return out;
  }();
  return f;
}

/// Reference tensors of a fixture: truth, pixels, modality (float64, frames first).
evax::TensorMap reference(const std::string& name) {
  return evax::safetensors_load(fixtures().at(name).at("reference"));
}

/// Frame `k` of a (frames, rows, cols) tensor as a CV_64F view (the tensor must outlive it).
cv::Mat frame_of(const at::Tensor& t, int k) {
  const at::Tensor f = t.select(0, k);
  REQUIRE(f.is_contiguous());
  return cv::Mat(static_cast<int>(f.size(0)), static_cast<int>(f.size(1)), CV_64F,
                 f.data_ptr<double>());
}

/// Luminance 0.299 R + 0.587 G + 0.114 B of frame `k` of a (frames, rows, cols, 3) tensor.
cv::Mat luminance_of(const at::Tensor& t, int k) {
  const at::Tensor f = t.select(0, k);
  const at::Tensor y =
      (f.select(2, 0) * 0.299 + f.select(2, 1) * 0.587 + f.select(2, 2) * 0.114).contiguous();
  return cv::Mat(static_cast<int>(y.size(0)), static_cast<int>(y.size(1)), CV_64F,
                 y.data_ptr<double>())
      .clone();
}

/// The stored values behind a grayscale dicom_read result: MONOCHROME1 inversion and rescale
/// undone (the fixtures have no Modality LUT).
cv::Mat stored_values(const evax::DicomPixels& p) {
  REQUIRE_FALSE(p.has_modality_lut);
  cv::Mat v;
  p.image.convertTo(v, CV_64F);
  if (p.inverted) v = (p.lo + p.hi) - v;
  if (p.has_rescale) v = (v - p.intercept) / p.slope;
  return v;
}

/// Modality values with evax's MONOCHROME1 inversion undone (pydicom does not invert).
cv::Mat modality_values(const evax::DicomPixels& p) {
  cv::Mat v;
  p.image.convertTo(v, CV_64F);
  if (p.inverted) v = (p.lo + p.hi) - v;
  return v;
}

evax::DicomPixels read_frame(const std::string& path, int frame) {
  evax::DicomOptions o;
  o.frame = frame;
  return evax::dicom_read(path, o);
}

void require_data_error(const std::string& path, const std::string& fragment) {
  try {
    evax::dicom_read(path);
    FAIL("no DataError for " << path);
  } catch (const evax::DataError& e) {
    INFO("message: " << e.what());
    CHECK_THAT(e.what(), Contains(fragment));
    CHECK_THAT(e.what(), Contains(path));
  }
}

const char* const kLosslessNames[] = {
    "cr_lossless",      "cr_lossless_fragments", "cr_lossless_jp2", "signed_lossless",
    "signed_as_unsigned", "prec16_lossless",     "multiframe_bot",  "multiframe_nobot",
    "multiframe_eot",   "rgb_rct",               "rgb_plain"};
const char* const kLossyNames[] = {"cr_lossy",     "cr_lossy_psnr",    "signed_lossy",
                                   "prec16_lossy", "multiframe_lossy", "rgb_ict"};

}  // namespace

TEST_CASE("dicom_read JPEG 2000: the 15-of-16-bit MONOCHROME1 radiograph", "[dicom][j2k]") {
  const Fixtures& fx = fixtures();
  const evax::DicomPixels native = evax::dicom_read(fx.path("cr_native"));
  const evax::DicomPixels lossless = evax::dicom_read(fx.path("cr_lossless"));
  const evax::DicomPixels lossy = evax::dicom_read(fx.path("cr_lossy"));
  const evax::TensorMap ref = reference("cr_lossless");
  const cv::Mat truth = frame_of(*evax::find(ref, "truth"), 0);
  const double m = 32767;

  CHECK(lossless.transfer_syntax_uid == kLossless);
  CHECK(lossy.transfer_syntax_uid == kLossy);
  for (const evax::DicomPixels* p : {&lossless, &lossy}) {
    CHECK(p->rows == 320);
    CHECK(p->cols == 256);
    CHECK(p->bits_allocated == 16);
    CHECK(p->bits_stored == 15);
    CHECK_FALSE(p->is_signed);
    CHECK(p->photometric == "MONOCHROME1");
    CHECK(p->inverted);
    CHECK(p->lo == 0);
    CHECK(p->hi == m);
    CHECK(p->has_window);
    CHECK(p->window_center == 16000);
    CHECK(p->window_width == 24000);
  }
  // Lossless: the stored values, the modality image and both [0,1] mappings equal the
  // uncompressed original's exactly.
  CHECK(max_abs_mat_diff(stored_values(lossless), truth) == 0);
  CHECK(max_abs_mat_diff(lossless.image, native.image) == 0);
  for (bool voi : {false, true})
    CHECK(max_abs_mat_diff(evax::dicom_to_unit(lossless, voi), evax::dicom_to_unit(native, voi)) ==
          0);
  CHECK(max_abs_mat_diff(evax::image_read_unit(fx.path("cr_lossless")),
                evax::image_read_unit(fx.path("cr_native"))) == 0);
  // The default [0,1] mapping is the stored range, inverted: y = (M - s) / M, 1 = densest.
  cv::Mat want = (m - truth) / m;
  cv::Mat unit;
  evax::dicom_to_unit(lossless, false).convertTo(unit, CV_64F);
  CHECK(max_abs_mat_diff(unit, want) <= 1e-6);
  // Lossy: close to the original (PSNR ~44 dB at 12:1), the same as pydicom's decode.
  const cv::Mat lossy_stored = stored_values(lossy);
  const double err = max_abs_mat_diff(lossy_stored, truth);
  const double mean_err = cv::norm(lossy_stored, truth, cv::NORM_L1) / truth.total();
  INFO("lossy max abs error " << err << ", mean " << mean_err);
  CHECK(err > 0);
  CHECK(mean_err < 0.005 * m);
  const evax::TensorMap lref = reference("cr_lossy");
  CHECK(max_abs_mat_diff(lossy_stored, frame_of(*evax::find(lref, "pixels"), 0)) == 0);
}

TEST_CASE("dicom_read JPEG 2000: lossless files equal their uncompressed originals",
          "[dicom][j2k]") {
  const Fixtures& fx = fixtures();
  for (const std::string name : kLosslessNames) {
    DYNAMIC_SECTION(name) {
      const nlohmann::json& e = fx.at(name);
      const std::string original = e.at("original");
      const int frames = e.at("frames");
      const evax::TensorMap ref = reference(name);
      const at::Tensor& truth = *evax::find(ref, "truth");
      REQUIRE(evax::find(ref, "pixels"));  // pydicom decodes every lossless fixture
      const at::Tensor& pixels = *evax::find(ref, "pixels");
      for (int k = 0; k < frames; ++k) {
        INFO("frame " << k);
        const evax::DicomPixels p = read_frame(fx.path(name), k);
        const evax::DicomPixels o = read_frame(fx.path(original), k);
        CHECK(p.transfer_syntax_uid == kLossless);
        CHECK(p.frames == frames);
        CHECK(p.frame == k);
        CHECK(p.lo == o.lo);
        CHECK(p.hi == o.hi);
        CHECK(p.inverted == o.inverted);
        CHECK(max_abs_mat_diff(p.image, o.image) == 0);
        for (bool voi : {false, true})
          CHECK(max_abs_mat_diff(evax::dicom_to_unit(p, voi), evax::dicom_to_unit(o, voi)) == 0);
        if (p.is_color) {
          cv::Mat lum;
          p.image.convertTo(lum, CV_64F);
          CHECK(max_abs_mat_diff(lum, luminance_of(truth, k)) <= 1e-4);
          CHECK(max_abs_mat_diff(lum, luminance_of(pixels, k)) <= 1e-4);
        } else {
          CHECK(max_abs_mat_diff(stored_values(p), frame_of(truth, k)) == 0);
          CHECK(max_abs_mat_diff(stored_values(p), frame_of(pixels, k)) == 0);
          const cv::Mat want = frame_of(*evax::find(ref, "modality"), k);
          CHECK(max_abs_mat_diff(modality_values(p), want) == 0);
        }
      }
      evax::DicomOptions o;
      o.frame = frames;
      CHECK_THROWS_AS(evax::dicom_read(fx.path(name), o), evax::DataError);
    }
  }
}

TEST_CASE("dicom_read JPEG 2000: lossy files equal pydicom + pylibjpeg-openjpeg", "[dicom][j2k]") {
  const Fixtures& fx = fixtures();
  for (const std::string name : kLossyNames) {
    DYNAMIC_SECTION(name) {
      const nlohmann::json& e = fx.at(name);
      const int frames = e.at("frames");
      const evax::TensorMap ref = reference(name);
      REQUIRE(evax::find(ref, "pixels"));
      const at::Tensor& pixels = *evax::find(ref, "pixels");
      const at::Tensor& truth = *evax::find(ref, "truth");
      double worst = 0, error = 0;
      for (int k = 0; k < frames; ++k) {
        INFO("frame " << k);
        const evax::DicomPixels p = read_frame(fx.path(name), k);
        CHECK(p.transfer_syntax_uid == kLossy);
        if (p.is_color) {
          cv::Mat lum;
          p.image.convertTo(lum, CV_64F);
          worst = std::max(worst, max_abs_mat_diff(lum, luminance_of(pixels, k)));
          error = std::max(error, max_abs_mat_diff(lum, luminance_of(truth, k)));
        } else {
          const cv::Mat s = stored_values(p);
          worst = std::max(worst, max_abs_mat_diff(s, frame_of(pixels, k)));
          error = std::max(error, max_abs_mat_diff(s, frame_of(truth, k)));
          const cv::Mat want = frame_of(*evax::find(ref, "modality"), k);
          CHECK(max_abs_mat_diff(modality_values(p), want) == 0);
        }
      }
      const bool color = e.at("photometric") == "YBR_ICT";
      WARN("JPEG 2000 lossy " << name << ": max abs difference to pydicom "
                              << fx.index.at("pydicom").get<std::string>()
                              << " + pylibjpeg-openjpeg "
                              << fx.index.at("openjpeg").get<std::string>() << " " << worst
                              << (color ? " (luminance)" : " (stored values)")
                              << "; max abs error vs the original " << error);
      // Both decode with OpenJPEG (system 2.5.0 here, the one bundled with the plugin there);
      // the 9/7 wavelet is floating point but bit-identical. Colour is compared as luminance
      // (float rounding only).
      CHECK(worst <= (color ? 1e-4 : 0.0));
      const double pydicom_error = e.at("max_abs_error");  // per sample, vs the original
      if (color)
        CHECK(error <= pydicom_error + 1e-4);
      else
        CHECK(error == pydicom_error);
      CHECK(error > 0);
    }
  }
}

TEST_CASE("dicom_read JPEG 2000: signedness and precision follow pydicom's rules", "[dicom][j2k]") {
  const Fixtures& fx = fixtures();
  SECTION("signed 12 bits with a rescale") {
    const evax::DicomPixels p = evax::dicom_read(fx.path("signed_lossless"));
    CHECK(p.is_signed);
    CHECK(p.has_rescale);
    CHECK(p.slope == 0.5);
    CHECK(p.intercept == -1024);
    CHECK(p.lo == 0.5 * -2048 - 1024);
    CHECK(p.hi == 0.5 * 2047 - 1024);
    double mn = 0, mx = 0;
    cv::minMaxLoc(stored_values(p), &mn, &mx);
    CHECK(mn == -2048);
    CHECK(mx == 2047);
  }
  SECTION("an unsigned codestream under PixelRepresentation 1 is read back as signed") {
    const evax::DicomPixels p = evax::dicom_read(fx.path("signed_as_unsigned"));
    const evax::DicomPixels o = evax::dicom_read(fx.path("signed_native"));
    CHECK(max_abs_mat_diff(p.image, o.image) == 0);
  }
  SECTION("codestream precision 16 over 12 bits stored: values are not masked") {
    // The lossy decode overshoots 4095 (OpenJPEG clips at the codestream's 16 bits); pydicom
    // keeps the overshoot, so does evax, and the [0,1] mapping clamps it to 1.
    const evax::DicomPixels p = evax::dicom_read(fx.path("prec16_lossy"));
    double mn = 0, mx = 0;
    cv::minMaxLoc(p.image, &mn, &mx);
    CHECK(p.hi == 4095);
    CHECK(mx > 4095);
    cv::minMaxLoc(evax::dicom_to_unit(p, false), &mn, &mx);
    CHECK(mn >= 0);
    CHECK(mx == 1);
  }
}

TEST_CASE("dicom_read JPEG 2000: damaged codestreams are DataErrors naming the file",
          "[dicom][j2k]") {
  const Fixtures& fx = fixtures();
  require_data_error(fx.path("cr_truncated"), "JPEG 2000");
  require_data_error(fx.path("cr_not_j2k"), "neither a codestream");

  // Every truncation of the file and random damage to the codestream: a DataError or an image,
  // never a crash or another exception type.
  const evax::test::TempDir tmp("dicom_j2k_bad");
  for (const std::string name : {"cr_lossless", "cr_lossy", "multiframe_bot", "rgb_ict"}) {
    const std::string bytes = evax::read_file(fx.path(name));
    const size_t tag = bytes.rfind(std::string("\xe0\x7f\x10\x00", 4));  // (7fe0,0010)
    REQUIRE(tag != std::string::npos);
    const size_t start = tag + 12;
    std::mt19937 rng(11);
    int rejected = 0, decoded = 0;
    for (int k = 0; k < 24; ++k) {
      std::string bad = bytes;
      if (k < 8) {
        bad.resize(start + (bytes.size() - start) * k / 8);
      } else {
        // skip the item headers and the SIZ marker so that OpenJPEG reaches the coded data
        for (int j = 0; j < k - 6; ++j)
          bad[start + 200 + rng() % (bytes.size() - start - 200)] ^=
              static_cast<char>(1 + rng() % 255);
      }
      const std::string path = tmp / "bad.dcm";
      std::ofstream(path, std::ios::binary) << bad;
      INFO(name << " variant " << k);
      try {
        evax::dicom_read(path);
        ++decoded;  // flipped bits inside coded data may still decode
      } catch (const evax::DataError& e) {
        CHECK_THAT(e.what(), Contains(path));
        ++rejected;
      }
    }
    INFO(name << ": rejected " << rejected << ", decoded " << decoded);
    CHECK(rejected >= 8);  // every truncation
  }
}

TEST_CASE("dicom_read JPEG 2000: concurrent decodes agree", "[dicom][j2k]") {
  const Fixtures& fx = fixtures();
  const std::vector<std::string> names = {"cr_lossless", "cr_lossy", "multiframe_nobot",
                                          "signed_lossy"};
  std::vector<cv::Mat> want;
  for (const auto& n : names) want.push_back(read_frame(fx.path(n), 0).image);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        const size_t k = (t + i) % names.size();
        try {
          if (cv::norm(read_frame(fx.path(names[k]), 0).image, want[k], cv::NORM_INF) != 0) ++bad;
        } catch (const std::exception&) {
          ++bad;
        }
      }
    });
  for (auto& th : threads) th.join();
  CHECK(bad == 0);
}
