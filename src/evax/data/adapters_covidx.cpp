// COVIDx CXR-3 (COVIDx9A) and CXR-4 from their list files.
#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

#include "evax/core/log.h"
#include "evax/data/adapters_internal.h"

namespace evax {

using namespace adapters_detail;

std::vector<CovidxEntry> read_covidx_list(const std::string& path) {
  std::vector<CovidxEntry> out;
  for (const TextLine& l : read_lines(path)) {
    const std::vector<std::string> f = split_blanks(l.text);
    if (f.size() != 4)
      raise<DataError>(at(path, l.line), f.size(), " fields in '", l.text,
                       "' (want: patient_id filename class source)");
    out.push_back({f[0], f[1], f[2], f[3], l.line});
  }
  return out;
}

ManifestSummary build_covidx_manifest(const CovidxOptions& o) {
  if (o.version != 3 && o.version != 4)
    raise<ConfigError>("covidx: unknown version ", o.version, " (want 3 or 4)");
  const fs::path root = require_root(o.root, "covidx");
  check_split(o.eval_split, "covidx: eval split");
  const bool v3 = o.version == 3;
  const std::vector<std::string> classes =
      v3 ? std::vector<std::string>{"normal", "pneumonia", "COVID-19"}
         : std::vector<std::string>{"negative", "positive"};
  const fs::path lists = o.split_lists.empty() ? root
                         : lists_dir(o.split_lists, v3 ? "covidx3" : "covidx4",
                                     v3 ? "train_COVIDx9A.txt" : "train.txt");
  // (list file, image folder, split, required)
  struct Part {
    std::string file, folder, split;
    bool required;
  };
  std::vector<Part> parts;
  const auto pick = [&](const std::vector<std::string>& names) {
    for (const auto& n : names)
      if (is_file(lists / n)) return (lists / n).string();
    return (lists / names[0]).string();
  };
  if (v3) {
    parts = {{pick({"train_COVIDx9A.txt", "train.txt"}), "train", "train", true},
             {pick({"test_COVIDx9A.txt", "test.txt"}), "test", "test", true}};
  } else {
    parts = {{(lists / "train.txt").string(), "train", "train", true},
             {(lists / "val.txt").string(), "val", o.eval_split, true},
             {(lists / "test.txt").string(), "test", "test", false}};
  }

  ManifestWriter w(o.out, classes, false, false, false);
  int64_t skipped = 0;
  for (const Part& part : parts) {
    if (!is_file(part.file)) {
      if (part.required) raise<DataError>("covidx: no list file '", part.file, "'");
      continue;
    }
    std::unordered_map<std::string, int64_t> seen;
    for (const CovidxEntry& e : read_covidx_list(part.file)) {
      const std::string where = at(part.file, e.line);
      const auto k = std::find_if(classes.begin(), classes.end(), [&](const std::string& c) {
        return lower(c) == lower(e.label);
      });
      if (k == classes.end())
        raise<DataError>(where, "unknown class '", e.label, "' for COVIDx-", o.version,
                         " (want ", join(classes), ")");
      const auto [it, fresh] = seen.emplace(e.filename, e.line);
      if (!fresh) {
        log_warn(where, "image '", e.filename, "' repeated (first on line ", it->second,
                 "); keeping the first");
        ++skipped;
        continue;
      }
      const std::string image = (root / part.folder / e.filename).string();
      if (!image_present(image, o, where)) {
        ++skipped;
        continue;
      }
      std::vector<float> onehot(classes.size(), 0.0f);
      onehot[static_cast<size_t>(k - classes.begin())] = 1.0f;
      w.add({image, part.split, e.patient_id, "", onehot, "", ""});
    }
  }
  return w.write(skipped, 0);
}

}  // namespace evax
