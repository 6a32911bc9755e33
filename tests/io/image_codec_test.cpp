// evax's PNG and JPEG decoders against Pillow (tools/image_codec_reference.py, see its docstring):
// every PNG layout (grey 1/2/4/8/16, RGB, RGBA, grey + alpha at 8 and 16 bits, palettes of 1 to 8
// bits with and without tRNS, colour keys, Adam7, odd sizes, files from Pillow's encoder) and
// JPEGs (grey, 4:4:4 / 4:2:2 / 4:2:0, progressive, restarts, EXIF orientation, CMYK) must decode
// to exactly Pillow's pixels in OpenCV's layout; image_decode's dispatch by signature.
#include <catch2/catch.hpp>
#include <string>

#include "evax/core/error.h"
#include "evax/io/image.h"
#include "evax/io/jpeg.h"
#include "evax/io/png.h"
#include "python_reference.h"
#include "skip.h"

using Catch::Matchers::Contains;

namespace {

const evax::TensorMap& reference() {
  static const evax::TensorMap map = evax::test::python_reference(
      "image_codec_reference.py", "io/image_codec_reference.safetensors");
  return map;
}

std::string bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()),
                     static_cast<size_t>(c.numel()));
}

/// An (H, W, C) integer tensor as a Mat of `bits` (8 or 16) per sample.
cv::Mat to_mat(const at::Tensor& t, int bits) {
  const at::Tensor c = t.to(at::kInt).contiguous();
  const int h = static_cast<int>(c.size(0)), w = static_cast<int>(c.size(1)),
            cn = static_cast<int>(c.size(2));
  cv::Mat m(h, w, CV_MAKETYPE(bits == 16 ? CV_16U : CV_8U, cn));
  const int32_t* p = c.data_ptr<int32_t>();
  for (int y = 0; y < h; ++y)
    for (int i = 0; i < w * cn; ++i) {
      const int32_t v = p[static_cast<size_t>(y) * w * cn + i];
      if (bits == 16)
        m.ptr<uint16_t>(y)[i] = static_cast<uint16_t>(v);
      else
        m.ptr<uint8_t>(y)[i] = static_cast<uint8_t>(v);
    }
  return m;
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

/// The case names under `prefix` ("png/", "jpeg/").
std::vector<std::string> cases(const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& [key, t] : evax::test::with_prefix(reference(), prefix)) {
    const auto slash = key.rfind("/file");
    if (slash != std::string::npos && slash + 5 == key.size())
      names.push_back(key.substr(0, slash));
  }
  return names;
}

}  // namespace

TEST_CASE("PNG: every layout decodes to Pillow's pixels", "[png][reference]") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Pillow reference");
  const std::vector<std::string> names = cases("png/");
  int interlaced = 0, palette = 0, sixteen = 0;
  for (const std::string& name : names) {
    INFO(name);
    const std::string file =
        bytes_of(evax::test::reference_tensor(reference(), "png/" + name + "/file"));
    const int bits = evax::test::reference_tensor(reference(), "png/" + name + "/bits").item<int>();
    const cv::Mat want =
        to_mat(evax::test::reference_tensor(reference(), "png/" + name + "/pixels"), bits);
    const cv::Mat got =
        evax::png_decode(reinterpret_cast<const uint8_t*>(file.data()), file.size());
    CHECK(got.isContinuous());
    CHECK(same(got, want));
    CHECK(same(evax::image_decode(file, name), want));
    interlaced += name.find("interlaced") != std::string::npos;
    palette += name.rfind("palette", 0) == 0;
    sixteen += bits == 16;
  }
  CHECK(names.size() >= 140);
  CHECK(interlaced >= 30);
  CHECK(palette >= 50);
  CHECK(sixteen >= 25);
}

TEST_CASE(
    "JPEG: every layout decodes to Pillow's pixels (both libjpeg-turbo, ISLOW, fancy upsampling)",
    "[jpeg][reference]") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Pillow reference");
  const std::vector<std::string> names = cases("jpeg/");
  for (const std::string& name : names) {
    INFO(name);
    const std::string file =
        bytes_of(evax::test::reference_tensor(reference(), "jpeg/" + name + "/file"));
    const cv::Mat want =
        to_mat(evax::test::reference_tensor(reference(), "jpeg/" + name + "/pixels"), 8);
    const cv::Mat got =
        evax::jpeg_decode(reinterpret_cast<const uint8_t*>(file.data()), file.size());
    // Exact: Pillow bundles libjpeg-turbo 3 and evax links Debian's 2.1; both run the accurate
    // integer IDCT and the same fancy upsampling, which give identical samples.
    CHECK(same(got, want));
    CHECK(same(evax::image_decode(file, name), want));
    // Any truncation is an error (libjpeg's premature-end warning).
    for (size_t n : {file.size() / 5, file.size() / 2, file.size() - 2, file.size() - 1}) {
      INFO("truncated to " << n << " bytes");
      CHECK_THROWS_AS(evax::jpeg_decode(reinterpret_cast<const uint8_t*>(file.data()), n),
                      evax::DataError);
    }
  }
  CHECK(names.size() >= 30);
}

TEST_CASE("image_decode: PNG and JPEG by signature, other formats and damage named", "[image]") {
  const auto msg = [](const std::string& bytes) -> std::string {
    try {
      evax::image_decode(bytes, "/data/x.img");
    } catch (const evax::DataError& e) {
      return e.what();
    }
    return "decoded";
  };
  const std::string formats = "evax reads PNG, JPEG and DICOM images";
  CHECK_THAT(msg(""), Contains("image /data/x.img: file is empty"));
  CHECK_THAT(msg(std::string("II*\0\x08\0\0\0", 8)), Contains("a TIFF file") && Contains(formats));
  CHECK_THAT(msg(std::string("MM\0*\0\0\0\x08", 8)), Contains("a TIFF file"));
  CHECK_THAT(msg("BM6\x0c\0\0\0\0"), Contains("/data/x.img") && Contains("a BMP file"));
  CHECK_THAT(msg("GIF89a.."), Contains("a GIF file"));
  CHECK_THAT(msg(std::string("RIFF\x10\0\0\0WEBPVP8 ", 16)), Contains("a WebP file"));
  CHECK_THAT(msg(std::string("\0\0\0\x0cjP  \r\n\x87\n", 12)), Contains("a JPEG 2000 file"));
  CHECK_THAT(msg(std::string(128, '\0') + "DICM"), Contains("a DICOM file"));
  CHECK_THAT(msg("hello world"),
             Contains("starting with bytes 68 65 6c 6c 6f 20 77 6f") && Contains(formats));
  CHECK_THAT(msg("\x89PNG\r\n\x1a\n"), Contains("image /data/x.img: PNG: "));
  CHECK_THAT(msg("\xff\xd8\xff\xe0"), Contains("image /data/x.img: JPEG: "));
  const cv::Mat img(5, 7, CV_8UC3, cv::Scalar(1, 2, 3));
  CHECK(same(evax::image_decode(evax::png_encode(img, 6), "mem"), img));
}
