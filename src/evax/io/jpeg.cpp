#include "evax/io/jpeg.h"

// jpeglib.h needs FILE and size_t declared first.
#include <jerror.h>
#include <jpeglib.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/io/png.h"  // kMaxImagePixels

namespace evax {
namespace {

struct ErrorManager {
  jpeg_error_mgr mgr;  // first: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

// libjpeg's default error_exit calls exit(): format the message and jump back to decode() instead.
[[noreturn]] void on_error(j_common_ptr c) {
  auto* e = reinterpret_cast<ErrorManager*>(c->err);
  c->err->format_message(c, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings (level -1) are corrupt or missing data that libjpeg would paper over: errors here.
// Trace messages (level >= 0) are dropped.
void on_message(j_common_ptr c, int level) {
  if (level >= 0) return;
  const int code = c->err->msg_code;
  if (code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM) return;  // metadata only
  on_error(c);
}

struct Decoder {
  jpeg_decompress_struct cinfo{};
  ErrorManager err{};
  bool created = false;
  ~Decoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

// Decodes into `out`; false (err.message set) when libjpeg failed. longjmp skips destructors, so
// every object with one that lives while libjpeg runs is declared before setjmp (here: `cmyk`,
// and the caller's). C++ exceptions are thrown only outside libjpeg's frames.
bool run(Decoder& d, const uint8_t* data, size_t size, cv::Mat& out, std::vector<uint8_t>& cmyk) {
  jpeg_decompress_struct& ci = d.cinfo;
  ci.err = jpeg_std_error(&d.err.mgr);
  d.err.mgr.error_exit = on_error;
  d.err.mgr.emit_message = on_message;
  if (setjmp(d.err.jump)) return false;
  d.created = true;  // destroying a zeroed struct is a no-op, so this may precede the create
  jpeg_create_decompress(&ci);
  jpeg_mem_src(&ci, data, static_cast<unsigned long>(size));
  jpeg_read_header(&ci, TRUE);
  const int64_t w = ci.image_width, h = ci.image_height;
  if (w * h > kMaxImagePixels)
    raise<DataError>("JPEG: image of ", w, " x ", h,
                     " pixels is larger than evax accepts (2^30 pixels)");
  int type;
  switch (ci.num_components) {
    case 1: ci.out_color_space = JCS_GRAYSCALE, type = CV_8UC1; break;
    case 3: ci.out_color_space = JCS_EXT_BGR, type = CV_8UC3; break;
    case 4: ci.out_color_space = JCS_CMYK, type = CV_8UC3; break;  // CMYK or YCCK
    default:
      raise<DataError>("JPEG: ", ci.num_components, " colour components (evax reads 1, 3 or 4)");
  }
  jpeg_start_decompress(&ci);
  EVAX_ASSERT(ci.output_width == ci.image_width && ci.output_height == ci.image_height);
  out.create(static_cast<int>(h), static_cast<int>(w), type);
  if (ci.out_color_space == JCS_CMYK) cmyk.resize(static_cast<size_t>(w) * 4);
  while (ci.output_scanline < ci.output_height) {
    const int y = static_cast<int>(ci.output_scanline);
    JSAMPROW rows[16];
    JDIMENSION want = 1;
    if (ci.out_color_space == JCS_CMYK) {
      rows[0] = cmyk.data();
    } else {
      want = std::min<JDIMENSION>(16, ci.output_height - ci.output_scanline);
      for (JDIMENSION i = 0; i < want; ++i) rows[i] = out.ptr<uint8_t>(y + static_cast<int>(i));
    }
    if (jpeg_read_scanlines(&ci, rows, want) == 0)  // cannot happen with a memory source
      raise<DataError>("JPEG: the decoder stopped at row ", y);
    if (ci.out_color_space == JCS_CMYK) {
      uint8_t* bgr = out.ptr<uint8_t>(y);
      for (int64_t x = 0; x < w; ++x) {
        const uint8_t* p = &cmyk[static_cast<size_t>(x) * 4];
        const int k = p[3];
        for (int c = 0; c < 3; ++c)
          bgr[x * 3 + 2 - c] = static_cast<uint8_t>(k - (((255 - p[c]) * k) >> 8));
      }
    }
  }
  jpeg_finish_decompress(&ci);
  return true;
}

}  // namespace

bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff;
}

cv::Mat jpeg_decode(const uint8_t* data, size_t size) {
  if (!is_jpeg(data, size)) raise<DataError>("JPEG: not a JPEG file (no SOI marker)");
  Decoder d;
  cv::Mat out;
  std::vector<uint8_t> cmyk;
  if (!run(d, data, size, out, cmyk)) {
    const bool eof = d.err.mgr.msg_code == JWRN_JPEG_EOF;
    raise<DataError>("JPEG: ", d.err.message, eof ? " (truncated file)" : "");
  }
  return out;
}

}  // namespace evax
