// Weight-file (foreign checkpoint) reading against fixtures written by the reference libraries
// (tools/make_checkpoint_fixtures.py), corrupt files and mutated copies of valid ones.
#include "evax/io/weight_file.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/safetensors.h"
#include "evax/io/torch_pickle.h"
#include "test_util.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using evax::PickleValue;
using namespace std::string_literals;

namespace {

/// The fixtures, generated once into the build tree (keyed by the script and the python used,
/// so a changed script regenerates them; concurrent test processes each finish or reuse).
const std::string& fixture_dir() {
  static const std::string dir = [] {
    const std::string script = evax::test::source_path("tools/make_checkpoint_fixtures.py");
    const size_t hash = std::hash<std::string>{}(evax::read_file(script) + EVAX_PYTHON);
    std::ostringstream name;
    name << "checkpoint_fixtures-" << std::hex << hash;
    const fs::path final_dir = fs::path(EVAX_BINARY_DIR) / "test_tmp" / name.str();
    if (fs::exists(final_dir / "done")) return final_dir.string();
    fs::path tmp = final_dir;
    tmp += ".tmp." + std::to_string(::getpid());
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    const std::string log = (tmp / "log.txt").string();
    const std::string cmd =
        std::string(EVAX_PYTHON) + " " + script + " --out " + tmp.string() + " > " + log + " 2>&1";
    const int rc = std::system(cmd.c_str());
    INFO("command: " << cmd << "\n" << evax::read_file(log));
    REQUIRE(rc == 0);
    std::ofstream(tmp / "done") << "ok\n";
    std::error_code ec;
    fs::rename(tmp, final_dir, ec);
    if (ec) fs::remove_all(tmp);  // another process finished first: use its copy
    REQUIRE(fs::exists(final_dir / "done"));
    // Fixtures of older script versions.
    for (const auto& e : fs::directory_iterator(final_dir.parent_path(), ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("checkpoint_fixtures-", 0) == 0 && n.find(".tmp.") == std::string::npos &&
          e.path() != final_dir)
        fs::remove_all(e.path(), ec);
    }
    return final_dir.string();
  }();
  return dir;
}

std::string fixture(const std::string& name) { return fixture_dir() + "/" + name; }

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string bytes_of(const std::string& path) { return evax::read_file(path); }

void write_bytes(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(data.data(), data.size());
}

/// Loads and selects the state dict; true when it loaded, false on DataError. Any other
/// exception fails the test.
bool loads_or_data_error(const std::string& path, std::string* message = nullptr) {
  try {
    evax::WeightFileContents c = evax::weight_file_read(path);
    try {
      evax::weight_file_state_dict(c);
    } catch (const evax::DataError&) {
    }
    for (const auto& e : c.entries) (void)e.description.size();
    return true;
  } catch (const evax::DataError& e) {
    if (message) *message = e.what();
    return false;
  } catch (const std::exception& e) {
    FAIL_CHECK("non-DataError exception for " << path << ": " << e.what());
  } catch (...) {
    FAIL_CHECK("unknown exception for " << path);
  }
  return false;
}

/// Writes a torch.save-like zip holding `pkl` as data.pkl and the given storage records.
void write_torch_zip(const std::string& path, const std::string& pkl,
                     const std::vector<std::pair<std::string, std::string>>& records = {}) {
  caffe2::serialize::PyTorchStreamWriter w(path);
  w.writeRecord("data.pkl", pkl.data(), pkl.size());
  w.writeRecord("byteorder", "little", 6);
  for (const auto& [name, data] : records) w.writeRecord(name, data.data(), data.size());
  w.writeEndOfFile();
}

}  // namespace

TEST_CASE("every fixture loads with the reference tensors, bit for bit") {
  int files = 0;
  for (const auto& entry : fs::directory_iterator(fixture_dir())) {
    const std::string name = entry.path().filename().string();
    const std::string suffix = ".expected.safetensors";
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix))
      continue;
    ++files;
    std::map<std::string, std::string> meta;
    evax::TensorMap expected = evax::safetensors_load(entry.path().string(), &meta);
    const std::string file = meta.at("file");
    INFO("fixture " << file);
    evax::WeightFileContents c = evax::weight_file_read(fixture(file));
    CHECK(c.format ==
          (file.find(".safetensors") != std::string::npos ? "safetensors" : "torch-zip"));

    std::set<std::string> want, got;
    for (const auto& [k, t] : expected) want.insert(k);
    for (const auto& [k, t] : c.tensors) got.insert(k);
    CHECK(got == want);
    for (const auto& [k, e] : expected) {
      INFO("tensor " << k);
      const at::Tensor* a = evax::find(c.tensors, k);
      REQUIRE(a != nullptr);
      at::Tensor actual = *a;
      // uint16 is stored as int32 in the expected file (the C++ safetensors reader takes no U16).
      if (actual.scalar_type() == at::kUInt16) actual = actual.to(e.scalar_type());
      CHECK(actual.scalar_type() == e.scalar_type());
      CHECK(actual.sizes() == e.sizes());
      CHECK(actual.device().is_cpu());
      CHECK(at::equal(actual.contiguous(), e));
    }

    const std::string key = meta.at("state_dict_key");
    if (key == "-") {
      CHECK_THROWS_AS(evax::weight_file_state_dict(c), evax::DataError);
      continue;
    }
    std::string chosen;
    int64_t skipped = -1;
    evax::TensorMap sd = evax::weight_file_state_dict(c, &chosen, &skipped);
    CHECK(chosen == key);
    CHECK(skipped >= 0);
    std::vector<std::string> names;
    for (const auto& [k, t] : sd) names.push_back(k);
    std::vector<std::string> want_names = split_lines(meta.at("state_dict_names"));
    if (c.format == "safetensors") {  // file order there is by dtype, not insertion
      std::sort(names.begin(), names.end());
      std::sort(want_names.begin(), want_names.end());
    }
    CHECK(names == want_names);
    // Pickled modules: module.state_dict() as saved by Python; else the expected file's names.
    const std::string sd_file =
        entry.path().string().substr(0, entry.path().string().size() - suffix.size()) +
        ".state_dict.safetensors";
    const bool module = fs::exists(sd_file);
    const evax::TensorMap module_sd = module ? evax::safetensors_load(sd_file) : evax::TensorMap{};
    for (const auto& [k, t] : sd) {
      const at::Tensor* e =
          module ? evax::find(module_sd, k) : evax::find(expected, key.empty() ? k : key + "." + k);
      REQUIRE(e != nullptr);
      if (t.scalar_type() != at::kUInt16) CHECK(at::equal(t.contiguous(), *e));
    }
  }
  CHECK(files >= 13);
}

TEST_CASE("tensors sharing a storage stay views of one buffer") {
  evax::WeightFileContents c = evax::weight_file_read(fixture("shared.pt"));
  at::Tensor base = *evax::find(c.tensors, "base");
  at::Tensor rows = *evax::find(c.tensors, "rows");
  at::Tensor col = *evax::find(c.tensors, "col");
  at::Tensor tr = *evax::find(c.tensors, "tr");
  at::Tensor again = *evax::find(c.tensors, "again");
  at::Tensor other = *evax::find(c.tensors, "other");
  CHECK(rows.is_alias_of(base));
  CHECK(col.is_alias_of(base));
  CHECK(tr.is_alias_of(base));
  CHECK_FALSE(other.is_alias_of(base));
  CHECK(static_cast<char*>(rows.data_ptr()) == static_cast<char*>(base.data_ptr()) + 5 * 4);
  CHECK(again.data_ptr() == base.data_ptr());
  CHECK(rows.storage_offset() == 5);
  CHECK(col.storage_offset() == 2);
  CHECK(col.strides() == at::IntArrayRef{5});
  CHECK(tr.strides() == at::IntArrayRef({1, 5}));
  CHECK_FALSE(tr.is_contiguous());
  base.index_put_({1, 2}, -1.0f);
  CHECK(rows[0][2].item<float>() == -1.0f);
  CHECK(col[1].item<float>() == -1.0f);
  CHECK(tr[2][1].item<float>() == -1.0f);
}

TEST_CASE("the top-level listing describes training extras and names unknown classes") {
  evax::WeightFileContents c = evax::weight_file_read(fixture("eva_style.pt"));
  std::map<std::string, std::string> d;
  std::vector<std::string> keys;
  for (const auto& e : c.entries) {
    d[e.key] = e.description;
    keys.push_back(e.key);
  }
  const std::vector<std::string> want_keys = {
      "model",  "args",  "epoch", "optimizer", "np_scalar", "np_int", "input_size",
      "device", "dtype", "tags",  "big_int",   "neg",       "raw"};
  CHECK(keys == want_keys);
  CHECK(d["model"] == "dict (4 entries, 6 tensors)");
  CHECK(d["args"] == "argparse.Namespace");
  CHECK(d["epoch"] == "int 3");
  CHECK_THAT(d["optimizer"], StartsWith("dict (2 entries, 18 tensors"));
  CHECK_THAT(d["np_scalar"], Contains("multiarray.scalar"));
  CHECK(d["input_size"] == "tuple (3 items)");
  CHECK(d["device"] == "torch.device('cuda', 0)");
  CHECK(d["dtype"] == "torch.float16");
  CHECK(d["tags"] == "set (2 items)");
  CHECK(d["big_int"] == "builtins.int");
  CHECK(d["neg"] == "int -123456789012");
  CHECK(d["raw"] == "bytes (3)");

  // Placeholders keep what pickle recorded: the Namespace's attributes, the numpy scalar's bytes.
  const PickleValue& root = c.pickle->root();
  const PickleValue* args = root.get("args");
  REQUIRE(args->state != nullptr);
  CHECK(args->state->get("lr")->real == 1.5e-3);
  CHECK(args->state->get("model")->text == "eva02_base");
  CHECK(args->state->get("drop")->kind == PickleValue::Kind::kNone);
  CHECK(args->state->get("layers")->items.size() == 2);
  const PickleValue* np = root.get("np_scalar");
  REQUIRE(np->args != nullptr);
  REQUIRE(np->args->items.size() == 2);
  const PickleValue* raw = np->args->items[1];
  REQUIRE(raw->kind == PickleValue::Kind::kBytes);
  REQUIRE(raw->text.size() == 8);
  double v = 0;
  std::memcpy(&v, raw->text.data(), 8);
  CHECK(v == 0.25);

  std::string key;
  int64_t skipped = -1;
  evax::TensorMap sd = evax::weight_file_state_dict(c, &key, &skipped);
  CHECK(key == "model");
  CHECK(skipped == 0);
  CHECK(sd.front().first == "patch_embed.proj.weight");
  CHECK(evax::find(sd, "blocks.0.attn.qkv.weight")->scalar_type() == at::kBFloat16);
  CHECK(evax::find(sd, "cls_token")->scalar_type() == at::kHalf);

  evax::TensorMap f32 = evax::tensors_to(sd, at::kFloat);
  CHECK(evax::find(f32, "blocks.0.attn.qkv.weight")->scalar_type() == at::kFloat);
  CHECK(at::equal(evax::find(f32, "cls_token")->to(at::kHalf), *evax::find(sd, "cls_token")));

  evax::WeightFileContents l = evax::weight_file_read(fixture("lightning.ckpt"));
  std::map<std::string, std::string> ld;
  for (const auto& e : l.entries) ld[e.key] = e.description;
  CHECK_THAT(ld["hyper_parameters"], StartsWith("__main__.AttributeDict"));
  CHECK(ld["pytorch-lightning_version"] == "str '2.2.0'");
  CHECK_THAT(ld["state_dict"], StartsWith("dict (9 entries, 9 tensors"));
  sd = evax::weight_file_state_dict(l, &key, &skipped);
  CHECK(key == "state_dict");
  CHECK(evax::find(sd, "model.bn.num_batches_tracked")->scalar_type() == at::kLong);
  evax::TensorMap cast = evax::tensors_to(sd, at::kHalf);
  CHECK(evax::find(cast, "model.bn.num_batches_tracked")->scalar_type() == at::kLong);
  CHECK(evax::find(cast, "model.conv.weight")->scalar_type() == at::kHalf);

  evax::WeightFileContents w = evax::weight_file_read(fixture("whole_module.pt"));
  REQUIRE(w.entries.size() == 1);
  CHECK(w.entries[0].description == "__main__.SmallNet (10 tensors)");
  sd = evax::weight_file_state_dict(w, &key, &skipped);
  CHECK(key.empty());
  CHECK(sd.size() == 9);  // the non-persistent buffer is not part of a state dict
  CHECK_FALSE(evax::contains(sd, "scratch"));
  CHECK(evax::contains(sd, "bn.running_var"));

  evax::WeightFileContents none = evax::weight_file_read(fixture("no_state_dict.pt"));
  CHECK_THROWS_WITH(evax::weight_file_state_dict(none),
                    Contains("no state dict found (top level: {epoch, names, ns})"));

  evax::WeightFileContents s = evax::weight_file_read(fixture("reference.safetensors"));
  const std::map<std::string, std::string> want_meta = {{"format", "pt"}, {"note", "fixture"}};
  CHECK(s.metadata == want_meta);
  CHECK(s.entries.size() == 7);
  sd = evax::weight_file_state_dict(s, &key, &skipped);
  CHECK(key.empty());
  CHECK(sd.size() == 7);
}

TEST_CASE("corrupt checkpoints throw DataError naming the file") {
  const std::string dir = fixture("corrupt");
  auto lines = split_lines(bytes_of(dir + "/expected_errors.txt"));
  CHECK(lines.size() >= 11);
  for (const auto& line : lines) {
    const std::string file = line.substr(0, line.find('\t'));
    const std::string want = line.substr(line.find('\t') + 1);
    INFO("file " << file);
    std::string msg;
    CHECK_FALSE(loads_or_data_error(dir + "/" + file, &msg));
    CHECK_THAT(msg, Contains(want) && Contains(file));
    CHECK(msg.find('\n') == std::string::npos);
  }
  std::string msg;
  CHECK_FALSE(loads_or_data_error(dir + "/no-such-file.pt", &msg));
  CHECK_THAT(msg, Contains("no-such-file.pt"));
}

TEST_CASE("truncated and bit-flipped checkpoints load or throw DataError, never crash") {
  evax::test::TempDir tmp("ckpt_fuzz");
  const std::string path = tmp / "mutant";
  for (const char* name : {"plain_fp32.pt", "reference.safetensors", "dtypes.pt"}) {
    const std::string good = bytes_of(fixture(name));
    INFO("fixture " << name);
    int loaded = 0, rejected = 0;
    const size_t stride = good.size() > 3000 ? 23 : 7;
    for (size_t n = 0; n < good.size(); n += stride) {
      write_bytes(path, good.substr(0, n));
      INFO("truncated to " << n);
      (loads_or_data_error(path) ? loaded : rejected)++;
    }
    std::mt19937 rng(42);
    for (int i = 0; i < 300; ++i) {
      std::string bad = good;
      const size_t pos = rng() % bad.size();
      bad[pos] = static_cast<char>(bad[pos] ^ (1 + rng() % 255));
      write_bytes(path, bad);
      INFO("byte " << pos << " flipped");
      (loads_or_data_error(path) ? loaded : rejected)++;
    }
    CHECK(rejected > 0);
    CHECK(loaded > 0);  // flips inside tensor data are not detectable, and must load
  }
}

TEST_CASE("mutated data.pkl inside a valid zip loads or throws DataError") {
  // The zip layer may catch byte flips by CRC; rewriting the archive puts mutations in front of
  // the unpickler itself, storages and all.
  evax::test::TempDir tmp("pkl_fuzz");
  for (const char* name : {"shared.pt", "eva_style.pt", "proto4.pt"}) {
    caffe2::serialize::PyTorchStreamReader reader(fixture(name));
    auto [pkl_ptr, pkl_size] = reader.getRecord("data.pkl");
    const std::string pkl(static_cast<const char*>(pkl_ptr.get()), pkl_size);
    std::vector<std::pair<std::string, std::string>> records;
    for (const auto& r : reader.getAllRecords()) {
      if (r.rfind("data/", 0) != 0) continue;
      auto [ptr, size] = reader.getRecord(r);
      records.emplace_back(r, std::string(static_cast<const char*>(ptr.get()), size));
    }
    INFO("fixture " << name);
    const std::string path = tmp / "m.pt";
    write_torch_zip(path, pkl, records);
    REQUIRE(loads_or_data_error(path));

    std::mt19937 rng(7);
    int rejected = 0;
    for (int i = 0; i < 250; ++i) {
      std::string bad = pkl;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) {
        const size_t pos = rng() % bad.size();
        bad[pos] = static_cast<char>(bad[pos] ^ (1 + rng() % 255));
      }
      if (i % 5 == 0) bad.resize(rng() % bad.size());
      write_torch_zip(path, bad, records);
      INFO("mutation " << i);
      rejected += !loads_or_data_error(path);
    }
    CHECK(rejected > 0);
  }
}

namespace {
std::string uni(const std::string& s) {  // BINUNICODE
  std::string n(4, '\0');
  for (int i = 0; i < 4; ++i) n[i] = static_cast<char>(s.size() >> (8 * i));
  return "X" + n + s;
}
const std::string kProto2 = "\x80\x02";
}  // namespace

TEST_CASE("hostile pickles: cycles, deep nesting, missing storages, views out of bounds") {
  evax::test::TempDir tmp("pkl_hostile");
  const std::string path = tmp / "h.pt";
  std::string msg;
  // L = []; L.append(L); {'model': L}: loads (walks skip cycles), has no state dict.
  write_torch_zip(path, kProto2 + "}" + uni("model") +
                            "]q\x01"
                            "h\x01"
                            "a"
                            "s.");
  CHECK(loads_or_data_error(path, &msg));
  // d = {}; d['model'] = d
  write_torch_zip(path, kProto2 + "}q\x00"s + uni("model") + "h\x00s."s);
  CHECK(loads_or_data_error(path, &msg));
  CHECK_THROWS_WITH(evax::weight_file_state_dict(evax::weight_file_read(path)),
                    Contains("no state dict found"));
  // 100000 nested lists.
  write_torch_zip(path, kProto2 + std::string(100000, ']') + std::string(99999, 'a') + ".");
  CHECK_FALSE(loads_or_data_error(path, &msg));
  CHECK_THAT(msg, Contains("nested deeper"));

  // ('storage', torch.FloatStorage, '9', 'cpu', 2) as a persistent id.
  const std::string pid = "(" + uni("storage") + "ctorch\nFloatStorage\n" + uni("9") + uni("cpu") +
                          "K\x02"
                          "tQ";
  write_torch_zip(path, kProto2 + pid + ".");
  CHECK_FALSE(loads_or_data_error(path, &msg));
  CHECK_THAT(msg, Contains("truncated zip (record 'h/data/9' missing)"));
  write_torch_zip(path, kProto2 + pid + ".", {{"data/9", std::string(7, '\0')}});
  CHECK_FALSE(loads_or_data_error(path, &msg));
  CHECK_THAT(msg, Contains("should hold 2 float32 elements"));
  write_torch_zip(path, kProto2 + pid + ".", {{"data/9", std::string(8, '\0')}});
  CHECK(loads_or_data_error(path, &msg));

  // _rebuild_tensor_v2(storage, offset, size, stride, False, {}) with the given view.
  auto rebuild = [&](const std::string& offset, const std::string& size,
                     const std::string& stride) {
    return kProto2 + "ctorch._utils\n_rebuild_tensor_v2\n(" + pid + offset + size + stride +
           "\x89}tR.";
  };
  const std::vector<std::pair<std::string, std::string>> rec = {{"data/9", std::string(8, '\0')}};
  write_torch_zip(path, rebuild("K\x01", "K\x01\x85", "K\x01\x85"), rec);
  CHECK(evax::weight_file_read(path).tensors.at(0).second.sizes() == at::IntArrayRef{1});
  write_torch_zip(path, rebuild("K\x01", "K\x02\x85", "K\x01\x85"), rec);
  CHECK_FALSE(loads_or_data_error(path, &msg));
  CHECK_THAT(msg, Contains("exceeds its storage"));
  write_torch_zip(path, rebuild("K\x00"s, "K\x02\x85", "J\xff\xff\xff\xff\x85"), rec);
  CHECK_FALSE(loads_or_data_error(path, &msg));
  CHECK_THAT(msg, Contains("non-negative"));
  write_torch_zip(path, rebuild("K\x00"s, "K\x02K\x02\x86", "K\x01\x85"), rec);
  CHECK_FALSE(loads_or_data_error(path, &msg));
  CHECK_THAT(msg, Contains("differ in length"));
  // Huge strides must not overflow the bounds check.
  write_torch_zip(
      path,
      rebuild("K\x00"s, "K\x02K\x02\x86", "\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7fK\x01\x86"),
      rec);
  CHECK_FALSE(loads_or_data_error(path, &msg));
  CHECK_THAT(msg, Contains("exceeds its storage"));
}

TEST_CASE("a directory given as a weight file says so, not 'empty file'") {
  evax::test::TempDir tmp("ckpt_dir");
  CHECK_THROWS_AS(evax::weight_file_read(tmp / ""), evax::DataError);
  CHECK_THROWS_WITH(evax::weight_file_read(tmp / ""), Contains("is a directory"));
}
