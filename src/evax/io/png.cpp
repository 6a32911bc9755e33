#include "evax/io/png.h"

#include <libdeflate.h>

#include <algorithm>
#include <array>
#include <cstring>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <memory>
#include <vector>

#include "evax/core/error.h"

namespace evax {
namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

template <class... T>
[[noreturn]] void fail(const T&... parts) {
  raise<DataError>("PNG: ", parts...);
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// ---- Decoding.

struct DecompressorDeleter {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

// One decompressor per thread: libdeflate's are not thread-safe and cost ~30 KB to allocate.
libdeflate_decompressor* thread_decompressor() {
  thread_local std::unique_ptr<libdeflate_decompressor, DecompressorDeleter> d(
      libdeflate_alloc_decompressor());
  if (!d) raise<DataError>("PNG: out of memory for a decompressor");
  return d.get();
}

// Reverses one row's filter in place. BPP (bytes per pixel) is a template argument so that the
// left neighbours live in registers: reading cur[x - BPP] back from memory after writing it
// costs a store-forwarding stall per byte, which made Sub rows 5x slower.
template <int BPP>
bool unfilter_row(uint8_t f, uint8_t* cur, const uint8_t* prev, size_t stride) {
  int left[BPP] = {}, upleft[BPP] = {};
  switch (f) {
    case 0: return true;
    case 1:  // Sub
#ifdef __SSE2__
      if (BPP == 1) {  // a byte-wise prefix sum, 16 bytes at a time in four shift-adds
        __m128i carry = _mm_setzero_si128();
        size_t x = 0;
        for (; x + 16 <= stride; x += 16) {
          __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(cur + x));
          v = _mm_add_epi8(v, _mm_slli_si128(v, 1));
          v = _mm_add_epi8(v, _mm_slli_si128(v, 2));
          v = _mm_add_epi8(v, _mm_slli_si128(v, 4));
          v = _mm_add_epi8(v, _mm_slli_si128(v, 8));
          v = _mm_add_epi8(v, carry);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(cur + x), v);
          carry = _mm_set1_epi8(static_cast<char>(cur[x + 15]));
        }
        uint8_t left1 = x ? cur[x - 1] : 0;
        for (; x < stride; ++x) cur[x] = left1 = static_cast<uint8_t>(left1 + cur[x]);
        return true;
      }
#endif
      for (size_t x = 0; x < stride; x += BPP)
        for (int c = 0; c < BPP; ++c) cur[x + c] = static_cast<uint8_t>(left[c] += cur[x + c]);
      return true;
    case 2:  // Up
      if (prev)
        for (size_t x = 0; x < stride; ++x) cur[x] = static_cast<uint8_t>(cur[x] + prev[x]);
      return true;
    case 3:  // Average
      for (size_t x = 0; x < stride; x += BPP)
        for (int c = 0; c < BPP; ++c) {
          const int b = prev ? prev[x + c] : 0;
          left[c] = static_cast<uint8_t>(cur[x + c] + ((left[c] + b) >> 1));
          cur[x + c] = static_cast<uint8_t>(left[c]);
        }
      return true;
    case 4:  // Paeth
      // Branch-free: on noisy rows the predictor choice is random and branches mispredict.
      // With p = a + b - c: |p - a| = |b - c|, |p - b| = |a - c|, |p - c| = |(a - c) + (b - c)|.
      for (size_t x = 0; x < stride; x += BPP)
        for (int c = 0; c < BPP; ++c) {
          const int a = left[c], b = prev ? prev[x + c] : 0, cc = upleft[c];
          const int bc = b - cc, ac = a - cc, s = ac + bc;
          const int pa = bc < 0 ? -bc : bc, pb = ac < 0 ? -ac : ac, pc = s < 0 ? -s : s;
          const int take_b = -static_cast<int>(pb <= pc);
          const int take_a = -static_cast<int>((pa <= pb) & (pa <= pc));
          const int pred = (a & take_a) | (((b & take_b) | (cc & ~take_b)) & ~take_a);
          left[c] = (cur[x + c] + pred) & 0xff;
          cur[x + c] = static_cast<uint8_t>(left[c]);
          upleft[c] = b;
        }
      return true;
    default: return false;
  }
}

// Reverses the filters of `h` rows of (1 filter byte + stride bytes) at `raw`, in place. With
// `compact`, each unfiltered row is moved to raw + y * stride (dropping the filter bytes), so
// that the rows end up contiguous; a row's new place never overlaps the rows still to come.
// Returns the index of the first row with an unknown filter type, or h.
template <int BPP>
size_t unfilter(uint8_t* raw, size_t h, size_t stride, bool compact) {
  const uint8_t* prev = nullptr;  // previous unfiltered row (none for the first)
  for (size_t y = 0; y < h; ++y) {
    uint8_t* row = raw + y * (stride + 1);
    if (!unfilter_row<BPP>(row[0], row + 1, prev, stride)) return y;
    if (compact) {
      std::memmove(raw + y * stride, row + 1, stride);
      prev = raw + y * stride;
    } else {
      prev = row + 1;
    }
  }
  return h;
}

size_t unfilter(uint8_t* raw, size_t h, size_t stride, size_t bpp, bool compact) {
  switch (bpp) {
    case 1: return unfilter<1>(raw, h, stride, compact);
    case 2: return unfilter<2>(raw, h, stride, compact);
    case 3: return unfilter<3>(raw, h, stride, compact);
    case 4: return unfilter<4>(raw, h, stride, compact);
    case 6: return unfilter<6>(raw, h, stride, compact);
    case 8: return unfilter<8>(raw, h, stride, compact);
    default: EVAX_ASSERT(false, "PNG filter unit of ", bpp, " bytes");
  }
  return 0;
}

struct Header {
  uint32_t width = 0, height = 0;
  int depth = 0, colour = 0;
  bool interlaced = false;
};

int samples_per_pixel(int colour) {
  switch (colour) {
    case 0: return 1;   // grey
    case 2: return 3;   // RGB
    case 3: return 1;   // palette index
    case 4: return 2;   // grey + alpha
    default: return 4;  // RGBA
  }
}

Header parse_ihdr(const uint8_t* b) {
  Header h;
  h.width = be32(b);
  h.height = be32(b + 4);
  h.depth = b[8];
  h.colour = b[9];
  if (h.width == 0 || h.height == 0 || h.width > 0x7fffffffu || h.height > 0x7fffffffu)
    fail("invalid image size ", h.width, " x ", h.height, " in IHDR");
  bool ok;
  switch (h.colour) {
    case 0:
      ok = h.depth == 1 || h.depth == 2 || h.depth == 4 || h.depth == 8 || h.depth == 16;
      break;
    case 3: ok = h.depth == 1 || h.depth == 2 || h.depth == 4 || h.depth == 8; break;
    case 2:
    case 4:
    case 6: ok = h.depth == 8 || h.depth == 16; break;
    default: fail("invalid colour type ", h.colour, " in IHDR");
  }
  if (!ok) fail("invalid bit depth ", h.depth, " for colour type ", h.colour, " in IHDR");
  if (b[10] != 0) fail("unknown compression method ", int{b[10]}, " in IHDR");
  if (b[11] != 0) fail("unknown filter method ", int{b[11]}, " in IHDR");
  if (b[12] > 1) fail("unknown interlace method ", int{b[12]}, " in IHDR");
  h.interlaced = b[12] == 1;
  if (h.width > kMaxImageSide || h.height > kMaxImageSide ||
      int64_t{h.width} * h.height > kMaxImagePixels)
    fail("image of ", h.width, " x ", h.height,
         " pixels is larger than evax accepts (2^30 pixels, 2^20 a side)");
  return h;
}

// A chunk type for messages: its four letters, or their codes when they are not letters.
std::string chunk_name(const uint8_t* t) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    if ((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z')) {
      s += static_cast<char>(t[i]);
    } else {
      s = str_cat("bytes ", int{t[0]}, " ", int{t[1]}, " ", int{t[2]}, " ", int{t[3]});
      break;
    }
  }
  return s;
}

bool is_type(const uint8_t* t, const char* name) { return std::memcmp(t, name, 4) == 0; }

// What the chunks before the image data say about turning samples into OpenCV pixels.
struct Pixels {
  Header hdr;
  int out_channels = 1;
  bool trns = false;                   // a tRNS chunk applies (RGB or palette)
  uint16_t key[3] = {};                // RGB colour key, masked to the bit depth
  int n_palette = 0;                   // PLTE entries
  std::array<uint8_t, 256 * 4> lut{};  // palette as BGRA, alpha from tRNS (255 past it)
};

// One Adam7 pass (or the whole image): its origin and spacing in the image, and its size.
struct Pass {
  uint32_t x0, y0, dx, dy;
  size_t w = 0, h = 0;
};

std::vector<Pass> passes(const Header& h) {
  if (!h.interlaced) return {{0, 0, 1, 1, h.width, h.height}};
  static const uint32_t k[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                   {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  std::vector<Pass> out;
  for (const auto& p : k) {
    Pass s{p[0], p[1], p[2], p[3]};
    s.w = h.width > p[0] ? (h.width - p[0] + p[2] - 1) / p[2] : 0;
    s.h = h.height > p[1] ? (h.height - p[1] + p[3] - 1) / p[3] : 0;
    out.push_back(s);  // empty passes stay, with no bytes in the stream
  }
  return out;
}

size_t row_bytes(size_t w, int bits_per_pixel) {
  return (w * static_cast<size_t>(bits_per_pixel) + 7) / 8;
}

inline void put16(uint8_t* d, uint16_t v) { std::memcpy(d, &v, 2); }

// Converts the `n` pixels of one unfiltered row into OpenCV pixels `step` bytes apart starting at
// `dst`. Returns the first palette index past the palette, or -1.
int convert_row(const Pixels& px, const uint8_t* s, size_t n, uint8_t* d, size_t step) {
  const int depth = px.hdr.depth;
  switch (px.hdr.colour) {
    case 0:
      if (depth == 8) {
        for (size_t x = 0; x < n; ++x) d[x * step] = s[x];
      } else if (depth == 16) {
        for (size_t x = 0; x < n; ++x) put16(d + x * step, be16(s + 2 * x));
      } else {  // 1, 2, 4 bits, first pixel in the high bits; scaled so the maximum is 255
        const int per_byte = 8 / depth, mask = (1 << depth) - 1, scale = 255 / mask;
        for (size_t x = 0; x < n; ++x) {
          const int shift = 8 - depth * (1 + static_cast<int>(x % per_byte));
          d[x * step] = static_cast<uint8_t>(((s[x / per_byte] >> shift) & mask) * scale);
        }
      }
      return -1;
    case 3: {
      const int per_byte = 8 / depth, mask = (1 << depth) - 1;
      const size_t cn = static_cast<size_t>(px.out_channels);
      for (size_t x = 0; x < n; ++x) {
        const int shift = 8 - depth * (1 + static_cast<int>(x % per_byte));
        const int i = depth == 8 ? s[x] : (s[x / per_byte] >> shift) & mask;
        if (i >= px.n_palette) return i;
        std::memcpy(d + x * step, &px.lut[4 * static_cast<size_t>(i)], cn);
      }
      return -1;
    }
    case 2:
      if (depth == 8) {
        for (size_t x = 0; x < n; ++x) {
          const uint8_t r = s[3 * x], g = s[3 * x + 1], b = s[3 * x + 2];
          uint8_t* o = d + x * step;
          o[0] = b, o[1] = g, o[2] = r;
          if (px.trns) o[3] = (r == px.key[0] && g == px.key[1] && b == px.key[2]) ? 0 : 255;
        }
      } else {
        for (size_t x = 0; x < n; ++x) {
          const uint16_t r = be16(s + 6 * x), g = be16(s + 6 * x + 2), b = be16(s + 6 * x + 4);
          uint8_t* o = d + x * step;
          put16(o, b), put16(o + 2, g), put16(o + 4, r);
          if (px.trns)
            put16(o + 6, (r == px.key[0] && g == px.key[1] && b == px.key[2]) ? 0 : 65535);
        }
      }
      return -1;
    case 4:  // grey + alpha: grey replicated into B, G, R (libpng's gray_to_rgb, as OpenCV asks)
      if (depth == 8) {
        for (size_t x = 0; x < n; ++x) {
          uint8_t* o = d + x * step;
          o[0] = o[1] = o[2] = s[2 * x];
          o[3] = s[2 * x + 1];
        }
      } else {
        for (size_t x = 0; x < n; ++x) {
          const uint16_t g = be16(s + 4 * x), a = be16(s + 4 * x + 2);
          uint8_t* o = d + x * step;
          put16(o, g), put16(o + 2, g), put16(o + 4, g), put16(o + 6, a);
        }
      }
      return -1;
    default:  // RGBA
      if (depth == 8) {
        for (size_t x = 0; x < n; ++x) {
          uint8_t* o = d + x * step;
          const uint8_t* i = s + 4 * x;
          o[0] = i[2], o[1] = i[1], o[2] = i[0], o[3] = i[3];
        }
      } else {
        for (size_t x = 0; x < n; ++x) {
          uint8_t* o = d + x * step;
          const uint8_t* i = s + 8 * x;
          put16(o, be16(i + 4)), put16(o + 2, be16(i + 2)), put16(o + 4, be16(i)),
              put16(o + 6, be16(i + 6));
        }
      }
      return -1;
  }
}

// ---- Encoding.

struct CompressorDeleter {
  void operator()(libdeflate_compressor* c) const { libdeflate_free_compressor(c); }
};

// One compressor per thread and level (each costs from ~100 KB to a few MB).
libdeflate_compressor* thread_compressor(int level) {
  thread_local std::unique_ptr<libdeflate_compressor, CompressorDeleter> c[13];
  if (!c[level]) c[level].reset(libdeflate_alloc_compressor(level));
  if (!c[level]) raise<DataError>("PNG: out of memory for a level ", level, " compressor");
  return c[level].get();
}

void append32(std::string& s, uint32_t v) {
  for (int sh = 24; sh >= 0; sh -= 8) s.push_back(static_cast<char>((v >> sh) & 0xff));
}

void append_chunk(std::string& png, const char* type, const uint8_t* body, size_t len) {
  append32(png, static_cast<uint32_t>(len));
  const size_t start = png.size();
  png.append(type, 4);
  if (len) png.append(reinterpret_cast<const char*>(body), len);
  append32(png, libdeflate_crc32(0, png.data() + start, len + 4));
}

// Writes row `cur` filtered with type F to `out` and returns the sum of the filtered bytes read as
// signed (libpng's measure of a filter's cost). `cur` and `prev` (the previous row) are preceded
// by `bpp` zero bytes, the left neighbours of the first pixel, so the loop has no branches and
// vectorises.
template <int F>
uint64_t filter_row(const uint8_t* cur, const uint8_t* prev, size_t stride, size_t bpp,
                    uint8_t* out) {
  uint32_t sum = 0;  // < 128 * 2^23 per row: stride is at most 2^23 bytes
  for (size_t x = 0; x < stride; ++x) {
    const int a = cur[x - bpp], b = prev[x], c = prev[x - bpp];
    int pred;
    if (F == 0) pred = 0;
    if (F == 1) pred = a;
    if (F == 2) pred = b;
    if (F == 3) pred = (a + b) >> 1;
    if (F == 4) {  // Paeth, with p = a + b - c: |p - a| = |b - c| and so on
      const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
      pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
    }
    const uint8_t v = static_cast<uint8_t>(cur[x] - pred);
    out[x] = v;
    sum += v < 128 ? v : 256 - v;
  }
  return sum;
}

uint64_t filter_row(int type, const uint8_t* cur, const uint8_t* prev, size_t stride, size_t bpp,
                    uint8_t* out) {
  switch (type) {
    case 0: return filter_row<0>(cur, prev, stride, bpp, out);
    case 1: return filter_row<1>(cur, prev, stride, bpp, out);
    case 2: return filter_row<2>(cur, prev, stride, bpp, out);
    case 3: return filter_row<3>(cur, prev, stride, bpp, out);
    default: return filter_row<4>(cur, prev, stride, bpp, out);
  }
}

}  // namespace

bool is_png(const uint8_t* data, size_t size) {
  return size >= 8 && std::memcmp(data, kSignature, 8) == 0;
}

cv::Mat png_decode(const uint8_t* data, size_t size) {
  if (!is_png(data, size)) fail("not a PNG file (no PNG signature)");

  Pixels px;
  Header& hdr = px.hdr;
  std::vector<uint8_t> idat;
  const uint8_t* single_idat = nullptr;  // the common one-IDAT file is inflated in place
  size_t single_len = 0, n_idat = 0;
  bool idat_done = false, seen_plte = false, seen_trns = false;
  for (size_t p = 8;;) {
    if (size - p < 12) fail("the file ends at byte ", size, " before the IEND chunk (truncated)");
    const uint32_t len = be32(data + p);
    const uint8_t* type = data + p + 4;
    const uint8_t* body = data + p + 8;
    const std::string name = chunk_name(type);
    if (name.size() != 4) fail("invalid chunk type (", name, ") at byte ", p, " (damaged file)");
    if (len > 0x7fffffffu || len > size - p - 12)
      fail("chunk ", name, " at byte ", p, " of ", len, " bytes runs past the end of the file (",
           size, " bytes; truncated or damaged)");
    if (be32(body + len) != libdeflate_crc32(0, type, len + 4))
      fail("chunk ", name, " at byte ", p, " has a bad CRC (damaged file)");
    const bool first = p == 8;
    p += 12 + static_cast<size_t>(len);

    if (first != is_type(type, "IHDR"))
      fail(first ? str_cat("the first chunk is ", name, ", not IHDR") : "a second IHDR chunk");
    if (first) {
      if (len != 13) fail("IHDR chunk of ", len, " bytes (must be 13)");
      hdr = parse_ihdr(body);
      continue;
    }
    if (is_type(type, "IEND")) break;
    if (is_type(type, "IDAT")) {
      if (idat_done) fail("IDAT chunks are not consecutive (damaged file)");
      if (hdr.colour == 3 && !seen_plte) fail("palette image without a PLTE chunk before IDAT");
      if (n_idat == 0) {
        single_idat = body;
        single_len = len;
      } else {
        if (n_idat == 1) idat.assign(single_idat, single_idat + single_len);
        idat.insert(idat.end(), body, body + len);
      }
      ++n_idat;
      continue;
    }
    if (n_idat) idat_done = true;
    if (is_type(type, "PLTE")) {
      if (n_idat) fail("PLTE chunk after the image data");
      if (seen_plte) fail("a second PLTE chunk");
      if (hdr.colour == 0 || hdr.colour == 4) fail("PLTE chunk in a grey image");
      if (len == 0 || len > 768 || len % 3 != 0)
        fail("PLTE chunk of ", len, " bytes (must be 3 to 768, a multiple of 3)");
      if (seen_trns) fail("tRNS chunk before PLTE");  // libpng would drop the tRNS
      seen_plte = true;
      if (hdr.colour != 3) continue;  // a suggested palette for an RGB image: unused
      px.n_palette = static_cast<int>(len / 3);
      for (int i = 0; i < px.n_palette; ++i) {
        uint8_t* e = &px.lut[4 * static_cast<size_t>(i)];
        e[0] = body[3 * i + 2], e[1] = body[3 * i + 1], e[2] = body[3 * i], e[3] = 255;
      }
    } else if (is_type(type, "tRNS")) {
      if (n_idat) fail("tRNS chunk after the image data");
      if (seen_trns) fail("a second tRNS chunk");
      seen_trns = true;
      switch (hdr.colour) {
        case 0:  // a grey colour key: OpenCV keeps grey images single-channel and ignores it
          if (len != 2) fail("tRNS chunk of ", len, " bytes in a grey image (must be 2)");
          break;
        case 2: {
          if (len != 6) fail("tRNS chunk of ", len, " bytes in an RGB image (must be 6)");
          const uint16_t mask = static_cast<uint16_t>((1u << hdr.depth) - 1);
          for (int c = 0; c < 3; ++c) px.key[c] = be16(body + 2 * c) & mask;
          px.trns = true;
          break;
        }
        case 3:
          if (!seen_plte) fail("tRNS chunk before PLTE");
          if (len == 0 || len > static_cast<uint32_t>(px.n_palette))
            fail("tRNS chunk of ", len, " entries for a palette of ", px.n_palette);
          for (uint32_t i = 0; i < len; ++i) px.lut[4 * i + 3] = body[i];
          px.trns = true;
          break;
        default:  // not allowed with an alpha channel; libpng ignores it, and so do we
          break;
      }
    } else if (!(type[0] & 0x20)) {
      fail("unknown critical chunk ", name);
    }  // other ancillary chunks (text, gamma, profiles …) are skipped
  }
  if (n_idat == 0) fail("no image data (IDAT chunk)");

  const int bits = hdr.depth * samples_per_pixel(hdr.colour);
  const size_t bpp = static_cast<size_t>(std::max(1, bits / 8));  // the filters' pixel unit
  const std::vector<Pass> ps = passes(hdr);
  size_t raw_size = 0;
  for (const Pass& s : ps)
    if (s.w && s.h) raw_size += s.h * (row_bytes(s.w, bits) + 1);
  const uint8_t* z = n_idat == 1 ? single_idat : idat.data();
  const size_t zlen = n_idat == 1 ? single_len : idat.size();
  // Deflate expands at most 1032:1: refuse a short stream before allocating for a big header.
  if (raw_size / 1032 > zlen + 64)
    fail("the image data (", zlen, " bytes) is far too short for ", hdr.width, " x ", hdr.height,
         " pixels (truncated or damaged)");

  switch (hdr.colour) {
    case 0: px.out_channels = 1; break;
    case 2:
    case 3: px.out_channels = px.trns ? 4 : 3; break;
    default: px.out_channels = 4; break;
  }
  const int out_depth = hdr.depth == 16 ? CV_16U : CV_8U;
  const int w = static_cast<int>(hdr.width), h = static_cast<int>(hdr.height);

  // The filtered rows are inflated into a buffer one byte wider per row than the image. For
  // non-interlaced 8-bit grey that buffer becomes the result: the rows are unfiltered and moved
  // over the filter bytes in place. Other layouts are converted out of a per-thread buffer.
  const bool in_place = !hdr.interlaced && hdr.colour == 0 && hdr.depth == 8;
  cv::Mat whole;
  thread_local std::vector<uint8_t> reused;
  std::vector<uint8_t> big;
  uint8_t* raw;
  if (in_place) {
    whole.create(1, static_cast<int>(raw_size), CV_8U);
    raw = whole.data;
  } else {
    std::vector<uint8_t>& buf = raw_size <= (64u << 20) ? reused : big;  // not kept if huge
    if (buf.size() < raw_size) buf.resize(raw_size);
    raw = buf.data();
  }
  const libdeflate_result r =
      libdeflate_zlib_decompress(thread_decompressor(), z, zlen, raw, raw_size, nullptr);
  switch (r) {
    case LIBDEFLATE_SUCCESS: break;
    case LIBDEFLATE_SHORT_OUTPUT:
      fail("the image data ends before ", hdr.width, " x ", hdr.height,
           " pixels (truncated or damaged)");
    case LIBDEFLATE_INSUFFICIENT_SPACE:
      fail("the image data holds more than ", hdr.width, " x ", hdr.height, " pixels (damaged)");
    default: fail("the image data is damaged (invalid zlib stream or Adler-32 checksum)");
  }

  if (in_place) {
    const size_t bad = unfilter(raw, hdr.height, hdr.width, 1, true);
    if (bad != hdr.height)
      fail("row ", bad, " has an invalid filter type ", int{raw[bad * (hdr.width + 1)]});
    return whole.colRange(0, w * h).reshape(1, h);
  }

  cv::Mat out(h, w, CV_MAKETYPE(out_depth, px.out_channels));
  const size_t pixel_bytes = out.elemSize();
  uint8_t* pass_raw = raw;
  for (size_t pi = 0; pi < ps.size(); ++pi) {
    const Pass& s = ps[pi];
    if (!s.w || !s.h) continue;
    const size_t stride = row_bytes(s.w, bits);
    const size_t bad = unfilter(pass_raw, s.h, stride, bpp, false);
    if (bad != s.h)
      fail("row ", bad, hdr.interlaced ? str_cat(" of interlace pass ", pi + 1) : std::string(),
           " has an invalid filter type ", int{pass_raw[bad * (stride + 1)]});
    for (size_t y = 0; y < s.h; ++y) {
      uint8_t* dst = out.ptr<uint8_t>(static_cast<int>(s.y0 + y * s.dy)) + s.x0 * pixel_bytes;
      const int index =
          convert_row(px, pass_raw + y * (stride + 1) + 1, s.w, dst, s.dx * pixel_bytes);
      if (index >= 0)
        fail("a pixel in row ", s.y0 + y * s.dy, " has palette index ", index,
             " but the palette has ", px.n_palette, " entries");
    }
    pass_raw += s.h * (stride + 1);
  }
  return out;
}

std::string png_encode(const cv::Mat& img, int level) {
  const int depth = img.depth(), cn = img.channels();
  if (img.empty()) raise<DataError>("PNG: cannot encode an empty image");
  if ((depth != CV_8U && depth != CV_16U) || (cn != 1 && cn != 3 && cn != 4))
    raise<DataError>("PNG: cannot encode an image of ", cn, " channel(s) of OpenCV depth ", depth,
                     "; expected 8- or 16-bit unsigned with 1, 3 or 4 channels");
  if (level < 0 || level > 12)
    raise<DataError>("PNG: compression level ", level, " is not 0 to 12");
  const size_t w = static_cast<size_t>(img.cols), h = static_cast<size_t>(img.rows);
  const size_t bytes = depth == CV_16U ? 2 : 1, bpp = bytes * static_cast<size_t>(cn);
  const size_t stride = w * bpp;

  // Rows in PNG order (RGB(A), big-endian), each behind the filter byte that minimises the sum of
  // absolute values. At level 0 nothing is compressed, so filtering would only cost time.
  std::vector<uint8_t> filtered(h * (stride + 1));
  // Rows with bpp zero bytes in front (the first pixel's left neighbours); prev starts as zeros.
  std::vector<uint8_t> prev_buf(bpp + stride, 0), cur_buf(bpp + stride, 0), trial(stride);
  uint8_t* prev = prev_buf.data() + bpp;
  uint8_t* cur = cur_buf.data() + bpp;
  for (size_t y = 0; y < h; ++y) {
    const uint8_t* src = img.ptr<uint8_t>(static_cast<int>(y));
    if (cn == 1 && bytes == 1) {
      std::memcpy(cur, src, stride);
    } else {
      for (size_t x = 0; x < w; ++x)
        for (int c = 0; c < cn; ++c) {
          const int from = cn >= 3 && c < 3 ? 2 - c : c;  // BGR(A) -> RGB(A)
          const size_t o = x * bpp + static_cast<size_t>(c) * bytes;
          if (bytes == 1) {
            cur[o] = src[x * bpp + static_cast<size_t>(from)];
          } else {
            uint16_t v;
            std::memcpy(&v, src + x * bpp + 2 * static_cast<size_t>(from), 2);
            cur[o] = static_cast<uint8_t>(v >> 8);
            cur[o + 1] = static_cast<uint8_t>(v & 0xff);
          }
        }
    }
    uint8_t* out = filtered.data() + y * (stride + 1);
    if (level == 0) {
      out[0] = 0;
      std::memcpy(out + 1, cur, stride);
    } else {
      // Each filter is tried into `trial`; the best so far is kept in the output row.
      uint64_t best = filter_row(0, cur, prev, stride, bpp, out + 1);
      out[0] = 0;
      for (int f = 1; f <= 4; ++f) {
        const uint64_t sum = filter_row(f, cur, prev, stride, bpp, trial.data());
        if (sum < best) {
          best = sum;
          out[0] = static_cast<uint8_t>(f);
          std::memcpy(out + 1, trial.data(), stride);
        }
      }
    }
    std::swap(prev, cur);
  }

  libdeflate_compressor* comp = thread_compressor(level);
  std::vector<uint8_t> z(libdeflate_zlib_compress_bound(comp, filtered.size()));
  z.resize(libdeflate_zlib_compress(comp, filtered.data(), filtered.size(), z.data(), z.size()));
  EVAX_ASSERT(!z.empty(), "libdeflate could not compress within its own bound");

  std::string png(reinterpret_cast<const char*>(kSignature), 8);
  png.reserve(z.size() + 64);
  uint8_t ihdr[13];
  for (int i = 0; i < 4; ++i) {
    ihdr[i] = static_cast<uint8_t>(w >> (24 - 8 * i));
    ihdr[4 + i] = static_cast<uint8_t>(h >> (24 - 8 * i));
  }
  ihdr[8] = static_cast<uint8_t>(8 * bytes);
  ihdr[9] = static_cast<uint8_t>(cn == 1 ? 0 : cn == 3 ? 2 : 6);
  ihdr[10] = ihdr[11] = ihdr[12] = 0;
  append_chunk(png, "IHDR", ihdr, 13);
  constexpr size_t kMaxChunk = size_t{1} << 30;  // chunk lengths stop at 2^31 - 1
  for (size_t off = 0; off < z.size(); off += kMaxChunk)
    append_chunk(png, "IDAT", z.data() + off, std::min(kMaxChunk, z.size() - off));
  append_chunk(png, "IEND", nullptr, 0);
  return png;
}

}  // namespace evax
