#include "evax/io/j2k.h"

#include <openjpeg.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "evax/core/error.h"

namespace evax {
namespace {

// The compressed bytes as an OpenJPEG read stream. Like OpenJPEG's file stream, a skip may go
// past the end; the next read then reports the end.
struct MemoryStream {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  uint64_t pos = 0;
};

OPJ_SIZE_T stream_read(void* buffer, OPJ_SIZE_T n, void* user) {
  auto* s = static_cast<MemoryStream*>(user);
  if (s->pos >= s->size) return static_cast<OPJ_SIZE_T>(-1);
  const uint64_t k = std::min<uint64_t>(n, s->size - s->pos);
  std::memcpy(buffer, s->data + s->pos, k);
  s->pos += k;
  return static_cast<OPJ_SIZE_T>(k);
}

OPJ_OFF_T stream_skip(OPJ_OFF_T n, void* user) {
  auto* s = static_cast<MemoryStream*>(user);
  if (n < 0 && static_cast<uint64_t>(-n) > s->pos) return -1;
  s->pos = static_cast<uint64_t>(static_cast<OPJ_OFF_T>(s->pos) + n);
  return n;
}

OPJ_BOOL stream_seek(OPJ_OFF_T at, void* user) {
  auto* s = static_cast<MemoryStream*>(user);
  if (at < 0 || static_cast<uint64_t>(at) > s->size) return OPJ_FALSE;
  s->pos = static_cast<uint64_t>(at);
  return OPJ_TRUE;
}

// OpenJPEG's error messages for the exception; warnings only when there is no error message.
struct Messages {
  std::string errors, warnings;
  static void add(std::string* to, const char* msg) {
    std::string m(msg ? msg : "");
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    if (m.empty() || to->size() > 400) return;
    if (!to->empty()) *to += "; ";
    *to += m;
  }
  std::string text() const {
    if (!errors.empty()) return errors;
    if (!warnings.empty()) return warnings;
    return "no message from OpenJPEG";
  }
};

void on_error(const char* msg, void* user) {
  Messages::add(&static_cast<Messages*>(user)->errors, msg);
}
void on_warning(const char* msg, void* user) {
  Messages::add(&static_cast<Messages*>(user)->warnings, msg);
}
void on_info(const char*, void*) {}

struct CodecDeleter {
  void operator()(opj_codec_t* c) const { opj_destroy_codec(c); }
};
struct StreamDeleter {
  void operator()(opj_stream_t* s) const { opj_stream_destroy(s); }
};
struct ImageDeleter {
  void operator()(opj_image_t* i) const { opj_image_destroy(i); }
};

constexpr uint8_t kJp2Signature[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50,
                                       0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
constexpr uint8_t kJ2kStart[4] = {0xFF, 0x4F, 0xFF, 0x51};  // SOC, then SIZ

std::string hex_start(const uint8_t* data, size_t size) {
  static const char* digits = "0123456789ABCDEF";
  std::string s;
  for (size_t i = 0; i < std::min<size_t>(size, 4); ++i) {
    if (i) s += ' ';
    s += digits[data[i] >> 4];
    s += digits[data[i] & 15];
  }
  return s.empty() ? "nothing" : s;
}

}  // namespace

J2kImage j2k_decode(const uint8_t* data, size_t size, const J2kExpect& expect) {
  OPJ_CODEC_FORMAT format;
  if (size >= sizeof kJp2Signature && std::memcmp(data, kJp2Signature, sizeof kJp2Signature) == 0)
    format = OPJ_CODEC_JP2;
  else if (size >= sizeof kJ2kStart && std::memcmp(data, kJ2kStart, sizeof kJ2kStart) == 0)
    format = OPJ_CODEC_J2K;
  else
    raise<DataError>("JPEG 2000: neither a codestream (FF 4F FF 51) nor a JP2 file: ", size,
                     " bytes starting with ", hex_start(data, size));

  Messages messages;
  std::unique_ptr<opj_codec_t, CodecDeleter> codec(opj_create_decompress(format));
  if (!codec) raise<DataError>("JPEG 2000: cannot create the OpenJPEG decoder");
  opj_set_error_handler(codec.get(), on_error, &messages);
  opj_set_warning_handler(codec.get(), on_warning, &messages);
  opj_set_info_handler(codec.get(), on_info, nullptr);
  opj_dparameters_t params;
  opj_set_default_decoder_parameters(&params);
  if (!opj_setup_decoder(codec.get(), &params))
    raise<DataError>("JPEG 2000: cannot set up the decoder: ", messages.text());
  // A truncated stream is an error, not an image with missing detail.
  opj_decoder_set_strict_mode(codec.get(), OPJ_TRUE);

  MemoryStream mem{data, size, 0};
  std::unique_ptr<opj_stream_t, StreamDeleter> stream(opj_stream_create(1 << 20, OPJ_TRUE));
  if (!stream) raise<DataError>("JPEG 2000: cannot create the OpenJPEG stream");
  opj_stream_set_user_data(stream.get(), &mem, nullptr);
  opj_stream_set_user_data_length(stream.get(), size);
  opj_stream_set_read_function(stream.get(), stream_read);
  opj_stream_set_skip_function(stream.get(), stream_skip);
  opj_stream_set_seek_function(stream.get(), stream_seek);

  opj_image_t* raw_image = nullptr;
  const bool header_ok = opj_read_header(stream.get(), codec.get(), &raw_image);
  std::unique_ptr<opj_image_t, ImageDeleter> image(raw_image);
  if (!header_ok || !image)
    raise<DataError>("JPEG 2000: cannot read the main header: ", messages.text());

  const int64_t width = static_cast<int64_t>(image->x1) - image->x0;
  const int64_t height = static_cast<int64_t>(image->y1) - image->y0;
  const int comps = static_cast<int>(image->numcomps);
  if (comps < 1 || !image->comps) raise<DataError>("JPEG 2000: no image components");
  if ((expect.width > 0 && width != expect.width) || (expect.height > 0 && height != expect.height))
    raise<DataError>("JPEG 2000: the codestream is ", width, "x", height, " (columns x rows), ",
                     "the data set says ", expect.width, "x", expect.height);
  if (expect.components > 0 && comps != expect.components)
    raise<DataError>("JPEG 2000: the codestream has ", comps, " component(s), the data set says ",
                     expect.components, " sample(s) per pixel");
  const int precision = static_cast<int>(image->comps[0].prec);
  for (int c = 0; c < comps; ++c) {
    const opj_image_comp_t& k = image->comps[c];
    if (k.dx != 1 || k.dy != 1)
      raise<DataError>("JPEG 2000: component ", c, " is subsampled (", k.dx, "x", k.dy,
                       "), which is not supported");
    if (static_cast<int>(k.prec) != precision)
      raise<DataError>("JPEG 2000: component ", c, " has precision ", k.prec, ", component 0 ",
                       precision);
  }
  if (precision < 1 || precision > 31)
    raise<DataError>("JPEG 2000: unsupported precision ", precision);

  if (!opj_decode(codec.get(), stream.get(), image.get()) ||
      !opj_end_decompress(codec.get(), stream.get()))
    raise<DataError>("JPEG 2000: cannot decode: ", messages.text());

  J2kImage out;
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.components = comps;
  out.precision = precision;
  out.is_signed = image->comps[0].sgnd != 0;
  const size_t pixels = static_cast<size_t>(width) * static_cast<size_t>(height);
  for (int c = 0; c < comps; ++c) {
    const opj_image_comp_t& k = image->comps[c];
    if (!k.data || static_cast<int64_t>(k.w) != width || static_cast<int64_t>(k.h) != height)
      raise<DataError>("JPEG 2000: component ", c, " decoded to ", k.w, "x", k.h, ", not ",
                       width, "x", height);
  }
  out.samples.resize(pixels * static_cast<size_t>(comps));
  if (comps == 1) {
    std::memcpy(out.samples.data(), image->comps[0].data, pixels * sizeof(int32_t));
  } else {
    for (int c = 0; c < comps; ++c) {
      const OPJ_INT32* src = image->comps[c].data;
      int32_t* dst = out.samples.data() + c;
      for (size_t i = 0; i < pixels; ++i) dst[i * comps] = src[i];
    }
  }
  return out;
}

}  // namespace evax
