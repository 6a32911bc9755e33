#include "evax/io/dicom.h"

#include <dcmtk/config/osconfig.h>  // must come first among DCMTK headers
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "evax/core/error.h"
#include "evax/io/j2k.h"

namespace evax {
namespace {

// DCMTK keeps its codecs in a global list; registering twice would decode with duplicates.
void register_codecs() {
  static std::once_flag once;
  std::call_once(once, [] {
    DJDecoderRegistration::registerCodecs();    // JPEG baseline, extended, lossless (IJG)
    DJLSDecoderRegistration::registerCodecs();  // JPEG-LS (CharLS)
    DcmRLEDecoderRegistration::registerCodecs();
    // Every defect reaches the caller as a DataError; DCMTK's own console messages about the
    // same defects would only repeat them (once per file in a data loader).
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  });
}

template <class... T>
[[noreturn]] void fail(const std::string& path, const T&... parts) {
  raise<DataError>("DICOM file ", path, ": ", parts...);
}

// Optional unsigned short attribute: `fallback` when absent, DataError when unreadable.
int get_us(DcmItem* item, const DcmTagKey& tag, const char* name, const std::string& path,
           int fallback = -1) {
  Uint16 v = 0;
  const OFCondition c = item->findAndGetUint16(tag, v);
  if (c.good()) return v;
  if (c == EC_TagNotFound || c == EC_IllegalCall) {  // absent, or present with no value
    if (fallback >= 0) return fallback;
    fail(path, "missing ", name, " ", tag.toString().c_str());
  }
  fail(path, "cannot read ", name, " ", tag.toString().c_str(), ": ", c.text());
}

std::string get_string(DcmItem* item, const DcmTagKey& tag) {
  OFString s;
  if (item->findAndGetOFString(tag, s).bad()) return {};
  return std::string(s.c_str());
}

// Reads a DS value into `out`; false when absent, empty or not a finite number.
bool get_ds(DcmItem* item, const DcmTagKey& tag, double* out) {
  Float64 v = 0;
  if (item->findAndGetFloat64(tag, v, 0).bad() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

// One item of a Modality or VOI LUT Sequence. `signed_input`: the first-mapped value is signed
// (PixelRepresentation 1) even when the descriptor was read as US (implicit VR files).
DicomLut read_lut(DcmItem* item, bool signed_input, const char* what, const std::string& path) {
  DcmElement* desc = nullptr;
  if (item->findAndGetElement(DCM_LUTDescriptor, desc).bad() || desc->getVM() != 3)
    fail(path, what, " has no LUTDescriptor with 3 values");
  long d[3];
  for (unsigned long i = 0; i < 3; ++i) {
    Uint16 u = 0;
    Sint16 s = 0;
    if (desc->getUint16(u, i).good())
      d[i] = u;
    else if (desc->getSint16(s, i).good())
      d[i] = s;
    else
      fail(path, what, " LUTDescriptor value ", i, " is not a number");
  }
  DicomLut lut;
  const long entries = d[0] == 0 ? 65536 : d[0];
  lut.first_mapped = (signed_input && d[1] >= 32768) ? d[1] - 65536 : d[1];
  lut.bits = static_cast<int>(d[2]);
  if (entries <= 0 || lut.bits < 1 || lut.bits > 16)
    fail(path, what, " LUTDescriptor ", d[0], "\\", d[1], "\\", d[2], " is invalid");
  DcmElement* data = nullptr;
  if (item->findAndGetElement(DCM_LUTData, data).bad()) fail(path, what, " has no LUTData");
  // US or OW data arrive as 16-bit words in host order; 8-bit entries may be packed two a word.
  const size_t n = static_cast<size_t>(entries), bytes = data->getLength();
  Uint16* words = nullptr;
  Uint8* packed = nullptr;
  const uint8_t* raw = data->getUint16Array(words).good() && words
                           ? reinterpret_cast<const uint8_t*>(words)
                           : (data->getUint8Array(packed).good() ? packed : nullptr);
  lut.data.resize(n);
  if (raw && bytes >= 2 * n) {
    std::memcpy(lut.data.data(), raw, 2 * n);
  } else if (raw && lut.bits <= 8 && bytes >= n) {
    std::copy(raw, raw + n, lut.data.begin());
  } else {
    fail(path, what, " LUTData holds ", bytes, " bytes, too few for ", entries, " entries");
  }
  return lut;
}

// Index of `x` into `lut`, clamped to its ends.
inline size_t lut_index(const DicomLut& lut, double x) {
  const double i = std::floor(x) - static_cast<double>(lut.first_mapped);
  const double last = static_cast<double>(lut.data.size() - 1);
  return static_cast<size_t>(std::clamp(i, 0.0, last));
}

// Sample access on the pixel data of one file, in file sample order.
struct SampleSource {
  const uint8_t* bytes = nullptr;  // host-order buffer from DCMTK
  size_t size = 0;
  int bits_allocated = 16;
  bool big_endian = false;  // native big endian transfer syntax
  bool ow = false;          // DCMTK swapped the buffer to host order in 16-bit words

  // Raw bits of sample `i` (not yet masked).
  uint64_t raw(size_t i) const {
    switch (bits_allocated) {
      case 1: {
        // Bits are packed little-bit-first in file bytes; undo DCMTK's word swap (pydicom reads
        // big endian 1-bit data from the file bytes as well).
        size_t byte = i / 8;
        if (big_endian && ow) byte ^= 1;
        return (bytes[byte] >> (i % 8)) & 1u;
      }
      case 8:
        // Big endian OW keeps 8-bit samples in 16-bit words; DCMTK's swap puts them in order.
        return bytes[i];
      case 16: {
        uint16_t v;
        std::memcpy(&v, bytes + 2 * i, 2);
        if (big_endian && !ow) v = static_cast<uint16_t>((v >> 8) | (v << 8));
        return v;
      }
      default: {  // 32
        uint32_t v;
        std::memcpy(&v, bytes + 4 * i, 4);
        if (big_endian && ow) {
          v = (v >> 16) | (v << 16);  // words are in host order, their order is not
        } else if (big_endian) {
          v = ((v & 0xFFu) << 24) | ((v & 0xFF00u) << 8) | ((v >> 8) & 0xFF00u) | (v >> 24);
        }
        return v;
      }
    }
  }
};

// Stored value from raw bits: HighBit/BitsStored mask, sign extension.
struct BitLayout {
  int shift = 0;  // HighBit + 1 - BitsStored
  uint64_t mask = 0;
  bool is_signed = false;
  int bits = 16;
  int64_t value(uint64_t raw) const {
    const uint64_t s = (raw >> shift) & mask;
    if (is_signed && (s >> (bits - 1)) & 1u) return static_cast<int64_t>(s) - (int64_t{1} << bits);
    return static_cast<int64_t>(s);
  }
};

// Calls f(i, stored value of sample base + i) for i in [0, n); the common layouts get a loop of
// their own so that the compiler can inline the sample access.
template <class F>
void for_each_stored(const SampleSource& src, const BitLayout& layout, uint64_t base, uint64_t n,
                     F&& f) {
  auto run = [&](auto raw) {
    for (uint64_t i = 0; i < n; ++i) f(i, layout.value(raw(base + i)));
  };
  if (src.bits_allocated == 16 && !(src.big_endian && !src.ow)) {
    run([&src](uint64_t i) {
      uint16_t v;
      std::memcpy(&v, src.bytes + 2 * i, 2);
      return static_cast<uint64_t>(v);
    });
  } else if (src.bits_allocated == 8) {
    run([&src](uint64_t i) { return static_cast<uint64_t>(src.bytes[i]); });
  } else {
    run([&src](uint64_t i) { return src.raw(i); });
  }
}

bool is_color_photometric(const std::string& pi) {
  return pi == "RGB" || pi == "YBR_FULL" || pi == "YBR_FULL_422";
}

// JPEG 2000 Part 1 (DCMTK has no decoder for it; evax decodes it with OpenJPEG).
bool is_jpeg2000(E_TransferSyntax xfer) {
  return xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000;
}

uint64_t read_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool starts_j2k(const uint8_t* p, size_t n) {
  static const uint8_t soc_siz[4] = {0xFF, 0x4F, 0xFF, 0x51};
  static const uint8_t jp2[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50,
                                  0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
  return (n >= 4 && std::memcmp(p, soc_siz, 4) == 0) || (n >= 12 && std::memcmp(p, jp2, 12) == 0);
}

// The bytes of one frame of encapsulated pixel data (PS3.5 A.4): its fragments, found through
// the Basic Offset Table, else one fragment per frame when the counts agree (as an Extended
// Offset Table requires), else the fragments that start a JPEG 2000 codestream (SOC SIZ) or JP2
// file. A Basic Offset Table whose offsets are not fragment starts is ignored.
std::vector<uint8_t> encapsulated_frame(DcmElement* pixel, int frame, int frames,
                                        const std::string& path) {
  auto* pd = dynamic_cast<DcmPixelData*>(pixel);
  if (!pd) fail(path, "pixel data (7fe0,0010) is not an encapsulated pixel data element");
  E_TransferSyntax rep = EXS_Unknown;
  const DcmRepresentationParameter* param = nullptr;
  pd->getOriginalRepresentationKey(rep, param);
  DcmPixelSequence* seq = nullptr;
  if (pd->getEncapsulatedRepresentation(rep, param, seq).bad() || !seq)
    fail(path, "encapsulated pixel data without a pixel sequence");
  const unsigned long items = seq->card();
  if (items < 2) fail(path, "encapsulated pixel data without fragments");

  struct Fragment {
    const uint8_t* data;
    size_t size;
    uint64_t offset;  // of its item tag, from the first fragment's item tag
  };
  std::vector<Fragment> frags;
  uint64_t at = 0;
  for (unsigned long i = 1; i < items; ++i) {
    DcmPixelItem* item = nullptr;
    Uint8* data = nullptr;
    if (seq->getItem(item, i).bad() || !item) fail(path, "cannot read pixel fragment ", i);
    const Uint32 len = item->getLength();
    if (len > 0 && (item->getUint8Array(data).bad() || !data))
      fail(path, "cannot read pixel fragment ", i);
    frags.push_back({data, len, at});
    at += 8 + static_cast<uint64_t>(len);
  }
  const size_t nf = frags.size();

  // The first fragment of every frame.
  std::vector<size_t> firsts;
  DcmPixelItem* bot = nullptr;
  Uint8* bot_data = nullptr;
  if (seq->getItem(bot, 0).good() && bot && bot->getLength() == 4 * static_cast<Uint32>(frames) &&
      bot->getUint8Array(bot_data).good() && bot_data) {
    size_t k = 0;
    for (int f = 0; f < frames; ++f) {
      const uint64_t off = read_le(bot_data + 4 * f, 4);
      while (k < nf && frags[k].offset < off) ++k;
      if (k == nf || frags[k].offset != off || (f == 0 && k != 0) ||
          (!firsts.empty() && k == firsts.back())) {
        firsts.clear();
        break;
      }
      firsts.push_back(k);
    }
  }
  if (firsts.empty()) {
    if (frames == 1) {
      firsts = {0};
    } else if (nf == static_cast<size_t>(frames)) {
      for (size_t k = 0; k < nf; ++k) firsts.push_back(k);
    } else if (nf > static_cast<size_t>(frames)) {
      for (size_t k = 0; k < nf; ++k)
        if (starts_j2k(frags[k].data, frags[k].size)) firsts.push_back(k);
      if (firsts.size() != static_cast<size_t>(frames) || firsts[0] != 0)
        fail(path, "cannot tell the ", nf, " pixel data fragments apart into ", frames,
             " frames: no usable offset table and ", firsts.size(),
             " fragments start a JPEG 2000 codestream");
    } else {
      fail(path, "pixel data holds ", nf, " fragment(s) for ", frames, " frames");
    }
  }
  const size_t a = firsts[static_cast<size_t>(frame)];
  const size_t b = static_cast<size_t>(frame) + 1 < firsts.size() ? firsts[frame + 1] : nf;
  size_t total = 0;
  for (size_t k = a; k < b; ++k) total += frags[k].size;
  std::vector<uint8_t> bytes;
  bytes.reserve(total);
  for (size_t k = a; k < b; ++k)
    if (frags[k].size) bytes.insert(bytes.end(), frags[k].data, frags[k].data + frags[k].size);
  return bytes;
}

}  // namespace

bool has_dicom_magic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char buf[132];
  if (!f.read(buf, sizeof buf)) return false;
  return std::memcmp(buf + 128, "DICM", 4) == 0;
}

DicomPixels dicom_read(const std::string& path, const DicomOptions& options) {
  if (options.frame < 0) raise<ConfigError>("DICOM frame must be >= 0, got ", options.frame);
  register_codecs();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(path, std::filesystem::exists(path, ec) ? "not a regular file" : "no such file");
  if (std::filesystem::file_size(path, ec) == 0) fail(path, "file is empty");

  DcmFileFormat file;
  const OFCondition loaded =
      file.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
  DicomPixels out;
  // The transfer syntax the meta header names; DCMTK falls back to guessing when it does not
  // know it, so an unknown UID must be reported as such, before any parse error it caused.
  const std::string meta_ts = get_string(file.getMetaInfo(), DCM_TransferSyntaxUID);
  if (!meta_ts.empty() && DcmXfer(meta_ts.c_str()).getXfer() == EXS_Unknown)
    fail(path, "unsupported transfer syntax ", meta_ts, " (unknown to DCMTK)");
  if (loaded.bad()) fail(path, "not a readable DICOM file: ", loaded.text());

  DcmDataset* ds = file.getDataset();
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  const DcmXfer xf(xfer);
  out.transfer_syntax_uid = meta_ts.empty() ? std::string(xf.getXferID()) : meta_ts;
  out.transfer_syntax_name = xf.getXferName();

  DcmElement* pixel = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, pixel).bad()) {
    if (ds->tagExists(DCM_FloatPixelData) || ds->tagExists(DCM_DoubleFloatPixelData))
      fail(path, "float pixel data is not supported");
    fail(path, "no pixel data (7fe0,0010)");
  }

  const bool j2k = is_jpeg2000(xfer);
  if ((xf.isEncapsulated() && !j2k &&
       !DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit)) ||
      xfer == EXS_PrivateGE_LEI_WithBigEndianPixelData)
    fail(path, "unsupported transfer syntax ", out.transfer_syntax_uid, " (",
         out.transfer_syntax_name, ")");

  out.rows = get_us(ds, DCM_Rows, "Rows", path);
  out.cols = get_us(ds, DCM_Columns, "Columns", path);
  out.samples_per_pixel = get_us(ds, DCM_SamplesPerPixel, "SamplesPerPixel", path, 1);
  out.bits_allocated = get_us(ds, DCM_BitsAllocated, "BitsAllocated", path);
  out.bits_stored = get_us(ds, DCM_BitsStored, "BitsStored", path, out.bits_allocated);
  out.high_bit = get_us(ds, DCM_HighBit, "HighBit", path, out.bits_stored - 1);
  const int representation = get_us(ds, DCM_PixelRepresentation, "PixelRepresentation", path, 0);
  out.is_signed = representation == 1;
  out.photometric = get_string(ds, DCM_PhotometricInterpretation);
  {
    // Parsed here: DCMTK reads "1A" as 1, and a wrong frame count misplaces every frame.
    const std::string s = get_string(ds, DCM_NumberOfFrames);
    const size_t a = s.find_first_not_of(' '), b = s.find_last_not_of(' ');
    if (a != std::string::npos) {
      const std::string digits = s.substr(a, b - a + 1);
      if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos)
        fail(path, "NumberOfFrames '", s, "' is not a frame count");
      const int n = std::stoi(digits);
      out.frames = n > 0 ? n : 1;  // 0 is seen in the wild for single frames
    }
  }
  if (out.rows == 0 || out.cols == 0) fail(path, "empty image (", out.rows, "x", out.cols, ")");
  if (out.bits_allocated != 1 && out.bits_allocated != 8 && out.bits_allocated != 16 &&
      out.bits_allocated != 32)
    fail(path, "unsupported BitsAllocated ", out.bits_allocated);
  if (out.bits_stored < 1 || out.bits_stored > out.bits_allocated)
    fail(path, "BitsStored ", out.bits_stored, " outside [1, BitsAllocated ", out.bits_allocated,
         "]");
  if (out.high_bit < out.bits_stored - 1 || out.high_bit >= out.bits_allocated)
    fail(path, "HighBit ", out.high_bit, " inconsistent with BitsStored ", out.bits_stored,
         " and BitsAllocated ", out.bits_allocated);
  if (representation > 1) fail(path, "PixelRepresentation ", representation, " is not 0 or 1");
  if (out.photometric.empty()) fail(path, "missing PhotometricInterpretation (0028,0004)");
  if (out.samples_per_pixel != 1 && out.samples_per_pixel != 3)
    fail(path, "unsupported SamplesPerPixel ", out.samples_per_pixel);
  const bool mono = out.photometric == "MONOCHROME1" || out.photometric == "MONOCHROME2";
  if (out.samples_per_pixel == 1 && !mono)
    fail(path, "unsupported photometric interpretation ", out.photometric,
         " with 1 sample per pixel");
  if (out.samples_per_pixel == 3) {
    if (options.color == ColorPolicy::kReject)
      fail(path, "colour image (", out.photometric, ") rejected by the colour policy");
    // YBR_ICT/YBR_RCT: the JPEG 2000 decoder inverts the colour transform, giving RGB.
    if (!is_color_photometric(out.photometric) &&
        !(j2k && (out.photometric == "YBR_ICT" || out.photometric == "YBR_RCT")))
      fail(path, "unsupported photometric interpretation ", out.photometric);
    if (out.bits_allocated == 1) fail(path, "colour image with BitsAllocated 1");
  }
  if (options.frame >= out.frames)
    fail(path, "frame ", options.frame, " requested but the file has ", out.frames, " frame(s)");
  out.frame = options.frame;

  // JPEG 2000: the requested frame only, decoded by OpenJPEG into stored values.
  std::string photometric = out.photometric;  // what the decoded samples are
  std::vector<int32_t> decoded;               // JPEG 2000 samples, colour-by-pixel
  if (j2k) {
    const std::vector<uint8_t> bytes = encapsulated_frame(pixel, out.frame, out.frames, path);
    J2kImage img;
    try {
      img = j2k_decode(bytes.data(), bytes.size(),
                       J2kExpect{out.cols, out.rows, out.samples_per_pixel});
    } catch (const DataError& e) {
      fail(path, "frame ", out.frame, ": ", e.what());
    }
    if (img.precision > out.bits_allocated)
      fail(path, "frame ", out.frame, ": JPEG 2000 precision ", img.precision,
           " exceeds BitsAllocated ", out.bits_allocated);
    // The codestream's precision and signedness describe its samples. When the signedness
    // differs from PixelRepresentation, the low `precision` bits are read as the data set says
    // (pydicom's J2K sign correction); otherwise the values are used as decoded, even when the
    // precision exceeds BitsStored (pydicom does not mask them either).
    if (img.is_signed != out.is_signed) {
      const int b = img.precision;
      const int64_t mask = (int64_t{1} << b) - 1;
      for (int32_t& v : img.samples) {
        int64_t u = static_cast<int64_t>(v) & mask;
        if (out.is_signed && ((u >> (b - 1)) & 1)) u -= int64_t{1} << b;
        v = static_cast<int32_t>(u);
      }
    }
    decoded = std::move(img.samples);
    if (photometric == "YBR_ICT" || photometric == "YBR_RCT") photometric = "RGB";
  } else if (xf.isEncapsulated()) {
    // Other compressed pixel data: DCMTK decodes all frames to native little endian.
    const OFCondition c = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    if (c.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
      fail(path, "cannot decode ", out.transfer_syntax_name, " pixel data: ",
           c.bad() ? c.text() : "decoder gave no uncompressed data");
    if (ds->findAndGetElement(DCM_PixelData, pixel).bad()) fail(path, "pixel data lost");
    // The JPEG decoder converts YBR to RGB and says so here.
    photometric = get_string(ds, DCM_PhotometricInterpretation);
    if (out.samples_per_pixel == 3 && !is_color_photometric(photometric))
      fail(path, "decoder produced unsupported photometric interpretation ", photometric);
  }
  // Decoded JPEG 2000 samples are colour-by-pixel whatever PlanarConfiguration says.
  const int planar = out.samples_per_pixel == 3 && !j2k
                         ? get_us(ds, DCM_PlanarConfiguration, "PlanarConfiguration", path, 0)
                         : 0;
  if (planar > 1) fail(path, "PlanarConfiguration ", planar, " is not 0 or 1");

  // The buffer, in host order (DCMTK swaps OW data on access); SampleSource assumes that
  // order is little endian.
  EVAX_ASSERT(gLocalByteOrder == EBO_LittleEndian, "big endian hosts are not supported");
  SampleSource src;
  src.bits_allocated = out.bits_allocated;
  src.big_endian = !xf.isEncapsulated() && xf.isBigEndian();
  if (!j2k) {
    Uint16* words = nullptr;
    Uint8* bytes = nullptr;
    if (pixel->getVR() == EVR_OW && pixel->getUint16Array(words).good() && words) {
      src.bytes = reinterpret_cast<const uint8_t*>(words);
      src.ow = true;
    } else if (pixel->getUint8Array(bytes).good() && bytes) {
      src.bytes = bytes;
    } else if (pixel->getLength() > 0) {
      fail(path, "cannot access the pixel data (", DcmVR(pixel->getVR()).getVRName(), " element)");
    }
    src.size = src.bytes ? pixel->getLength() : 0;
  }
  if (!j2k && pixel->getLength() == DCM_UndefinedLength)
    fail(path, "pixel data still encapsulated");

  // 4:2:2 data keeps two luminance samples and one Cb/Cr pair per two pixels.
  const bool subsampled = photometric == "YBR_FULL_422" && !xf.isEncapsulated();
  if (subsampled && planar != 0) fail(path, "YBR_FULL_422 with PlanarConfiguration 1");
  const uint64_t pixels = static_cast<uint64_t>(out.rows) * static_cast<uint64_t>(out.cols);
  const uint64_t frame_samples =
      subsampled ? 2 * pixels : pixels * static_cast<uint64_t>(out.samples_per_pixel);
  const uint64_t total_bits =
      frame_samples * static_cast<uint64_t>(out.frames) * static_cast<uint64_t>(out.bits_allocated);
  const uint64_t needed = (total_bits + 7) / 8;
  if (!j2k && src.size < needed)
    fail(path, "pixel data holds ", src.size, " bytes, ", needed, " expected for ", out.frames,
         " frame(s) of ", out.rows, "x", out.cols, "x", out.samples_per_pixel, " at ",
         out.bits_allocated, " bits");

  BitLayout layout;
  layout.bits = out.bits_stored;
  layout.shift = out.high_bit + 1 - out.bits_stored;
  layout.mask = out.bits_stored >= 64 ? ~uint64_t{0} : (uint64_t{1} << out.bits_stored) - 1;
  layout.is_signed = out.is_signed;
  const double s_min = out.is_signed ? -std::ldexp(1.0, out.bits_stored - 1) : 0.0;
  const double s_max = out.is_signed ? std::ldexp(1.0, out.bits_stored - 1) - 1
                                     : std::ldexp(1.0, out.bits_stored) - 1;

  // VOI attributes: always recorded; a malformed VOI LUT only matters when it would be used.
  {
    double c = 0, w = 0;
    if (get_ds(ds, DCM_WindowCenter, &c) && get_ds(ds, DCM_WindowWidth, &w) && w > 0) {
      out.has_window = true;
      out.window_center = c;
      out.window_width = w;
      const std::string fn = get_string(ds, DCM_VOILUTFunction);
      if (fn == "LINEAR_EXACT" || fn == "SIGMOID") out.voi_function = fn;
    }
    DcmItem* voi = nullptr;
    if (ds->findAndGetSequenceItem(DCM_VOILUTSequence, voi, 0).good() && voi) {
      try {
        out.voi_lut = read_lut(voi, out.is_signed, "VOI LUT Sequence", path);
        out.has_voi_lut = true;
      } catch (const DataError&) {
        if (options.apply_voi) throw;
      }
    }
  }

  out.image.create(out.rows, out.cols, CV_32F);
  float* dst = out.image.ptr<float>();
  const uint64_t base = frame_samples * static_cast<uint64_t>(out.frame);
  // Stored value of sample k of the frame, and f(i, stored value of pixel i) over a grayscale
  // frame: from the native buffer, or from the JPEG 2000 decode.
  auto sample = [&](uint64_t k) -> int64_t {
    return j2k ? decoded[k] : layout.value(src.raw(base + k));
  };
  auto each_stored = [&](auto&& f) {
    if (j2k) {
      for (uint64_t i = 0; i < pixels; ++i) f(i, static_cast<int64_t>(decoded[i]));
    } else {
      for_each_stored(src, layout, base, pixels, f);
    }
  };

  if (out.samples_per_pixel == 3) {
    out.is_color = true;
    out.lo = out.is_signed ? s_min : 0.0;
    out.hi = s_max;
    const bool ybr = photometric != "RGB";  // YBR: the Y sample is the luminance
    for (uint64_t i = 0; i < pixels; ++i) {
      uint64_t at[3] = {0, 0, 0};
      if (subsampled) {
        at[0] = (i / 2) * 4 + (i % 2);
      } else {
        for (uint64_t k = 0; k < 3; ++k) at[k] = planar ? k * pixels + i : 3 * i + k;
      }
      double y;
      if (ybr) {
        y = static_cast<double>(sample(at[0]));
      } else {
        y = 0.299 * static_cast<double>(sample(at[0])) +
            0.587 * static_cast<double>(sample(at[1])) +
            0.114 * static_cast<double>(sample(at[2]));
      }
      dst[i] = static_cast<float>(y);
    }
    return out;
  }

  // Modality LUT: a LUT sequence first (as pydicom), else rescale when both values are present.
  DcmItem* mlut = nullptr;
  if (ds->findAndGetSequenceItem(DCM_ModalityLUTSequence, mlut, 0).good() && mlut) {
    out.modality_lut = read_lut(mlut, out.is_signed, "Modality LUT Sequence", path);
    out.has_modality_lut = true;
  } else if (ds->tagExists(DCM_RescaleSlope) && ds->tagExists(DCM_RescaleIntercept)) {
    if (!get_ds(ds, DCM_RescaleSlope, &out.slope) ||
        !get_ds(ds, DCM_RescaleIntercept, &out.intercept))
      fail(path, "RescaleSlope/RescaleIntercept '", get_string(ds, DCM_RescaleSlope), "'/'",
           get_string(ds, DCM_RescaleIntercept), "' are not numbers");
    if (out.slope == 0.0) fail(path, "RescaleSlope is 0");
    out.has_rescale = true;
  }

  if (out.has_modality_lut) {
    const DicomLut& lut = out.modality_lut;
    const size_t a = lut_index(lut, s_min), b = lut_index(lut, s_max);
    const auto [mn, mx] = std::minmax_element(lut.data.begin() + a, lut.data.begin() + b + 1);
    out.lo = *mn;
    out.hi = *mx;
    each_stored([&](uint64_t i, int64_t s) {
      dst[i] = lut.data[lut_index(lut, static_cast<double>(s))];
    });
  } else {
    const double m = out.slope, q = out.intercept;
    out.lo = std::min(m * s_min + q, m * s_max + q);
    out.hi = std::max(m * s_min + q, m * s_max + q);
    each_stored([&](uint64_t i, int64_t s) {
      dst[i] = static_cast<float>(m * static_cast<double>(s) + q);
    });
  }
  if (!(out.hi > out.lo))
    fail(path, "the Modality LUT maps every stored value to ", out.lo, " (no contrast)");

  if (out.photometric == "MONOCHROME1") {
    out.inverted = true;
    const double sum = out.lo + out.hi;
    for (uint64_t i = 0; i < pixels; ++i) dst[i] = static_cast<float>(sum - dst[i]);
  }
  return out;
}

cv::Mat dicom_to_unit(const DicomPixels& p, bool use_voi) {
  EVAX_ASSERT(p.image.type() == CV_32F && p.hi > p.lo, "not a dicom_read result");
  cv::Mat out(p.image.size(), CV_32F);
  const size_t n = p.image.total();
  const float* src = p.image.ptr<float>();
  float* dst = out.ptr<float>();
  const bool voi = use_voi && !p.is_color && (p.has_voi_lut || p.has_window);
  if (!voi) {
    const float scale = static_cast<float>(1.0 / (p.hi - p.lo));
    const float offset = static_cast<float>(-p.lo / (p.hi - p.lo));
    for (size_t i = 0; i < n; ++i)  // the clamp only catches float rounding
      dst[i] = std::min(std::max(src[i] * scale + offset, 0.0f), 1.0f);
    return out;
  }
  // The VOI transform takes the modality value as stored, before our MONOCHROME1 inversion.
  const double sum = p.lo + p.hi;
  const double c = p.window_center, w = p.window_width;
  const double lut_max = std::ldexp(1.0, p.voi_lut.bits) - 1;
  for (size_t i = 0; i < n; ++i) {
    const double x = p.inverted ? sum - src[i] : src[i];
    double y;
    if (p.has_voi_lut) {
      y = std::min(1.0, p.voi_lut.data[lut_index(p.voi_lut, x)] / lut_max);
    } else if (p.voi_function == "SIGMOID") {
      y = 1.0 / (1.0 + std::exp(-4.0 * (x - c) / w));
    } else if (p.voi_function == "LINEAR_EXACT") {
      y = std::clamp((x - c) / w + 0.5, 0.0, 1.0);
    } else if (w > 1.0) {
      y = std::clamp((x - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0);
    } else {
      y = x > c - 0.5 ? 1.0 : 0.0;  // the LINEAR formula's limit for a width of 1 or less
    }
    dst[i] = static_cast<float>(p.inverted ? 1.0 - y : y);
  }
  return out;
}

}  // namespace evax
