// png_decode_fast against OpenCV's libpng decoder (the reference): PNGs written by an encoder in
// this file with every row filter at every pixel width, split IDATs and extra chunks; PNGs
// written by OpenCV at several compression settings; layouts it must leave to OpenCV; and
// damaged files, where it must never return an image that differs from OpenCV's.
#include "evax/io/png.h"

#include <libdeflate.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <algorithm>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <string>
#include <vector>

using evax::png_decode_fast;

namespace {

using Bytes = std::vector<uint8_t>;

void put32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

void chunk(Bytes& png, const char* type, const Bytes& body) {
  put32(png, static_cast<uint32_t>(body.size()));
  Bytes tb(type, type + 4);
  tb.insert(tb.end(), body.begin(), body.end());
  png.insert(png.end(), tb.begin(), tb.end());
  put32(png, libdeflate_crc32(0, tb.data(), tb.size()));
}

int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

struct EncodeOptions {
  int colour = 0;           ///< PNG colour type: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA
  int depth = 8;            ///< 8 or 16
  int idat_pieces = 1;      ///< IDAT chunks the zlib stream is split into
  bool ancillary = false;   ///< add tEXt before and after the image data
  bool trns = false;        ///< add a tRNS chunk
};

/// A PNG of random samples whose rows use filter types drawn at random (all five appear).
Bytes encode(int w, int h, const EncodeOptions& o, std::mt19937& rng) {
  const int channels = o.colour == 0 ? 1 : o.colour == 2 ? 3 : o.colour == 4 ? 2 : 4;
  const size_t bpp = static_cast<size_t>(channels * o.depth / 8);
  const size_t stride = static_cast<size_t>(w) * bpp;
  std::vector<Bytes> rows(static_cast<size_t>(h), Bytes(stride));
  // Smooth-ish content (so filters matter) with noise.
  for (int y = 0; y < h; ++y)
    for (size_t x = 0; x < stride; ++x)
      rows[y][x] = static_cast<uint8_t>((x * 3 + static_cast<size_t>(y) * 5) / 4 + rng() % 9);
  Bytes raw;
  for (int y = 0; y < h; ++y) {
    const int f = static_cast<int>(rng() % 5);
    raw.push_back(static_cast<uint8_t>(f));
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= bpp ? rows[y][x - bpp] : 0, b = y ? rows[y - 1][x] : 0,
                c = (y && x >= bpp) ? rows[y - 1][x - bpp] : 0;
      const int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : paeth(a, b, c);
      raw.push_back(static_cast<uint8_t>(rows[y][x] - pred));
    }
  }
  libdeflate_compressor* comp = libdeflate_alloc_compressor(6);
  Bytes z(libdeflate_zlib_compress_bound(comp, raw.size()));
  z.resize(libdeflate_zlib_compress(comp, raw.data(), raw.size(), z.data(), z.size()));
  libdeflate_free_compressor(comp);

  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  put32(ihdr, static_cast<uint32_t>(w));
  put32(ihdr, static_cast<uint32_t>(h));
  ihdr.insert(ihdr.end(), {static_cast<uint8_t>(o.depth), static_cast<uint8_t>(o.colour), 0, 0, 0});
  chunk(png, "IHDR", ihdr);
  const Bytes text = {'C', 'o', 'm', 'm', 'e', 'n', 't', 0, 'h', 'i'};
  if (o.ancillary) chunk(png, "tEXt", text);
  if (o.trns) chunk(png, "tRNS", Bytes(o.colour == 0 ? 2 : 6, 0));
  // Split points anywhere, empty pieces included.
  std::vector<size_t> cuts = {0, z.size()};
  for (int i = 1; i < o.idat_pieces; ++i) cuts.push_back(rng() % (z.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  for (size_t i = 0; i + 1 < cuts.size(); ++i)
    chunk(png, "IDAT", Bytes(z.begin() + cuts[i], z.begin() + cuts[i + 1]));
  if (o.ancillary) chunk(png, "tEXt", text);
  chunk(png, "IEND", {});
  return png;
}

cv::Mat reference(const Bytes& png) {
  try {
    return cv::imdecode(cv::Mat(1, static_cast<int>(png.size()), CV_8U,
                                const_cast<uint8_t*>(png.data())),
                        cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    return cv::Mat();
  }
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() &&
         (a.empty() || cv::norm(a, b, cv::NORM_INF) == 0);
}

}  // namespace

TEST_CASE("png_decode_fast equals libpng for every filter, pixel width, depth and colour type") {
  std::mt19937 rng(7);
  int decoded = 0;
  for (int colour : {0, 2, 6})
    for (int depth : {8, 16})
      for (auto [w, h] : std::vector<std::pair<int, int>>{{1, 1}, {2, 7}, {3, 33}, {17, 5},
                                                           {255, 40}, {1000, 3}})
        for (int pieces : {1, 3}) {
          EncodeOptions o;
          o.colour = colour;
          o.depth = depth;
          o.idat_pieces = pieces;
          o.ancillary = pieces == 3;
          const Bytes png = encode(w, h, o, rng);
          INFO("colour " << colour << " depth " << depth << " " << w << "x" << h << " pieces "
                         << pieces);
          const cv::Mat ref = reference(png);
          REQUIRE(!ref.empty());
          const auto got = png_decode_fast(png.data(), png.size());
          REQUIRE(got.has_value());
          CHECK(same(*got, ref));
          ++decoded;
        }
  CHECK(decoded == 72);
}

TEST_CASE("png_decode_fast equals libpng on PNGs OpenCV writes") {
  std::mt19937 rng(11);
  for (int type : {CV_8UC1, CV_16UC1, CV_8UC3, CV_16UC3, CV_8UC4})
    for (int level : {0, 1, 9})
      for (int strategy : {cv::IMWRITE_PNG_STRATEGY_DEFAULT, cv::IMWRITE_PNG_STRATEGY_FILTERED,
                           cv::IMWRITE_PNG_STRATEGY_RLE}) {
        cv::Mat img(97, 131, type);
        cv::randu(img, 0, CV_MAT_DEPTH(type) == CV_8U ? 256 : 65536);
        cv::GaussianBlur(img, img, cv::Size(5, 5), 0);  // some structure for the filters
        std::vector<uchar> buf;
        REQUIRE(cv::imencode(".png", img, buf,
                             {cv::IMWRITE_PNG_COMPRESSION, level, cv::IMWRITE_PNG_STRATEGY,
                              strategy}));
        INFO("type " << type << " level " << level << " strategy " << strategy);
        const auto got = png_decode_fast(buf.data(), buf.size());
        REQUIRE(got.has_value());
        CHECK(same(*got, img));
      }
}

TEST_CASE("png_decode_fast leaves other layouts to OpenCV") {
  std::mt19937 rng(3);
  EncodeOptions grey_alpha;
  grey_alpha.colour = 4;
  Bytes png = encode(9, 9, grey_alpha, rng);
  CHECK_FALSE(png_decode_fast(png.data(), png.size()).has_value());
  CHECK(!reference(png).empty());

  EncodeOptions trns;
  trns.trns = true;
  png = encode(9, 9, trns, rng);
  CHECK_FALSE(png_decode_fast(png.data(), png.size()).has_value());

  // 1-bit grey (OpenCV writes it for IMWRITE_PNG_BILEVEL).
  std::vector<uchar> buf;
  cv::Mat bw(16, 16, CV_8U, cv::Scalar(0));
  bw(cv::Rect(0, 0, 8, 16)) = 255;
  REQUIRE(cv::imencode(".png", bw, buf, {cv::IMWRITE_PNG_BILEVEL, 1}));
  CHECK_FALSE(png_decode_fast(buf.data(), buf.size()).has_value());

  // Not a PNG at all.
  const std::string jpeg_magic = "\xff\xd8\xff\xe0 not a png at all, just bytes.............";
  CHECK_FALSE(png_decode_fast(reinterpret_cast<const uint8_t*>(jpeg_magic.data()),
                              jpeg_magic.size())
                  .has_value());
}

TEST_CASE("damaged PNGs: png_decode_fast never returns an image that OpenCV would not") {
  std::mt19937 rng(5);
  EncodeOptions o;
  o.idat_pieces = 4;
  o.ancillary = true;
  const Bytes good = encode(40, 30, o, rng);
  int fast_ok = 0, cases = 0;
  auto check = [&](const Bytes& bad) {
    ++cases;
    const auto got = png_decode_fast(bad.data(), bad.size());
    if (!got) return;
    ++fast_ok;
    const cv::Mat ref = reference(bad);
    INFO("case " << cases << ", " << bad.size() << " bytes");
    CHECK(same(*got, ref));
  };
  for (size_t n = 0; n < good.size(); n += 3) check(Bytes(good.begin(), good.begin() + n));
  for (size_t i = 0; i < good.size(); ++i)
    for (uint8_t flip : {0x01, 0x80}) {
      Bytes bad = good;
      bad[i] ^= flip;
      check(bad);
    }
  // Only changes that leave the image intact may decode: the flipped bits of the text chunk's
  // type letter case and trailing bytes are caught by the CRC, so nothing should pass.
  INFO(fast_ok << " of " << cases << " damaged files decoded");
  CHECK(fast_ok == 0);
}
