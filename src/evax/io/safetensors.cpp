#include "evax/io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "evax/core/error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies it verbatim"
#endif

namespace evax {
namespace {

// The safetensors library refuses larger headers; so do we (a bound on what a bad file costs).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Real headers nest three levels; a bound keeps hostile nesting cheap.
constexpr int kMaxJsonDepth = 16;

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  int rank;  // the safetensors writer orders tensors by this rank (descending), then by name
};

// Ranks follow the declaration order of the Rust library's Dtype enum.
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", at::kBool, 0}, {"U8", at::kByte, 1},   {"I8", at::kChar, 2},
    {"I16", at::kShort, 3}, {"F16", at::kHalf, 4},  {"BF16", at::kBFloat16, 5},
    {"I32", at::kInt, 6},   {"F32", at::kFloat, 7}, {"F64", at::kDouble, 8},
    {"I64", at::kLong, 9},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

// Tensor names come from the file: control characters are escaped to keep messages one line.
[[noreturn]] void fail(const std::string& path, const std::string& what) {
  std::string line;
  for (char c : what) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      line += str_cat("\\x", std::hex, (static_cast<unsigned char>(c) >> 4),
                      (static_cast<unsigned char>(c) & 15));
    else
      line += c;
  }
  raise<DataError>("safetensors '", path, "': ", line);
}

/// A read-only file descriptor with positional reads.
class InFile {
 public:
  explicit InFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) raise<DataError>("cannot open '", path, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      raise<DataError>("'", path, "' is not a regular file");
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  InFile(const InFile&) = delete;
  InFile& operator=(const InFile&) = delete;
  ~InFile() { ::close(fd_); }

  uint64_t size() const { return size_; }

  void read_at(uint64_t offset, void* dst, uint64_t n) const {
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
      ssize_t got = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail(path_, str_cat("read error: ", std::strerror(errno)));
      if (got == 0) fail(path_, "file shrank while reading");
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

/// Nesting depth of a JSON text (outside strings), so hostile nesting never reaches the parser.
int json_depth(const std::string& text) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& v) {
  Entry e;
  e.name = name;
  const std::string where = "tensor '" + name + "': ";
  if (!v.is_object()) fail(path, where + "header entry is not an object");
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) fail(path, where + "missing or non-string \"dtype\"");
  e.dtype = dtype_by_name(dt->get<std::string>());
  if (!e.dtype) fail(path, where + "unsupported dtype '" + dt->get<std::string>() + "'");

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) fail(path, where + "missing or non-array \"shape\"");
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned() ||
        d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(path, where + "shape entries must be non-negative integers");
    uint64_t dim = d.get<uint64_t>();
    if (__builtin_mul_overflow(numel, dim, &numel)) fail(path, where + "shape overflows");
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(at::elementSize(e.dtype->type)), &nbytes))
    fail(path, where + "shape overflows");

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    fail(path, where + "\"data_offsets\" must be two non-negative integers");
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.end < e.begin) fail(path, where + "data_offsets end before they begin");
  if (e.end - e.begin != nbytes)
    fail(path, str_cat(where, "data_offsets span ", e.end - e.begin,
                       " bytes but dtype and shape need ", nbytes));
  return e;
}

/// Writes to `<path>.tmp.<pid>` and renames it over `path` on commit(); removes it otherwise.
class AtomicOutFile {
 public:
  explicit AtomicOutFile(const std::string& path)
      : path_(path), tmp_(str_cat(path, ".tmp.", ::getpid(), ".", counter_++)) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) raise<DataError>("cannot write '", tmp_, "': ", std::strerror(errno));
  }
  AtomicOutFile(const AtomicOutFile&) = delete;
  AtomicOutFile& operator=(const AtomicOutFile&) = delete;
  ~AtomicOutFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) raise<DataError>("cannot write '", tmp_, "': ", std::strerror(errno));
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  void commit() {
    int rc = ::fsync(fd_);
    int rc2 = ::close(fd_);
    fd_ = -1;
    if (rc != 0 || rc2 != 0) raise<DataError>("cannot flush '", tmp_, "': ", std::strerror(errno));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      raise<DataError>("cannot rename '", tmp_, "' to '", path_, "': ", std::strerror(errno));
    committed_ = true;
    // Persist the rename itself.
    std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    int dfd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  static inline std::atomic<uint64_t> counter_{0};  // distinct names for concurrent saves
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

std::string json_string(const std::string& path, const std::string& s) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    raise<DataError>("safetensors '", path, "': name or metadata '", s, "' is not valid UTF-8");
  }
}

}  // namespace

TensorMap safetensors_load(const std::string& path, std::map<std::string, std::string>* metadata) {
  InFile file(path);
  const uint64_t size = file.size();
  if (size < 8) fail(path, str_cat("file of ", size, " bytes is too short for a header"));
  unsigned char len_bytes[8];
  file.read_at(0, len_bytes, 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > size - 8)
    fail(path, str_cat("header length ", header_len, " exceeds the file size ", size));
  if (header_len > kMaxHeaderBytes)
    fail(path, str_cat("header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes));

  std::string header(header_len, '\0');
  file.read_at(8, header.data(), header_len);
  if (header.empty() || header[0] != '{') fail(path, "header is not a JSON object");
  if (json_depth(header) > kMaxJsonDepth) fail(path, "header JSON is nested too deeply");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  } catch (const nlohmann::json::exception&) {
    j = nlohmann::json::value_t::discarded;
  }
  if (j.is_discarded() || !j.is_object()) fail(path, "header is not valid JSON");

  std::vector<Entry> entries;
  if (metadata) metadata->clear();
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail(path, "__metadata__ value of '" + mk + "' is not a string");
        if (metadata) (*metadata)[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, value));
  }

  // Tensors must tile the data section exactly: no overlaps, no gaps, nothing left over.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  uint64_t expected = 0;
  for (const auto& e : entries) {
    if (e.begin < expected) fail(path, "tensor '" + e.name + "' overlaps the previous tensor");
    if (e.begin > expected) fail(path, "gap in the data section before tensor '" + e.name + "'");
    expected = e.end;
  }
  if (expected != data_size)
    fail(path, str_cat("data section holds ", data_size, " bytes but the tensors cover ", expected,
                       entries.empty() ? "" : " (truncated or padded file)"));

  TensorMap out;
  out.reserve(entries.size());
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype->type));
    if (e.end > e.begin) file.read_at(data_start + e.begin, t.data_ptr(), e.end - e.begin);
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

void safetensors_save(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Item {
    const std::string* name;
    const at::Tensor* tensor;
    const DtypeInfo* dtype;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    EVAX_ASSERT(t.defined(), "tensor '", name, "' is undefined");
    EVAX_ASSERT(t.layout() == at::kStrided, "tensor '", name, "' is not dense");
    EVAX_ASSERT(name != "__metadata__", "'__metadata__' is reserved");
    const DtypeInfo* d = dtype_by_type(t.scalar_type());
    EVAX_CHECK(DataError, d != nullptr, "safetensors '", path, "': tensor '", name, "' has dtype ",
               t.scalar_type(), ", which safetensors_save does not write");
    items.push_back({&name, &t, d});
  }
  // The Python library's order: larger dtypes first, then by name.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.dtype->rank != b.dtype->rank ? a.dtype->rank > b.dtype->rank : *a.name < *b.name;
  });
  {
    std::vector<const std::string*> names;
    for (const auto& it : items) names.push_back(it.name);
    std::sort(names.begin(), names.end(),
              [](const std::string* a, const std::string* b) { return *a < *b; });
    for (size_t i = 1; i < names.size(); ++i)
      EVAX_ASSERT(*names[i - 1] != *names[i], "duplicate tensor name '", *names[i], "'");
  }

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ",";
      first = false;
      header += json_string(path, k) + ":" + json_string(path, v);
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& it : items) {
    if (header.size() > 1) header += ",";
    header += json_string(path, *it.name) + ":{\"dtype\":\"" + it.dtype->name + "\",\"shape\":[";
    for (int64_t d = 0; d < it.tensor->dim(); ++d)
      header += (d ? "," : "") + std::to_string(it.tensor->size(d));
    const uint64_t nbytes = static_cast<uint64_t>(it.tensor->numel()) * it.tensor->element_size();
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned

  AtomicOutFile out(path);
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  out.write(len_bytes, 8);
  out.write(header.data(), header.size());
  for (const auto& it : items) {
    // One tensor at a time, so a large model is never copied whole.
    at::Tensor t = it.tensor->detach().to(at::kCPU).contiguous();
    if (t.numel() > 0) out.write(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  out.commit();
}

}  // namespace evax
