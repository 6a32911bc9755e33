#include "evax/io/png.h"

#include <libdeflate.h>

#include <cstring>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <memory>
#include <vector>

namespace evax {
namespace {

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

struct DecompressorDeleter {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

// One decompressor per thread: libdeflate's are not thread-safe and cost ~30 KB to allocate.
libdeflate_decompressor* thread_decompressor() {
  thread_local std::unique_ptr<libdeflate_decompressor, DecompressorDeleter> d(
      libdeflate_alloc_decompressor());
  return d.get();
}

// Reverses one row's filter in place. BPP (bytes per pixel) is a template argument so that the
// left neighbours live in registers: reading cur[x - BPP] back from memory after writing it
// costs a store-forwarding stall per byte, which made Sub rows 5x slower.
template <int BPP>
bool unfilter_row(uint8_t f, uint8_t* cur, const uint8_t* prev, size_t stride) {
  int left[BPP] = {}, upleft[BPP] = {};
  switch (f) {
    case 0:
      return true;
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
    default:
      return false;
  }
}

// Reverses the PNG row filters in place. `raw` holds h rows of (1 filter byte + stride bytes).
// Returns false on an unknown filter type.
template <int BPP>
bool unfilter(uint8_t* raw, size_t h, size_t stride) {
  const uint8_t* prev = nullptr;  // previous unfiltered row (none for the first)
  for (size_t y = 0; y < h; ++y) {
    uint8_t* row = raw + y * (stride + 1);
    if (!unfilter_row<BPP>(row[0], row + 1, prev, stride)) return false;
    prev = row + 1;
  }
  return true;
}

bool unfilter(uint8_t* raw, size_t h, size_t stride, size_t bpp) {
  switch (bpp) {
    case 1: return unfilter<1>(raw, h, stride);
    case 2: return unfilter<2>(raw, h, stride);
    case 3: return unfilter<3>(raw, h, stride);
    case 4: return unfilter<4>(raw, h, stride);
    case 6: return unfilter<6>(raw, h, stride);
    case 8: return unfilter<8>(raw, h, stride);
    default: return false;
  }
}

}  // namespace

std::optional<cv::Mat> png_decode_fast(const uint8_t* data, size_t size) {
  static const uint8_t kSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size < 8 + 25 || std::memcmp(data, kSig, 8) != 0) return std::nullopt;

  uint32_t w = 0, h = 0;
  int depth = 0, colour = -1;
  std::vector<uint8_t> idat;
  const uint8_t* single_idat = nullptr;  // the common one-IDAT file is inflated in place
  size_t single_len = 0, n_idat = 0;
  bool ended = false, idat_done = false;
  for (size_t p = 8; p + 12 <= size;) {
    const uint32_t len = be32(data + p);
    if (len > 0x7fffffffu || len > size - p - 12) return std::nullopt;  // truncated
    const uint8_t* type = data + p + 4;
    const uint8_t* body = data + p + 8;
    const bool critical = !(type[0] & 0x20);
    // Any damage, even in an ancillary chunk libpng would drop with a warning, goes to OpenCV.
    if (be32(body + len) != libdeflate_crc32(0, type, len + 4)) return std::nullopt;
    if (p == 8) {
      if (std::memcmp(type, "IHDR", 4) != 0 || len != 13) return std::nullopt;
      w = be32(body);
      h = be32(body + 4);
      depth = body[8];
      colour = body[9];
      if (body[10] != 0 || body[11] != 0 || body[12] != 0) return std::nullopt;  // interlaced…
    } else if (std::memcmp(type, "IDAT", 4) == 0) {
      if (idat_done) return std::nullopt;  // IDATs must be consecutive
      if (n_idat == 0) {
        single_idat = body;
        single_len = len;
      } else {
        if (n_idat == 1) idat.assign(single_idat, single_idat + single_len);
        idat.insert(idat.end(), body, body + len);
      }
      ++n_idat;
    } else if (std::memcmp(type, "IEND", 4) == 0) {
      ended = true;
      break;
    } else {
      if (n_idat) idat_done = true;
      // PLTE or any other critical chunk, or transparency (OpenCV may turn it into alpha).
      if (critical || std::memcmp(type, "tRNS", 4) == 0) return std::nullopt;
    }
    p += 12 + static_cast<size_t>(len);
  }
  if (!ended || n_idat == 0) return std::nullopt;

  int channels;
  switch (colour) {
    case 0: channels = 1; break;  // grey
    case 2: channels = 3; break;  // RGB
    case 6: channels = 4; break;  // RGBA
    default: return std::nullopt;  // palette, grey + alpha
  }
  if (depth != 8 && depth != 16) return std::nullopt;
  if (w == 0 || h == 0 || w > (1u << 20) || h > (1u << 20)) return std::nullopt;
  const size_t bytes = static_cast<size_t>(depth / 8);
  const size_t bpp = bytes * static_cast<size_t>(channels);
  const size_t stride = static_cast<size_t>(w) * bpp;
  if (static_cast<double>(stride) * h > (1u << 30)) return std::nullopt;  // OpenCV's limit

  // The filtered rows are inflated into a buffer one byte wider per row than the image. For
  // 8-bit grey that buffer is a Mat whose view past the filter bytes is the result (no copy);
  // the other layouts are converted out of a per-thread buffer.
  const size_t raw_size = static_cast<size_t>(h) * (stride + 1);
  const bool in_place = depth == 8 && channels == 1;
  cv::Mat whole;
  thread_local std::vector<uint8_t> reused;
  std::vector<uint8_t> big;
  uint8_t* raw;
  if (in_place) {
    whole.create(static_cast<int>(h), static_cast<int>(stride + 1), CV_8U);
    raw = whole.data;
  } else {
    std::vector<uint8_t>& buf = raw_size <= (64u << 20) ? reused : big;  // not kept if huge
    if (buf.size() < raw_size) buf.resize(raw_size);
    raw = buf.data();
  }
  const uint8_t* z = n_idat == 1 ? single_idat : idat.data();
  const size_t zlen = n_idat == 1 ? single_len : idat.size();
  size_t got = 0;
  const libdeflate_result r =
      libdeflate_zlib_decompress(thread_decompressor(), z, zlen, raw, raw_size, &got);
  // Short or overlong data, or a bad Adler-32: let libpng judge it.
  if (r != LIBDEFLATE_SUCCESS || got != raw_size) return std::nullopt;
  if (!unfilter(raw, h, stride, bpp)) return std::nullopt;
  if (in_place) return whole(cv::Rect(1, 0, static_cast<int>(w), static_cast<int>(h)));

  const int type = CV_MAKETYPE(depth == 8 ? CV_8U : CV_16U, channels);
  cv::Mat out(static_cast<int>(h), static_cast<int>(w), type);
  for (uint32_t y = 0; y < h; ++y) {
    const uint8_t* src = raw + static_cast<size_t>(y) * (stride + 1) + 1;
    uint8_t* dst = out.ptr<uint8_t>(static_cast<int>(y));
    // OpenCV's channel order is BGR(A); 16-bit samples are big-endian in the file.
    for (uint32_t x = 0; x < w; ++x) {
      const uint8_t* s = src + static_cast<size_t>(x) * bpp;
      for (int c = 0; c < channels; ++c) {
        const int from = channels >= 3 && c < 3 ? 2 - c : c;
        if (depth == 8) {
          dst[static_cast<size_t>(x) * bpp + static_cast<size_t>(c)] = s[from];
        } else {
          const uint16_t v = static_cast<uint16_t>((s[2 * from] << 8) | s[2 * from + 1]);
          std::memcpy(dst + static_cast<size_t>(x) * bpp + 2 * static_cast<size_t>(c), &v, 2);
        }
      }
    }
  }
  return out;
}

}  // namespace evax
