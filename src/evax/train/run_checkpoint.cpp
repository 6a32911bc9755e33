#include "evax/train/run_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/io/safetensors.h"

namespace fs = std::filesystem;

namespace evax {
namespace {

const char* kFiles[] = {"model.safetensors", "trainer.safetensors"};

void fsync_path(const std::string& p, bool dir) {
  int fd = ::open(p.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::vector<fs::path> step_dirs(const std::string& root) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return dirs;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// Throws DataError when the directory is not a complete, intact checkpoint.
nlohmann::json verify(const std::string& dir) {
  const std::string meta_path = dir + "/meta.json";
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(meta_path));
  } catch (const nlohmann::json::exception& e) {
    raise<DataError>("checkpoint '", dir, "': meta.json is not valid JSON (", e.what(), ")");
  }
  if (!meta.contains("files") || !meta["files"].is_object())
    raise<DataError>("checkpoint '", dir, "': meta.json lists no files");
  for (const char* f : kFiles) {
    const std::string p = dir + "/" + f;
    if (!meta["files"].contains(f)) raise<DataError>("checkpoint '", dir, "': meta.json lacks ", f);
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    if (ec) raise<DataError>("checkpoint '", dir, "': ", f, " is missing");
    if (size != meta["files"][f]["size"].get<uint64_t>() ||
        file_fnv1a64(p) != meta["files"][f]["fnv1a64"].get<std::string>())
      raise<DataError>("checkpoint '", dir, "': ", f, " does not match its checksum");
  }
  return meta;
}

}  // namespace

std::string file_fnv1a64(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) raise<DataError>("cannot read '", path, "'");
  uint64_t h = 0xcbf29ce484222325ull;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h ^= static_cast<uint8_t>(buf[i]);
      h *= 0x100000001b3ull;
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::string run_checkpoint_dir(const std::string& root, int64_t step) {
  return root + "/" + step_name(step);
}

namespace {

// Writes the checkpoint files into a temporary sibling of `final_dir`, then renames it over
// `final_dir`: an existing directory is replaced only once the new one is complete.
void write_checkpoint_dir(const std::string& final_dir, const std::string& tmp,
                          const TensorMap& model, const TensorMap& trainer, nlohmann::json meta) {
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) raise<DataError>("cannot create checkpoint folder '", tmp, "': ", ec.message());
  safetensors_save(tmp + "/model.safetensors", model);
  safetensors_save(tmp + "/trainer.safetensors", trainer);
  meta["files"] = nlohmann::json::object();
  for (const char* f : kFiles) {
    const std::string p = tmp + "/" + f;
    meta["files"][f] = {{"size", fs::file_size(p)}, {"fnv1a64", file_fnv1a64(p)}};
  }
  write_file_atomic(tmp + "/meta.json", meta.dump(2) + "\n");
  fsync_path(tmp, true);
  if (fs::exists(final_dir)) {
    // rename() cannot replace a non-empty directory: move the old one aside first.
    const std::string old = tmp + ".old";
    fs::remove_all(old, ec);
    if (::rename(final_dir.c_str(), old.c_str()) != 0)
      raise<DataError>("cannot move '", final_dir, "' aside to replace it");
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
      raise<DataError>("cannot rename '", tmp, "' to '", final_dir, "'");
    fs::remove_all(old, ec);
  } else if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    raise<DataError>("cannot rename '", tmp, "' to '", final_dir, "'");
  }
  fsync_path(fs::path(final_dir).parent_path().string(), true);
}

}  // namespace

std::string run_checkpoint_save(const std::string& root, int64_t step, const TensorMap& model,
                                const TensorMap& trainer, nlohmann::json meta, int keep_last) {
  EVAX_ASSERT(keep_last >= 1);
  const std::string final_dir = run_checkpoint_dir(root, step);
  const std::string tmp = root + "/.tmp-" + step_name(step) + "-" + std::to_string(::getpid());
  meta["step"] = step;
  // Replaces an existing checkpoint of the same step (a re-run after rollback).
  write_checkpoint_dir(final_dir, tmp, model, trainer, std::move(meta));
  std::error_code ec;
  auto dirs = step_dirs(root);
  for (size_t i = 0; i + keep_last < dirs.size(); ++i) fs::remove_all(dirs[i], ec);
  return final_dir;
}

void run_checkpoint_save_at(const std::string& dir, const TensorMap& model,
                            const TensorMap& trainer, nlohmann::json meta) {
  const fs::path p(dir);
  std::error_code ec;
  fs::create_directories(p.parent_path(), ec);
  const std::string tmp = (p.parent_path() / (".tmp-" + p.filename().string() + "-" +
                                              std::to_string(::getpid()))).string();
  write_checkpoint_dir(dir, tmp, model, trainer, std::move(meta));
}

std::optional<std::string> run_checkpoint_find_latest(const std::string& root) {
  auto dirs = step_dirs(root);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    try {
      verify(it->string());
      return it->string();
    } catch (const DataError& e) {
      log_warn("skipping damaged checkpoint: ", e.what());
    }
  }
  return std::nullopt;
}

RunCheckpoint run_checkpoint_load(const std::string& dir) {
  RunCheckpoint s;
  s.meta = verify(dir);
  s.model = safetensors_load(dir + "/model.safetensors");
  s.trainer = safetensors_load(dir + "/trainer.safetensors");
  s.dir = dir;
  return s;
}

nlohmann::json checkpoint_task_meta(const std::string& weights, const std::string& command) {
  const std::string meta_path = (fs::path(weights).parent_path() / "meta.json").string();
  if (!fs::exists(meta_path))
    raise<DataError>("'", weights, "' has no meta.json beside it: ", command, " needs a checkpoint "
                     "written by evax (its meta.json records the classes and the input convention)");
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(meta_path));
  } catch (const nlohmann::json::exception& e) {
    raise<DataError>("'", meta_path, "' is not valid JSON (", e.what(), ")");
  }
  return meta.value("task", nlohmann::json::object());
}

std::string run_weights_path(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) raise<DataError>("checkpoint '", path, "' does not exist");
  if (!fs::is_directory(path, ec)) return path;
  if (fs::exists(path + "/model.safetensors")) return path + "/model.safetensors";
  if (fs::exists(path + "/checkpoints/best/model.safetensors"))
    return path + "/checkpoints/best/model.safetensors";
  if (auto latest = run_checkpoint_find_latest(path + "/checkpoints"))
    return *latest + "/model.safetensors";
  raise<DataError>("'", path, "' is a directory without model.safetensors, checkpoints/best or a "
                   "valid checkpoint under checkpoints/");
}

}  // namespace evax
