#include "evax/io/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "evax/core/error.h"
#include "evax/core/files.h"

namespace evax {
namespace {

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

void put_varint(std::string* s, uint64_t v) {
  while (v >= 0x80) {
    s->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s->push_back(static_cast<char>(v));
}

void put_fixed(std::string* s, const void* p, size_t n) { s->append(static_cast<const char*>(p), n); }

void put_bytes(std::string* s, int field, const std::string& bytes) {
  put_varint(s, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(s, bytes.size());
  s->append(bytes);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string event(double wall_time, int64_t step, const std::string* file_version,
                  const std::string* summary) {
  std::string e;
  put_varint(&e, (1 << 3) | 1);  // wall_time: double
  put_fixed(&e, &wall_time, 8);
  put_varint(&e, (2 << 3) | 0);  // step: int64
  put_varint(&e, static_cast<uint64_t>(step));
  if (file_version) put_bytes(&e, 3, *file_version);
  if (summary) put_bytes(&e, 5, *summary);
  return e;
}

// Minimal protobuf reader for the fields written above.
struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
      uint8_t b = *p++;
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  bool skip(int wire) {
    uint64_t n = 0;
    switch (wire) {
      case 0: return varint(&n);
      case 1: if (end - p < 8) return false; p += 8; return true;
      case 5: if (end - p < 4) return false; p += 4; return true;
      case 2: if (!varint(&n) || static_cast<uint64_t>(end - p) < n) return false; p += n; return true;
      default: return false;
    }
  }
};

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* b = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) raise<DataError>("cannot create TensorBoard folder '", dir, "': ", ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  path_ = dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(now_s())) + "." +
          host + ".evax";
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) raise<DataError>("cannot write TensorBoard file '", path_, "'");
  const std::string version = "brain.Event:2";
  record(event(now_s(), 0, &version, nullptr));
  flush();
}

void TensorBoardWriter::record(const std::string& payload) {
  const uint64_t len = payload.size();
  const uint32_t len_crc = masked(crc32c(&len, 8));
  const uint32_t data_crc = masked(crc32c(payload.data(), payload.size()));
  out_.write(reinterpret_cast<const char*>(&len), 8);
  out_.write(reinterpret_cast<const char*>(&len_crc), 4);
  out_.write(payload.data(), static_cast<std::streamsize>(payload.size()));
  out_.write(reinterpret_cast<const char*>(&data_crc), 4);
}

void TensorBoardWriter::scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  std::string val;
  put_bytes(&val, 1, tag);
  const float f = static_cast<float>(value);
  put_varint(&val, (2 << 3) | 5);  // simple_value: float
  put_fixed(&val, &f, 4);
  std::string summary;
  put_bytes(&summary, 1, val);
  record(event(wall_time >= 0 ? wall_time : now_s(), step, nullptr, &summary));
}

void TensorBoardWriter::flush() {
  out_.flush();
  if (!out_) raise<DataError>("cannot write TensorBoard file '", path_, "'");
}

std::vector<TensorBoardScalar> tensorboard_read_scalars(const std::string& path) {
  const std::string data = read_file(path);
  std::vector<TensorBoardScalar> out;
  size_t off = 0;
  auto bad = [&](const char* what) { raise<DataError>("TensorBoard file '", path, "': ", what, " at byte ", off); };
  while (off < data.size()) {
    if (data.size() - off < 12) bad("truncated record header");
    uint64_t len;
    uint32_t len_crc;
    std::memcpy(&len, data.data() + off, 8);
    std::memcpy(&len_crc, data.data() + off + 8, 4);
    if (masked(crc32c(&len, 8)) != len_crc) bad("length CRC mismatch");
    if (data.size() - off - 12 < len + 4) bad("truncated record");
    const char* payload = data.data() + off + 12;
    uint32_t data_crc;
    std::memcpy(&data_crc, payload + len, 4);
    if (masked(crc32c(payload, len)) != data_crc) bad("data CRC mismatch");
    Reader ev{reinterpret_cast<const uint8_t*>(payload), reinterpret_cast<const uint8_t*>(payload) + len};
    int64_t step = 0;
    std::vector<std::pair<std::string, double>> values;
    while (ev.p < ev.end) {
      uint64_t key;
      if (!ev.varint(&key)) bad("bad event");
      const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
      if (field == 2 && wire == 0) {
        uint64_t s;
        if (!ev.varint(&s)) bad("bad step");
        step = static_cast<int64_t>(s);
      } else if (field == 5 && wire == 2) {
        uint64_t n;
        if (!ev.varint(&n) || static_cast<uint64_t>(ev.end - ev.p) < n) bad("bad summary");
        Reader sum{ev.p, ev.p + n};
        ev.p += n;
        while (sum.p < sum.end) {
          uint64_t k, m;
          if (!sum.varint(&k) || (k >> 3) != 1 || (k & 7) != 2 || !sum.varint(&m) ||
              static_cast<uint64_t>(sum.end - sum.p) < m)
            bad("bad summary value");
          Reader v{sum.p, sum.p + m};
          sum.p += m;
          std::string tag;
          double value = 0;
          while (v.p < v.end) {
            uint64_t vk;
            if (!v.varint(&vk)) bad("bad value");
            if ((vk >> 3) == 1 && (vk & 7) == 2) {
              uint64_t tl;
              if (!v.varint(&tl) || static_cast<uint64_t>(v.end - v.p) < tl) bad("bad tag");
              tag.assign(reinterpret_cast<const char*>(v.p), tl);
              v.p += tl;
            } else if ((vk >> 3) == 2 && (vk & 7) == 5) {
              if (v.end - v.p < 4) bad("bad simple_value");
              float f;
              std::memcpy(&f, v.p, 4);
              v.p += 4;
              value = f;
            } else if (!v.skip(static_cast<int>(vk & 7))) {
              bad("bad value field");
            }
          }
          values.emplace_back(tag, value);
        }
      } else if (!ev.skip(wire)) {
        bad("bad event field");
      }
    }
    for (auto& [tag, value] : values) out.push_back({tag, value, step});
    off += 12 + len + 4;
  }
  return out;
}

}  // namespace evax
