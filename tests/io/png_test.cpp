// PNG codec (src/evax/io/png.h). Decoder: PNGs written by an encoder in this file, with every row
// filter at every pixel width, split IDATs, ancillary chunks and colour keys, against the samples
// it encoded; Pillow's and libpng's reading of PNGs in every layout
// (tools/image_codec_reference.py, see image_codec_test.cpp); damaged and invalid files, which must
// all be a DataError. Encoder: round trips of every supported type through png_decode, the stream
// checked independently with libdeflate, and the files read back by Pillow and libpng (the
// reference script's --check-png).
#include "evax/io/png.h"

#include <libdeflate.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <opencv2/imgproc.hpp>
#include <random>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "skip.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using evax::png_decode;
using evax::png_encode;

namespace {

using Bytes = std::vector<uint8_t>;

void put32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

uint32_t get32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

void chunk(Bytes& png, const char* type, const Bytes& body) {
  put32(png, static_cast<uint32_t>(body.size()));
  Bytes tb(type, type + 4);
  tb.insert(tb.end(), body.begin(), body.end());
  png.insert(png.end(), tb.begin(), tb.end());
  put32(png, libdeflate_crc32(0, tb.data(), tb.size()));
}

Bytes zlib(const Bytes& raw, int level = 6) {
  libdeflate_compressor* comp = libdeflate_alloc_compressor(level);
  Bytes z(libdeflate_zlib_compress_bound(comp, raw.size()));
  z.resize(libdeflate_zlib_compress(comp, raw.data(), raw.size(), z.data(), z.size()));
  libdeflate_free_compressor(comp);
  return z;
}

Bytes ihdr(uint32_t w, uint32_t h, int depth, int colour, int interlace = 0) {
  Bytes b;
  put32(b, w);
  put32(b, h);
  b.insert(b.end(), {static_cast<uint8_t>(depth), static_cast<uint8_t>(colour), 0, 0,
                     static_cast<uint8_t>(interlace)});
  return b;
}

const Bytes kSignature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/// A PNG from its parts: IHDR, optional chunks before the data, one IDAT of `z`, IEND.
Bytes assemble(const Bytes& header, const Bytes& z,
               const std::vector<std::pair<const char*, Bytes>>& before = {}) {
  Bytes png = kSignature;
  chunk(png, "IHDR", header);
  for (const auto& [type, body] : before) chunk(png, type, body);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", {});
  return png;
}

int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

struct EncodeOptions {
  int colour = 0;          ///< PNG colour type: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA
  int depth = 8;           ///< 8 or 16
  int idat_pieces = 1;     ///< IDAT chunks the zlib stream is split into
  bool ancillary = false;  ///< add tEXt before and after the image data
  bool trns = false;       ///< add a tRNS chunk whose key is the first pixel (grey or RGB)
};

struct Encoded {
  Bytes png;
  cv::Mat expected;  ///< what png_decode must give, by the rules in png.h
};

/// A PNG of random samples whose rows use filter types drawn at random (all five appear), and
/// the pixels it holds in OpenCV's convention.
Encoded encode(int w, int h, const EncodeOptions& o, std::mt19937& rng) {
  const int channels = o.colour == 0 ? 1 : o.colour == 2 ? 3 : o.colour == 4 ? 2 : 4;
  const size_t bytes = static_cast<size_t>(o.depth / 8);
  const size_t bpp = static_cast<size_t>(channels) * bytes;
  const size_t stride = static_cast<size_t>(w) * bpp;
  std::vector<Bytes> rows(static_cast<size_t>(h), Bytes(stride));
  // Smooth-ish content (so filters matter) with noise.
  for (int y = 0; y < h; ++y)
    for (size_t x = 0; x < stride; ++x)
      rows[y][x] = static_cast<uint8_t>((x * 3 + static_cast<size_t>(y) * 5) / 4 + rng() % 9);
  if (o.trns && h > 1)  // a few pixels equal the key (the first pixel)
    for (int y = 1; y < h; y += 2)
      std::copy(rows[0].begin(), rows[0].begin() + bpp, rows[y].begin());
  Bytes raw;
  for (int y = 0; y < h; ++y) {
    const int f = y < 5 ? y : static_cast<int>(rng() % 5);
    raw.push_back(static_cast<uint8_t>(f));
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= bpp ? rows[y][x - bpp] : 0, b = y ? rows[y - 1][x] : 0,
                c = (y && x >= bpp) ? rows[y - 1][x - bpp] : 0;
      const int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : paeth(a, b, c);
      raw.push_back(static_cast<uint8_t>(rows[y][x] - pred));
    }
  }
  const Bytes z = zlib(raw);

  Bytes png = kSignature;
  chunk(png, "IHDR", ihdr(static_cast<uint32_t>(w), static_cast<uint32_t>(h), o.depth, o.colour));
  const Bytes text = {'C', 'o', 'm', 'm', 'e', 'n', 't', 0, 'h', 'i'};
  if (o.ancillary) chunk(png, "tEXt", text);
  const bool key = o.trns && (o.colour == 0 || o.colour == 2);
  if (key) {
    Bytes k;
    for (int c = 0; c < channels; ++c)  // 16-bit key values; for 8 bits the sample in the low byte
      for (size_t i = 0; i < 2; ++i)
        k.push_back(bytes == 2 ? rows[0][2 * c + i] : i ? rows[0][c] : 0);
    chunk(png, "tRNS", k);
  }
  // Split points anywhere, empty pieces included.
  std::vector<size_t> cuts = {0, z.size()};
  for (int i = 1; i < o.idat_pieces; ++i) cuts.push_back(rng() % (z.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  for (size_t i = 0; i + 1 < cuts.size(); ++i)
    chunk(png, "IDAT", Bytes(z.begin() + cuts[i], z.begin() + cuts[i + 1]));
  if (o.ancillary) chunk(png, "tEXt", text);
  chunk(png, "IEND", {});

  // OpenCV's layout: grey; BGR, or BGRA with a colour key; grey + alpha as B = G = R = grey.
  const int out_cn = o.colour == 0 ? 1 : (o.colour == 2 && !key) ? 3 : 4;
  cv::Mat want(h, w, CV_MAKETYPE(bytes == 2 ? CV_16U : CV_8U, out_cn));
  const int maxv = bytes == 2 ? 65535 : 255;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      int s[4];
      for (int c = 0; c < channels; ++c) {
        const uint8_t* p = &rows[y][static_cast<size_t>(x) * bpp + static_cast<size_t>(c) * bytes];
        s[c] = bytes == 2 ? (p[0] << 8 | p[1]) : p[0];
      }
      int v[4];
      if (o.colour == 0) {
        v[0] = s[0];
      } else if (o.colour == 2) {
        v[0] = s[2], v[1] = s[1], v[2] = s[0];
        v[3] = std::memcmp(&rows[y][static_cast<size_t>(x) * bpp], rows[0].data(), bpp) == 0 ? 0
                                                                                             : maxv;
      } else if (o.colour == 4) {
        v[0] = v[1] = v[2] = s[0], v[3] = s[1];
      } else {
        v[0] = s[2], v[1] = s[1], v[2] = s[0], v[3] = s[3];
      }
      for (int c = 0; c < out_cn; ++c) {
        if (bytes == 2)
          want.ptr<uint16_t>(y)[x * out_cn + c] = static_cast<uint16_t>(v[c]);
        else
          want.ptr<uint8_t>(y)[x * out_cn + c] = static_cast<uint8_t>(v[c]);
      }
    }
  return {png, want};
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() &&
         (a.empty() || cv::norm(a, b, cv::NORM_INF) == 0);
}

cv::Mat decode(const Bytes& png) { return png_decode(png.data(), png.size()); }
cv::Mat decode(const std::string& png) {
  return png_decode(reinterpret_cast<const uint8_t*>(png.data()), png.size());
}

/// The DataError message decoding `png` gives ("" and a failed check when it decodes).
std::string error_of(const Bytes& png) {
  try {
    decode(png);
  } catch (const evax::DataError& e) {
    return e.what();
  }
  FAIL_CHECK("decoded without an error");
  return "";
}

/// A random image of `type` with some structure (so the filters have something to choose).
cv::Mat random_image(int rows, int cols, int type, std::mt19937& rng) {
  cv::Mat img(rows, cols, type);
  cv::theRNG().state = rng();
  cv::randu(img, 0, CV_MAT_DEPTH(type) == CV_8U ? 256 : 65536);
  if (rows > 4 && cols > 4) {
    cv::Mat smooth;
    cv::GaussianBlur(img, smooth, cv::Size(5, 5), 0);
    smooth(cv::Rect(0, 0, cols / 2, rows)).copyTo(img(cv::Rect(0, 0, cols / 2, rows)));
  }
  return img;
}

/// The filter bytes of a non-interlaced PNG this encoder wrote (one IDAT), read independently:
/// every chunk's CRC and the zlib stream (Adler-32 included) are checked with libdeflate.
std::vector<int> filter_types(const std::string& s, size_t stride, size_t rows) {
  const auto* d = reinterpret_cast<const uint8_t*>(s.data());
  REQUIRE(s.size() > 8);
  REQUIRE(std::memcmp(d, kSignature.data(), 8) == 0);
  Bytes z;
  std::vector<std::string> types;
  for (size_t p = 8; p + 12 <= s.size();) {
    const uint32_t len = get32(d + p);
    REQUIRE(p + 12 + len <= s.size());
    REQUIRE(get32(d + p + 8 + len) == libdeflate_crc32(0, d + p + 4, len + 4));
    types.emplace_back(reinterpret_cast<const char*>(d + p + 4), 4);
    if (types.back() == "IDAT") z.insert(z.end(), d + p + 8, d + p + 8 + len);
    p += 12 + len;
  }
  CHECK(types == std::vector<std::string>{"IHDR", "IDAT", "IEND"});
  Bytes raw(rows * (stride + 1));
  libdeflate_decompressor* dec = libdeflate_alloc_decompressor();
  const auto r =
      libdeflate_zlib_decompress(dec, z.data(), z.size(), raw.data(), raw.size(), nullptr);
  libdeflate_free_decompressor(dec);
  REQUIRE(r == LIBDEFLATE_SUCCESS);
  std::vector<int> f;
  for (size_t y = 0; y < rows; ++y) f.push_back(raw[y * (stride + 1)]);
  return f;
}

/// The rows of `img` as PNG stores them: RGB(A) order, 16-bit samples big-endian.
std::vector<Bytes> png_rows(const cv::Mat& img) {
  const int cn = img.channels(), bytes = img.depth() == CV_16U ? 2 : 1;
  std::vector<Bytes> rows;
  for (int y = 0; y < img.rows; ++y) {
    Bytes r;
    for (int x = 0; x < img.cols; ++x)
      for (int c = 0; c < cn; ++c) {
        const int from = cn >= 3 && c < 3 ? 2 - c : c;
        const int v =
            bytes == 2 ? img.ptr<uint16_t>(y)[x * cn + from] : img.ptr<uint8_t>(y)[x * cn + from];
        if (bytes == 2) r.push_back(static_cast<uint8_t>(v >> 8));
        r.push_back(static_cast<uint8_t>(v & 0xff));
      }
    rows.push_back(r);
  }
  return rows;
}

/// Per row, the filter type libpng's heuristic picks: the smallest sum of the filtered bytes read
/// as signed, the lowest type on ties.
std::vector<int> cheapest_filters(const cv::Mat& img) {
  const std::vector<Bytes> rows = png_rows(img);
  const size_t bpp = img.elemSize();
  std::vector<int> out;
  for (size_t y = 0; y < rows.size(); ++y) {
    long best = -1;
    int best_f = 0;
    for (int f = 0; f <= 4; ++f) {
      long sum = 0;
      for (size_t x = 0; x < rows[y].size(); ++x) {
        const int a = x >= bpp ? rows[y][x - bpp] : 0, b = y ? rows[y - 1][x] : 0,
                  c = (y && x >= bpp) ? rows[y - 1][x - bpp] : 0;
        const int pred = f == 0   ? 0
                         : f == 1 ? a
                         : f == 2 ? b
                         : f == 3 ? (a + b) / 2
                                  : paeth(a, b, c);
        const int v = static_cast<uint8_t>(rows[y][x] - pred);
        sum += v < 128 ? v : 256 - v;
      }
      if (best < 0 || sum < best) best = sum, best_f = f;
    }
    out.push_back(best_f);
  }
  return out;
}

}  // namespace

TEST_CASE(
    "png_decode equals the encoded samples for every filter, pixel width, depth and colour type",
    "[png]") {
  std::mt19937 rng(7);
  int decoded = 0;
  for (int colour : {0, 2, 4, 6})
    for (int depth : {8, 16})
      for (auto [w, h] :
           std::vector<std::pair<int, int>>{{1, 1}, {2, 7}, {3, 33}, {17, 5}, {255, 40}, {1000, 3}})
        for (int pieces : {1, 3}) {
          EncodeOptions o;
          o.colour = colour;
          o.depth = depth;
          o.idat_pieces = pieces;
          o.ancillary = pieces == 3;
          o.trns = pieces == 3 && w > 2;  // colour keys: alpha for RGB, ignored for grey
          const Encoded e = encode(w, h, o, rng);
          INFO("colour " << colour << " depth " << depth << " " << w << "x" << h << " pieces "
                         << pieces);
          const cv::Mat got = decode(e.png);
          CHECK(got.isContinuous());
          CHECK(same(got, e.expected));
          ++decoded;
        }
  CHECK(decoded == 96);
}

TEST_CASE("png_encode round-trips every supported type and picks filters per row", "[png]") {
  std::mt19937 rng(11);
  int n = 0;
  for (int depth : {CV_8U, CV_16U})
    for (int cn : {1, 3, 4})
      for (auto [w, h] : std::vector<std::pair<int, int>>{{1, 1}, {1, 29}, {31, 1}, {97, 61}})
        for (int level : {0, 1, 6, 9, 12}) {
          const cv::Mat img = random_image(h, w, CV_MAKETYPE(depth, cn), rng);
          INFO("depth " << depth << " channels " << cn << " " << w << "x" << h << " level "
                        << level);
          const std::string png = png_encode(img, level);
          CHECK(same(decode(png), img));
          const size_t stride = static_cast<size_t>(w * cn * (depth == CV_16U ? 2 : 1));
          const std::vector<int> f = filter_types(png, stride, static_cast<size_t>(h));
          if (level == 0)
            CHECK(std::count(f.begin(), f.end(), 0) == h);  // stored: no filters
          else
            CHECK(f == cheapest_filters(img));
          ++n;
        }
  CHECK(n == 120);

  // A horizontal ramp: below the first row Up leaves zeros (Paeth too, and Up comes first).
  cv::Mat ramp(32, 200, CV_8U);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 200; ++x) ramp.at<uint8_t>(y, x) = static_cast<uint8_t>(x);
  const std::vector<int> f = filter_types(png_encode(ramp, 6), 200, 32);
  CHECK(f[0] == 1);  // Sub: 0, 1, 1, 1 …
  CHECK(std::count(f.begin() + 1, f.end(), 2) == 31);

  CHECK_THROWS_AS(png_encode(cv::Mat(4, 4, CV_32F), 6), evax::DataError);
  CHECK_THROWS_AS(png_encode(cv::Mat(4, 4, CV_8UC2), 6), evax::DataError);
  CHECK_THROWS_AS(png_encode(cv::Mat(), 6), evax::DataError);
  CHECK_THROWS_AS(png_encode(cv::Mat(4, 4, CV_8U), 13), evax::DataError);
  // A view into a larger image (rows not contiguous) encodes its own pixels.
  const cv::Mat big = random_image(50, 60, CV_8UC3, rng);
  const cv::Mat roi = big(cv::Rect(7, 5, 21, 13));
  CHECK(same(decode(png_encode(roi, 6)), roi));
}

TEST_CASE("png_encode's files read back in Pillow and libpng", "[png]") {
  if (std::string(EVAX_PYTHON).empty())
    EVAX_SKIP("EVAX_PYTHON not configured: Pillow cannot check the PNGs");
  evax::test::TempDir tmp("png_encode_pillow");
  std::mt19937 rng(13);
  int n = 0;
  for (int depth : {CV_8U, CV_16U})
    for (int cn : {1, 3, 4})
      for (auto [w, h] : std::vector<std::pair<int, int>>{{1, 1}, {1, 23}, {19, 1}, {77, 45}})
        for (int level : {0, 1, 9}) {
          const cv::Mat img = random_image(h, w, CV_MAKETYPE(depth, cn), rng);
          const int bits = depth == CV_16U ? 16 : 8;
          const std::string stem =
              tmp / ("n" + std::to_string(n++) + "__" + std::to_string(h) + "x" +
                     std::to_string(w) + "x" + std::to_string(cn) + "x" + std::to_string(bits));
          std::ofstream(stem + ".png", std::ios::binary) << png_encode(img, level);
          std::ofstream raw(stem + ".raw", std::ios::binary);
          for (int y = 0; y < h; ++y)  // host (little-endian) order, as the script reads it
            raw.write(reinterpret_cast<const char*>(img.ptr(y)),
                      static_cast<std::streamsize>(img.cols * img.elemSize()));
        }
  const std::string cmd = "\"" + std::string(EVAX_PYTHON) + "\" \"" +
                          evax::test::source_path("tools/image_codec_reference.py") +
                          "\" --check-png \"" + tmp.str() + "\"";
  INFO(cmd);
  CHECK(std::system(cmd.c_str()) == 0);
  CHECK(n == 72);
}

TEST_CASE("png_decode: not PNG, invalid structure and damaged files are DataErrors", "[png]") {
  std::mt19937 rng(3);
  const std::string jpeg_magic = "\xff\xd8\xff\xe0 not a png at all, just bytes.............";
  CHECK_THROWS_WITH(
      png_decode(reinterpret_cast<const uint8_t*>(jpeg_magic.data()), jpeg_magic.size()),
      Contains("not a PNG file"));
  CHECK_THROWS_AS(png_decode(nullptr, 0), evax::DataError);
  CHECK_THAT(error_of(kSignature), Contains("ends at byte 8 before the IEND"));

  const Bytes grey_row = {0, 10, 20, 30};  // one 3-pixel 8-bit grey row, filter 0
  const Bytes good = assemble(ihdr(3, 1, 8, 0), zlib(grey_row));
  CHECK(same(decode(good), (cv::Mat_<uint8_t>(1, 3) << 10, 20, 30)));

  SECTION("structure") {
    CHECK_THAT(error_of(assemble(ihdr(0, 1, 8, 0), zlib({0}))),
               Contains("invalid image size 0 x 1"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 3, 0), zlib(grey_row))),
               Contains("invalid bit depth 3 for colour type 0"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 16, 3), zlib(grey_row))),
               Contains("invalid bit depth 16 for colour type 3"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 5), zlib(grey_row))), Contains("colour type 5"));
    Bytes h = ihdr(3, 1, 8, 0);
    h[10] = 1;
    CHECK_THAT(error_of(assemble(h, zlib(grey_row))), Contains("compression method 1"));
    h = ihdr(3, 1, 8, 0);
    h[11] = 1;
    CHECK_THAT(error_of(assemble(h, zlib(grey_row))), Contains("filter method 1"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 0, 2), zlib(grey_row))),
               Contains("interlace method 2"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 0), zlib({5, 10, 20, 30}))),
               Contains("row 0 has an invalid filter type 5"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 0), zlib(grey_row), {{"cHRM", {}}, {"XXXX", {}}})),
               Contains("unknown critical chunk XXXX"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 0), zlib(grey_row), {{"PLTE", {1, 2, 3}}})),
               Contains("PLTE chunk in a grey image"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 0), zlib(grey_row), {{"tRNS", {0, 1, 2}}})),
               Contains("tRNS chunk of 3 bytes in a grey image"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 3), zlib(grey_row))),
               Contains("palette image without a PLTE"));
    const Bytes pal = {1, 2, 3, 4, 5, 6};  // two entries; the row uses index 20
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 3), zlib(grey_row), {{"PLTE", pal}})),
               Contains("palette index 10 but the palette has 2 entries"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 3), zlib(grey_row), {{"PLTE", {1, 2}}})),
               Contains("PLTE chunk of 2 bytes"));
    CHECK_THAT(
        error_of(assemble(ihdr(3, 1, 8, 3), zlib(grey_row), {{"PLTE", pal}, {"tRNS", {1, 2, 3}}})),
        Contains("tRNS chunk of 3 entries for a palette of 2"));
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 3), zlib(grey_row), {{"tRNS", {1}}, {"PLTE", pal}})),
               Contains("tRNS chunk before PLTE"));
    // No IDAT; IDATs with another chunk between them; a second IHDR; IHDR not first.
    Bytes png = kSignature;
    chunk(png, "IHDR", ihdr(3, 1, 8, 0));
    chunk(png, "IEND", {});
    CHECK_THAT(error_of(png), Contains("no image data"));
    const Bytes z = zlib(grey_row);
    png = kSignature;
    chunk(png, "IHDR", ihdr(3, 1, 8, 0));
    chunk(png, "IDAT", Bytes(z.begin(), z.begin() + 4));
    chunk(png, "tEXt", {'a', 0, 'b'});
    chunk(png, "IDAT", Bytes(z.begin() + 4, z.end()));
    chunk(png, "IEND", {});
    CHECK_THAT(error_of(png), Contains("not consecutive"));
    png = kSignature;
    chunk(png, "IHDR", ihdr(3, 1, 8, 0));
    chunk(png, "IHDR", ihdr(3, 1, 8, 0));
    CHECK_THAT(error_of(png), Contains("second IHDR"));
    png = kSignature;
    chunk(png, "tEXt", {'a', 0, 'b'});
    CHECK_THAT(error_of(png), Contains("first chunk is tEXt, not IHDR"));
    // Trailing bytes after IEND are ignored, as libpng does.
    png = good;
    png.insert(png.end(), {1, 2, 3});
    CHECK(same(decode(png), decode(good)));
  }

  SECTION("image data: short, long, corrupt; huge sizes refused before allocating") {
    CHECK_THAT(error_of(assemble(ihdr(3, 2, 8, 0), zlib(grey_row))), Contains("ends before 3 x 2"));
    CHECK_THAT(error_of(assemble(ihdr(2, 1, 8, 0), zlib(grey_row))),
               Contains("holds more than 2 x 1"));
    Bytes z = zlib(grey_row);
    z.back() ^= 1;  // the Adler-32, under a correct CRC
    CHECK_THAT(error_of(assemble(ihdr(3, 1, 8, 0), z)), Contains("Adler-32"));
    CHECK_THAT(error_of(assemble(ihdr(1u << 20, 1025, 8, 0), zlib(grey_row))),
               Contains("larger than evax accepts"));
    CHECK_THAT(error_of(assemble(ihdr((1u << 20) + 1, 1, 8, 0), zlib(grey_row))),
               Contains("larger than evax accepts"));
    CHECK_THAT(error_of(assemble(ihdr(0x80000000u, 1, 8, 0), zlib(grey_row))),
               Contains("invalid image size"));
    // 2^30 pixels of RGBA16 (8 GiB) declared, a few bytes of data: refused at once.
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_THAT(error_of(assemble(ihdr(1u << 15, 1u << 15, 16, 6), zlib(grey_row))),
               Contains("far too short"));
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(100));
  }

  SECTION("every truncation and every flipped bit is an error (CRCs cover every byte)") {
    EncodeOptions o;
    o.idat_pieces = 4;
    o.ancillary = true;
    o.colour = 2;
    o.trns = true;
    const Bytes png = encode(40, 30, o, rng).png;
    int cases = 0, errors = 0;
    auto check = [&](const Bytes& bad) {
      ++cases;
      try {
        decode(bad);
        FAIL_CHECK("damaged file " << cases << " (" << bad.size() << " bytes) decoded");
      } catch (const evax::DataError& e) {
        ++errors;
        CHECK_THAT(e.what(), Contains("PNG: "));
      }
    };
    for (size_t n = 0; n < png.size(); ++n) check(Bytes(png.begin(), png.begin() + n));
    for (size_t i = 0; i < png.size(); ++i)
      for (uint8_t flip : {0x01, 0x80}) {
        Bytes bad = png;
        bad[i] ^= flip;
        check(bad);
      }
    CHECK(errors == cases);
    CHECK(cases == 3 * static_cast<int>(png.size()));
  }
}
