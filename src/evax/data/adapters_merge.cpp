// The merged pretraining manifest: inputs concatenated without test images, their patients,
// laterals and repeated paths.
#include <string>
#include <unordered_set>
#include <vector>

#include "evax/core/log.h"
#include "evax/data/adapters_internal.h"

namespace evax {

using namespace adapters_detail;

namespace {

bool is_frontal_view(const std::string& view) {
  const std::string v = upper(trim(view));
  return v.empty() || v == "PA" || v == "AP" || v == "FRONTAL";
}

}  // namespace

MergeSummary merge_pretrain_manifests(const std::vector<std::string>& inputs,
                                      const std::string& out) {
  if (inputs.empty()) raise<ConfigError>("merge: no input manifests");
  ManifestOptions mo;
  mo.allow_uncertain = true;        // labels are dropped anyway
  mo.check_patient_splits = false;  // a leaking patient is dropped below, not an error
  std::vector<Manifest> ms;
  for (const auto& in : inputs) ms.push_back(manifest_load(in, mo));

  // Every test image by absolute path, and every test patient per input.
  std::unordered_set<std::string> test_paths;
  std::vector<std::unordered_set<std::string>> test_patients(ms.size());
  for (size_t i = 0; i < ms.size(); ++i)
    for (const ManifestRow& r : ms[i].rows)
      if (r.split == "test") {
        test_paths.insert(normal_abs(r.path));
        test_patients[i].insert(r.patient_id);
      }

  MergeSummary sum;
  ManifestWriter w(out, {}, true, false, false);
  std::unordered_set<std::string> names, written;
  for (size_t i = 0; i < ms.size(); ++i) {
    MergeSourceCounts c;
    c.file = inputs[i];
    c.source = fs::path(inputs[i]).stem().string();
    for (int k = 2; !names.insert(c.source).second; ++k)
      c.source = fs::path(inputs[i]).stem().string() + "_" + std::to_string(k);
    for (const ManifestRow& r : ms[i].rows) {
      ++c.rows;
      const std::string p = normal_abs(r.path);
      if (r.split == "test" || test_paths.count(p) || test_patients[i].count(r.patient_id)) {
        ++c.dropped_test;
      } else if (!is_frontal_view(r.view)) {
        ++c.dropped_lateral;
      } else if (!written.insert(p).second) {
        ++c.dropped_duplicate;
      } else {
        ++c.kept;
        w.add({p, r.split, c.source + "/" + r.patient_id, r.view, {}, "", ""});
      }
    }
    log_info("merge: ", c.source, " (", c.file, "): ", c.rows, " rows, kept ", c.kept,
             ", dropped as test ", c.dropped_test, ", as non-frontal ", c.dropped_lateral,
             ", as duplicate ", c.dropped_duplicate);
    sum.kept += c.kept;
    sum.sources.push_back(std::move(c));
  }
  w.write(0, 0);
  log_info("merge: wrote ", sum.kept, " images to ", out);
  return sum;
}

}  // namespace evax
