// JPEG decoder (src/evax/io/jpeg.h) on files libjpeg writes here (no Python needed): layouts and
// codings, and damaged, truncated, oversized or non-JPEG input, which must be a DataError, never
// a crash or exit. Pillow's pixels for every layout, CMYK included: image_codec_test.cpp.
#include "evax/io/jpeg.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "io/jpeg_write.h"

using Catch::Matchers::Contains;
using evax::test::jpeg_write;
using evax::test::JpegWriteOptions;

namespace {

cv::Mat decode(const std::string& jpeg) {
  return evax::jpeg_decode(reinterpret_cast<const uint8_t*>(jpeg.data()), jpeg.size());
}

/// A smooth image with structure, grey or BGR (JPEG-friendly, so its decode is close to it).
cv::Mat smooth_image(int rows, int cols, int channels) {
  cv::Mat img(rows, cols, CV_8UC(channels));
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x)
      for (int c = 0; c < channels; ++c)
        img.ptr<uint8_t>(y)[x * channels + c] =
            static_cast<uint8_t>(128 + 90 * std::sin(x / 5.0 + c) * std::cos(y / 7.0 - c));
  return img;
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

/// The DataError message decoding `jpeg` gives ("" and a failed check when it decodes).
std::string error_of(const std::string& jpeg) {
  try {
    decode(jpeg);
  } catch (const evax::DataError& e) {
    return e.what();
  }
  FAIL_CHECK("decoded without an error");
  return "";
}

}  // namespace

TEST_CASE(
    "jpeg_decode: grey and colour at every sampling, progressive, restarts and optimised tables "
    "give the same pixels",
    "[jpeg]") {
  int n = 0;
  for (int channels : {1, 3})
    for (auto [w, h] :
         std::vector<std::pair<int, int>>{{1, 1}, {37, 1}, {1, 37}, {17, 13}, {64, 48}})
      for (auto [hs, vs] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {2, 2}}) {
        if (channels == 1 && hs * vs > 1) continue;
        const cv::Mat src = smooth_image(h, w, channels);
        JpegWriteOptions o;
        o.quality = 95;
        o.h_samp = hs, o.v_samp = vs;
        const cv::Mat base = decode(jpeg_write(src, o));
        INFO(channels << " channel(s), " << w << "x" << h << ", sampling " << hs << "x" << vs);
        REQUIRE(base.type() == CV_8UC(channels));
        REQUIRE(base.size() == src.size());
        CHECK(base.isContinuous());
        // Lossy but close (chroma subsampling blurs colour edges a little).
        CHECK(cv::norm(base, src, cv::NORM_L1) / static_cast<double>(src.total() * channels) < 3.0);
        // The same quantised coefficients, coded otherwise, decode to the same pixels.
        JpegWriteOptions p = o;
        p.progressive = true;
        CHECK(same(decode(jpeg_write(src, p)), base));
        JpegWriteOptions r = o;
        r.restart_rows = 1;
        CHECK(same(decode(jpeg_write(src, r)), base));
        JpegWriteOptions t = o;
        t.optimize = true;
        t.progressive = true;
        t.restart_rows = 2;
        CHECK(same(decode(jpeg_write(src, t)), base));
        ++n;
      }
  CHECK(n == 20);
}

TEST_CASE("jpeg_decode: damaged, truncated and non-JPEG data are DataErrors", "[jpeg]") {
  JpegWriteOptions o;
  o.restart_rows = 1;
  const std::string good = jpeg_write(smooth_image(40, 56, 3), o);
  REQUIRE(decode(good).size() == cv::Size(56, 40));

  CHECK_THAT(error_of(""), Contains("not a JPEG file"));
  CHECK_THROWS_AS(evax::jpeg_decode(nullptr, 0), evax::DataError);
  CHECK_THAT(error_of("\x89PNG\r\n\x1a\n....."), Contains("not a JPEG file"));
  CHECK_THAT(error_of("\xff\xd8\xff"), Contains("JPEG: "));

  SECTION("every truncation: libjpeg's premature-end warning is an error here") {
    int errors = 0;
    for (size_t n = 0; n < good.size(); ++n) {
      try {
        decode(good.substr(0, n));
        FAIL_CHECK("truncated to " << n << " bytes and decoded");
      } catch (const evax::DataError& e) {
        ++errors;
        if (n > 3) CHECK_THAT(e.what(), Contains("JPEG: "));
      }
    }
    CHECK(errors == static_cast<int>(good.size()));
    CHECK_THAT(error_of(good.substr(0, good.size() - 200)), Contains("(truncated file)"));
  }

  SECTION("flipped bits: a DataError or an image of the declared size, never a crash") {
    // JPEG has no checksum: a flip inside the entropy-coded data can decode to other pixels.
    int errors = 0, decoded = 0;
    for (size_t i = 0; i < good.size(); ++i)
      for (char flip : {'\x01', '\x10', '\x80'}) {
        std::string bad = good;
        bad[i] ^= flip;
        try {
          const cv::Mat m = decode(bad);
          ++decoded;
          CHECK(m.type() == CV_8UC3);
          CHECK(m.total() > 0);
        } catch (const evax::DataError&) {
          ++errors;
        }
      }
    CHECK(errors + decoded == 3 * static_cast<int>(good.size()));
    CHECK(errors > 0);
  }

  SECTION("corrupt-data warnings are errors") {
    // Junk between two header segments or before EOI: libjpeg warns "extraneous bytes" and
    // would carry on.
    std::string junk = good;
    junk.insert(good.find("\xff\xc0"), "abc");
    CHECK_THAT(error_of(junk),
               Contains("Corrupt JPEG data: 3 extraneous bytes before marker 0xc0"));
    junk = good;
    junk.insert(junk.size() - 2, "abc");
    CHECK_THAT(error_of(junk), Contains("extraneous bytes before marker 0xd9"));
  }

  SECTION("oversized and invalid headers") {
    // SOF0 holds precision, height and width right after its length.
    const size_t sof = good.find("\xff\xc0");
    REQUIRE(sof != std::string::npos);
    std::string huge = good;
    huge[sof + 5] = huge[sof + 7] = '\xfd';  // 65000 x 65000
    huge[sof + 6] = huge[sof + 8] = '\xe8';
    CHECK_THAT(error_of(huge), Contains("65000 x 65000") && Contains("larger than evax accepts"));
    std::string zero = good;
    zero[sof + 5] = zero[sof + 6] = 0;
    CHECK_THAT(error_of(zero), Contains("JPEG: "));
    std::string no_frame = good.substr(0, 2) + "\xff\xd9";  // SOI, EOI
    CHECK_THAT(error_of(no_frame), Contains("JPEG: "));
  }
}
