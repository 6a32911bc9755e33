#include "evax/data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <utility>

#include "evax/core/error.h"
#include "evax/core/log.h"

namespace evax {

namespace fs = std::filesystem;

namespace {

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

bool has_extension(const std::string& name, const std::vector<std::string>& exts) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const std::string& e : exts)
    if (lower.size() >= e.size() && lower.compare(lower.size() - e.size(), e.size(), e) == 0)
      return true;
  return false;
}

// Images under one class folder, as (folder, file name) sorted like torchvision's
// sorted(os.walk(dir)) then sorted(fnames).
std::vector<std::pair<std::string, std::string>> class_images(
    const fs::path& dir, const std::vector<std::string>& exts) {
  std::vector<std::pair<std::string, std::string>> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec);
  if (ec) raise<DataError>("cannot read ", dir.string(), ": ", ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) raise<DataError>("cannot read ", dir.string(), ": ", ec.message());
    const fs::path& p = it->path();
    if (hidden(p)) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && has_extension(p.filename().string(), exts))
      out.emplace_back(p.parent_path().string(), p.filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

Manifest image_folder_manifest(const std::string& root, const ImageFolderOptions& options) {
  const std::string& split = options.split();
  if (split != "train" && split != "val" && split != "test")
    raise<ConfigError>("image folder: unknown split '", split, "' (want train, val or test)");
  std::error_code ec;
  const fs::path base = fs::absolute(fs::path(root), ec);
  if (ec || !fs::is_directory(base, ec))
    raise<DataError>("image folder ", root, ": not a directory");
  Manifest m;
  m.file = base.string();
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec))
    if (!hidden(it->path()) && it->is_directory()) m.label_names.push_back(it->path().filename().string());
  if (ec) raise<DataError>("image folder ", root, ": cannot list: ", ec.message());
  std::sort(m.label_names.begin(), m.label_names.end());
  if (m.label_names.empty())
    raise<DataError>("image folder ", root, ": no class folders (want root/<class>/<image>)");
  const size_t k = m.label_names.size();
  for (size_t c = 0; c < k; ++c) {
    const auto files = class_images(base / m.label_names[c], options.extensions());
    if (files.empty())
      log_warn("image folder ", root, ": class '", m.label_names[c], "' has no images");
    for (const auto& [dir, name] : files) {
      ManifestRow r;
      const fs::path p = fs::path(dir) / name;
      r.path = p.string();
      r.split = split;
      r.patient_id = p.lexically_relative(base).generic_string();
      r.labels.assign(k, 0.0f);
      r.labels[c] = 1.0f;
      m.rows.push_back(std::move(r));
    }
  }
  if (m.rows.empty()) {
    std::string exts;
    for (const std::string& e : options.extensions()) exts += (exts.empty() ? "" : " ") + e;
    raise<DataError>("image folder ", root, ": no images (", k, " class folders, no ", exts,
                     " file in any)");
  }
  return m;
}

}  // namespace evax
