// safetensors: C++ round trips, files checked by the Python reference library, malformed headers.
#include "evax/io/safetensors.h"

#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "test_util.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

/// Tensors of every supported dtype; tools-side twin in kPythonCheck below.
evax::TensorMap sample_tensors() {
  return {
      {"w.f32", at::arange(12, at::kFloat).reshape({3, 4}) * 0.25},
      {"w.f16", (at::arange(10, at::kFloat) * 0.5 - 2).to(at::kHalf)},
      {"w.bf16", (at::arange(6, at::kFloat) - 2.5).to(at::kBFloat16)},
      {"f64", at::arange(3, at::kDouble) / 8},
      {"i64", at::arange(-3, 3, at::kLong)},
      {"i32", at::arange(4, at::kInt) * 1000},
      {"i16", at::arange(-2, 2, at::kShort)},
      {"i8", at::arange(-4, 4, at::kChar)},
      {"u8", at::arange(0, 256, 51, at::kByte)},
      {"mask", at::arange(5, at::kLong).remainder(2).eq(0)},
      {"scalar", at::scalar_tensor(1.25, at::kFloat)},
      {"empty", at::zeros({0, 4}, at::kFloat)},
      {"transposed", at::arange(6, at::kFloat).reshape({2, 3}).t()},  // saved contiguous
  };
}

const char* kPythonCheck = R"(
import sys, torch
from safetensors import safe_open
from safetensors.torch import load_file, save
path = sys.argv[1]
d = load_file(path)
with safe_open(path, "pt") as f:
    meta = f.metadata()
want = {
    "w.f32": torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25,
    "w.f16": (torch.arange(10, dtype=torch.float32) * 0.5 - 2).half(),
    "w.bf16": (torch.arange(6, dtype=torch.float32) - 2.5).bfloat16(),
    "f64": torch.arange(3, dtype=torch.float64) / 8,
    "i64": torch.arange(-3, 3),
    "i32": torch.arange(4, dtype=torch.int32) * 1000,
    "i16": torch.arange(-2, 2, dtype=torch.int16),
    "i8": torch.arange(-4, 4, dtype=torch.int8),
    "u8": torch.arange(0, 256, 51, dtype=torch.uint8),
    "mask": torch.arange(5) % 2 == 0,
    "scalar": torch.tensor(1.25),
    "empty": torch.zeros(0, 4),
    "transposed": torch.arange(6, dtype=torch.float32).reshape(2, 3).t().contiguous(),
}
assert set(d) == set(want), sorted(d)
for k, v in want.items():
    assert d[k].dtype == v.dtype and d[k].shape == v.shape and torch.equal(d[k], v), k
assert meta == {"note": "quote \" backslash \\ \u00e9 new\nline \x01"}, meta
assert open(path, "rb").read() == save(d, metadata=meta), "not byte-identical"
)";

int run_python(const evax::test::TempDir& tmp, const std::string& script, const std::string& arg,
               std::string* log) {
  const std::string py = tmp / "check.py";
  evax::write_file_atomic(py, script);
  const std::string out = tmp / "python.log";
  const std::string cmd = std::string(EVAX_PYTHON) + " " + py + " '" + arg + "' > " + out + " 2>&1";
  int rc = std::system(cmd.c_str());
  *log = evax::read_file(out);
  return rc;
}

void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  std::ofstream(path, std::ios::binary) << len << header << std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("safetensors: C++ save then C++ load gives the same tensors and metadata") {
  evax::test::TempDir tmp("st_roundtrip");
  const std::string path = tmp / "a.safetensors";
  const evax::TensorMap in = sample_tensors();
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"epoch", "3"}};
  evax::safetensors_save(path, in, meta);
  std::map<std::string, std::string> meta_out;
  evax::TensorMap out = evax::safetensors_load(path, &meta_out);
  CHECK(meta_out == meta);
  REQUIRE(out.size() == in.size());
  for (const auto& [name, t] : in) {
    INFO("tensor " << name);
    const at::Tensor* o = evax::find(out, name);
    REQUIRE(o != nullptr);
    CHECK(o->scalar_type() == t.scalar_type());
    CHECK(o->sizes() == t.sizes());
    CHECK(o->is_contiguous());
    CHECK(at::equal(*o, t.contiguous()));
  }
  // File order: larger dtypes first, then by name (the Python library's order).
  CHECK(out.front().first == "i64");
  CHECK(out.back().first == "mask");

  // Saving again replaces the file atomically and leaves no temporary behind.
  evax::safetensors_save(path, {{"only", at::ones({2})}});
  CHECK(evax::safetensors_load(path).size() == 1);
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp.str())) (void)e, ++files;
  CHECK(files == 1);
}

TEST_CASE("safetensors: files written here load in Python, byte-identical to its writer") {
  evax::test::TempDir tmp("st_python");
  const std::string path = tmp / "cpp.safetensors";
  evax::safetensors_save(path, sample_tensors(),
                         {{"note", "quote \" backslash \\ \xc3\xa9 new\nline \x01"}});
  std::string log;
  int rc = run_python(tmp, kPythonCheck, path, &log);
  INFO(log);
  CHECK(rc == 0);
}

TEST_CASE("safetensors: bad calls and malformed files throw") {
  evax::test::TempDir tmp("st_bad");
  CHECK_THROWS_AS(evax::safetensors_save(tmp / "no/dir/x.safetensors", {{"a", at::ones({1})}}),
                  evax::DataError);
  CHECK_THROWS_WITH(
      evax::safetensors_save(tmp / "c.safetensors", {{"c", at::ones({2}, at::kComplexFloat)}}),
      Contains("does not write"));
  CHECK_THROWS_AS(
      evax::safetensors_save(tmp / "d.safetensors", {{"a", at::ones({1})}, {"a", at::ones({2})}}),
      evax::InternalError);
  CHECK_FALSE(fs::exists(tmp / "d.safetensors"));
  CHECK_THROWS_WITH(evax::safetensors_load(tmp / "missing.safetensors"),
                    Contains("missing.safetensors"));

  struct Case {
    std::string header;
    size_t data;
    const char* message;
  };
  const std::string ok = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<Case> cases = {
      {"[1]", 0, "not a JSON object"},
      {"{\"a\":", 0, "not valid JSON"},
      {"{" + ok + "} trailing", 8, "not valid JSON"},
      {std::string(40, '[') + std::string(40, ']'), 0, "not a JSON object"},
      {"{\"x\":" + std::string(40, '[') + std::string(40, ']') + "}", 0, "nested too deeply"},
      {R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2, "unsupported dtype"},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-negative"},
      {R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8, "non-negative"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "need 12"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "end before"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, "two non-negative"},
      {R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8, "dtype"},
      {R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, "shape"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
       "overflows"},
      {"{" + ok + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16, "gap"},
      {"{" + ok + "}", 12, "data section holds 12 bytes"},
      {"{" + ok + R"(,"__metadata__":{"k":1}})", 8, "not a string"},
      {"{" + ok + R"(,"__metadata__":[]})", 8, "__metadata__ is not an object"},
      {R"({"a":[]})", 0, "not an object"},
  };
  const std::string path = tmp / "bad.safetensors";
  for (const auto& c : cases) {
    INFO("header " << c.header);
    write_raw(path, c.header, c.data);
    CHECK_THROWS_WITH(evax::safetensors_load(path), Contains(c.message) && Contains(path));
  }
  std::ofstream(path, std::ios::binary) << "abc";
  CHECK_THROWS_WITH(evax::safetensors_load(path), Contains("too short"));

  // A valid hand-made file: empty tensor list, padded header.
  write_raw(path, "{}      ", 0);
  CHECK(evax::safetensors_load(path).empty());
  write_raw(path, "{" + ok + "}", 8);
  CHECK(evax::safetensors_load(path).size() == 1);
}
