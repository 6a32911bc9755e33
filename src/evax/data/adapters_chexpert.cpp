// CheXpert: train.csv and valid.csv with per-label uncertain (-1) policies.
#include <algorithm>
#include <string>
#include <vector>

#include "evax/core/log.h"
#include "evax/core/strings.h"
#include "evax/data/adapters_internal.h"

namespace evax {

using namespace adapters_detail;

const std::vector<std::string> kChexpertLabels = {
    "No Finding",   "Enlarged Cardiomediastinum", "Cardiomegaly",     "Lung Opacity",
    "Lung Lesion",  "Edema",                      "Consolidation",    "Pneumonia",
    "Atelectasis",  "Pneumothorax",               "Pleural Effusion", "Pleural Other",
    "Fracture",     "Support Devices"};

const std::vector<std::string> kChexpertCompetitionLabels = {
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"};

namespace {

const char* policy_name(UncertainPolicy p) {
  switch (p) {
    case UncertainPolicy::kOnes: return "ones";
    case UncertainPolicy::kZeros: return "zeros";
    case UncertainPolicy::kIgnore: return "ignore";
    case UncertainPolicy::kKeep: return "keep";
  }
  return "?";
}

UncertainPolicy policy_for(const CheXpertOptions& o, const std::string& label) {
  const auto it = o.uncertain.find(label);
  if (it != o.uncertain.end()) return it->second;
  if (o.uncertain_default) return *o.uncertain_default;
  // LibAUC / EVA-X: U-Ones for Atelectasis and Edema, U-Zeros for the rest.
  return label == "Atelectasis" || label == "Edema" ? UncertainPolicy::kOnes
                                                    : UncertainPolicy::kZeros;
}

}  // namespace

void parse_uncertain_spec(const std::string& spec, CheXpertOptions* options) {
  const auto policy = [&](const std::string& s) {
    const std::string v = lower(trim(s));
    if (v == "ones") return UncertainPolicy::kOnes;
    if (v == "zeros") return UncertainPolicy::kZeros;
    if (v == "ignore") return UncertainPolicy::kIgnore;
    if (v == "keep") return UncertainPolicy::kKeep;
    raise<UsageError>("--uncertain: unknown policy '", trim(s), "' in '", spec,
                      "' (want ones, zeros, ignore or keep)");
  };
  for (const std::string& raw : split_on(spec, ',')) {
    const std::string item = trim(raw);
    if (item.empty()) raise<UsageError>("--uncertain: empty item in '", spec, "'");
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      options->uncertain_default = policy(item);
      continue;
    }
    const std::string label = trim(item.substr(0, eq));
    const auto k = std::find_if(kChexpertLabels.begin(), kChexpertLabels.end(),
                                [&](const std::string& n) { return lower(n) == lower(label); });
    if (k == kChexpertLabels.end())
      raise<UsageError>("--uncertain: unknown label '", label, "' (labels: ",
                        join(kChexpertLabels), ")");
    options->uncertain[*k] = policy(item.substr(eq + 1));
  }
}

ManifestSummary build_chexpert_manifest(const CheXpertOptions& o) {
  const fs::path root = require_root(o.root, "chexpert");
  check_split(o.eval_split, "chexpert: eval split");
  const std::string train_csv = require_file(root, {"train.csv"}, 1, "chexpert");
  const fs::path dir = fs::path(train_csv).parent_path();
  const std::string valid_csv = (dir / "valid.csv").string();
  if (!is_file(valid_csv))
    raise<DataError>("chexpert: no valid.csv next to '", train_csv, "'");
  for (const auto& [label, p] : o.uncertain) {
    (void)p;
    if (std::find(kChexpertLabels.begin(), kChexpertLabels.end(), label) == kChexpertLabels.end())
      raise<ConfigError>("chexpert: uncertain policy for unknown label '", label, "' (labels: ",
                         join(kChexpertLabels), ")");
  }
  const std::vector<std::string>& labels = o.all_labels ? kChexpertLabels
                                                        : kChexpertCompetitionLabels;
  std::vector<UncertainPolicy> policies;
  for (const auto& l : labels) policies.push_back(policy_for(o, l));

  ManifestWriter w(o.out, labels, true, false, false);
  int64_t skipped = 0;
  for (const auto& [csv, split] : {std::make_pair(train_csv, std::string("train")),
                                   std::make_pair(valid_csv, o.eval_split)}) {
    const CsvTable t = read_csv_table(csv);
    const size_t c_path = t.col("Path"), c_fl = t.col("Frontal/Lateral"), c_view = t.col("AP/PA");
    std::vector<size_t> c_labels;
    for (const auto& l : labels) c_labels.push_back(t.col(l));
    for (size_t r = 1; r < t.records.size(); ++r) {
      const CsvRecord& rec = t.records[r];
      const std::string where = at(csv, rec.line);
      const std::string rel = t.cell(rec, c_path);
      if (rel.empty()) raise<DataError>(where, "empty 'Path'");
      const std::string fl = t.cell(rec, c_fl);
      if (fl != "Frontal" && fl != "Lateral")
        raise<DataError>(where, "column 'Frontal/Lateral': bad value '", fl,
                         "' (want Frontal or Lateral)");
      if (o.frontal_only && fl != "Frontal") {
        ++skipped;
        continue;
      }
      // Path = <dataset folder>/train/patientN/studyM/viewK.jpg: swap the first folder for ours.
      fs::path p(rel);
      auto part = p.begin();
      const std::string first = lower(part->string());
      fs::path image = dir;
      if (first != "train" && first != "valid" && first != "test") ++part;
      std::string patient;
      for (; part != p.end(); ++part) {
        const std::string s = part->string();
        if (s.size() > 7 && s.compare(0, 7, "patient") == 0 && all_digits(s.substr(7)))
          patient = s;
        image /= *part;
      }
      if (patient.empty())
        raise<DataError>(where, "column 'Path': no patientNNNNN folder in '", rel, "'");
      if (!image_present(image.string(), o, where)) {
        ++skipped;
        continue;
      }
      std::string view = "LATERAL";
      if (fl == "Frontal") {
        view = upper(t.cell(rec, c_view));
        if (view.empty()) view = "FRONTAL";
      }
      std::vector<float> values;
      for (size_t k = 0; k < labels.size(); ++k) {
        const std::string v = t.cell(rec, c_labels[k]);
        if (v.empty()) {
          values.push_back(o.blank_as_zero ? 0.0f : kMissing);
        } else if (v == "1" || v == "1.0") {
          values.push_back(1.0f);
        } else if (v == "0" || v == "0.0") {
          values.push_back(0.0f);
        } else if (v == "-1" || v == "-1.0") {
          values.push_back(policies[k] == UncertainPolicy::kOnes    ? 1.0f
                           : policies[k] == UncertainPolicy::kZeros ? 0.0f
                           : policies[k] == UncertainPolicy::kKeep  ? -1.0f
                                                                    : kMissing);
        } else {
          raise<DataError>(where, "column '", labels[k], "': bad value '", v,
                           "' (want 1.0, 0.0, -1.0 or empty)");
        }
      }
      w.add({image.string(), split, patient, view, values, "", ""});
    }
  }
  std::string pol;
  for (size_t k = 0; k < labels.size(); ++k)
    pol += (k ? ", " : "") + labels[k] + "=" + policy_name(policies[k]);
  log_debug("chexpert: uncertain policy ", pol);
  return w.write(skipped, 0);
}

}  // namespace evax
