#include "evax/eval/metrics_report.h"

#include <cmath>
#include <cstdlib>
#include <unordered_map>

#include "evax/core/csv.h"
#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/core/strings.h"

namespace evax {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// One CSV of `evax metrics`: header fields and the data rows with their 1-based line numbers.
struct Csv {
  std::string path;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<size_t> lines;
};

// RFC 4180 fields (ids are often paths, which may hold commas; csv_field quotes them).
Csv read_csv(const std::string& path) {
  Csv csv{path, {}, {}, {}};
  for (CsvRecord& rec : csv_parse(read_file(path), path)) {
    const auto line_no = static_cast<size_t>(rec.line);
    std::vector<std::string> fields = std::move(rec.fields);
    for (auto& f : fields) f = trim(f);
    if (fields.size() == 1 && fields[0].empty()) continue;  // a line of spaces
    if (csv.header.empty()) {
      EVAX_CHECK(DataError, fields[0] == "id", path, ":", line_no,
                 ": the first column must be 'id', got '", fields[0], "'");
      EVAX_CHECK(DataError, fields.size() >= 2, path, ":", line_no, ": no class column");
      csv.header = fields;
      continue;
    }
    EVAX_CHECK(DataError, fields.size() == csv.header.size(), path, ":", line_no, ": ",
               fields.size(), " fields, the header has ", csv.header.size());
    EVAX_CHECK(DataError, !fields[0].empty(), path, ":", line_no, ": empty id");
    csv.rows.push_back(std::move(fields));
    csv.lines.push_back(line_no);
  }
  EVAX_CHECK(DataError, !csv.header.empty(), path, ": empty file (no header)");
  EVAX_CHECK(DataError, !csv.rows.empty(), path, ": no data row");
  return csv;
}

// A finite number filling the whole cell, else nullopt.
std::optional<double> parse_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string join(const std::vector<std::string>& v, size_t from) {
  std::string s;
  for (size_t i = from; i < v.size(); ++i) s += (i > from ? ", " : "") + v[i];
  return s;
}

// class → value or null, in class order.
template <class T, class F>
nlohmann::ordered_json by_class(const ScoredLabels& d, const std::vector<T>& v, F get) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (size_t c = 0; c < d.cols(); ++c) {
    const std::optional<double> x = get(v[c]);
    o[d.classes[c]] = x ? nlohmann::ordered_json(*x) : nlohmann::ordered_json(nullptr);
  }
  return o;
}

}  // namespace

MetricsTask metrics_task_from_string(const std::string& s) {
  if (s == "multilabel") return MetricsTask::kMultilabel;
  if (s == "multiclass") return MetricsTask::kMulticlass;
  raise<UsageError>("--task must be multilabel or multiclass, got '", s, "'");
}

ScoredLabels read_prediction_csvs(const std::string& pred_csv, const std::string& target_csv) {
  const Csv pred = read_csv(pred_csv), target = read_csv(target_csv);
  if (pred.header != target.header) {
    size_t i = 0;
    while (i < pred.header.size() && i < target.header.size() && pred.header[i] == target.header[i])
      ++i;
    raise<DataError>("class columns differ: ", pred_csv, " has [", join(pred.header, 1), "], ",
                     target_csv, " has [", join(target.header, 1), "] (column ", i + 1, ": '",
                     i < pred.header.size() ? pred.header[i] : "", "' vs '",
                     i < target.header.size() ? target.header[i] : "", "')");
  }
  ScoredLabels d;
  d.classes.assign(pred.header.begin() + 1, pred.header.end());
  std::unordered_map<std::string, size_t> class_col;
  for (size_t c = 0; c < d.cols(); ++c) {
    EVAX_CHECK(DataError, !d.classes[c].empty(), pred_csv, ":1: empty class name in column ",
               c + 2);
    EVAX_CHECK(DataError, class_col.emplace(d.classes[c], c).second, pred_csv, ":1: class column '",
               d.classes[c], "' appears twice");
  }
  std::unordered_map<std::string, size_t> target_row;
  for (size_t r = 0; r < target.rows.size(); ++r) {
    const auto [it, fresh] = target_row.emplace(target.rows[r][0], r);
    EVAX_CHECK(DataError, fresh, target_csv, ":", target.lines[r], ": id '", target.rows[r][0],
               "' repeats line ", target.lines[it->second]);
  }
  std::unordered_map<std::string, size_t> pred_row;
  for (size_t r = 0; r < pred.rows.size(); ++r) {
    const std::string& id = pred.rows[r][0];
    const auto [it, fresh] = pred_row.emplace(id, r);
    EVAX_CHECK(DataError, fresh, pred_csv, ":", pred.lines[r], ": id '", id, "' repeats line ",
               pred.lines[it->second]);
    const auto t = target_row.find(id);
    EVAX_CHECK(DataError, t != target_row.end(), "id '", id, "' (", pred_csv, ":", pred.lines[r],
               ") has no row in ", target_csv);
    d.ids.push_back(id);
    for (size_t c = 0; c < d.cols(); ++c) {
      const std::string& p = pred.rows[r][c + 1];
      const std::optional<double> s = parse_number(p);
      EVAX_CHECK(DataError, s.has_value(), pred_csv, ":", pred.lines[r], ": column '", d.classes[c],
                 "': prediction must be a finite number, got '", p, "'");
      d.scores.push_back(*s);
      const std::string& y = target.rows[t->second][c + 1];
      if (y.empty()) {
        d.labels.push_back(kMissingLabel);
        continue;
      }
      const std::optional<double> v = parse_number(y);
      EVAX_CHECK(DataError, v && (*v == 0 || *v == 1), target_csv, ":", target.lines[t->second],
                 ": column '", d.classes[c], "': target must be 0, 1 or empty, got '", y, "'");
      d.labels.push_back(static_cast<int8_t>(*v));
    }
  }
  for (size_t r = 0; r < target.rows.size(); ++r)
    EVAX_CHECK(DataError, pred_row.count(target.rows[r][0]) > 0, "id '", target.rows[r][0], "' (",
               target_csv, ":", target.lines[r], ") has no row in ", pred_csv);
  return d;
}

nlohmann::ordered_json metrics_report(const ScoredLabels& d, MetricsTask task, double threshold) {
  using J = nlohmann::ordered_json;
  const AucResult auc = per_class_auc(d);
  std::vector<std::string> warnings = auc.warnings;
  J j;
  j["task"] = task == MetricsTask::kMultilabel ? "multilabel" : "multiclass";
  j["samples"] = d.rows();
  j["classes"] = d.classes;
  j["auc"] = by_class(d, auc.auc, [](const std::optional<double>& v) { return v; });
  j["mauc"] = auc.mauc ? J(*auc.mauc) : J(nullptr);
  if (task == MetricsTask::kMultilabel) {
    const std::vector<BinaryRates> rates = per_class_rates(d, threshold);
    j["threshold"] = threshold;
    j["sensitivity"] = by_class(d, rates, [](const BinaryRates& b) { return b.sensitivity; });
    j["specificity"] = by_class(d, rates, [](const BinaryRates& b) { return b.specificity; });
    j["ppv"] = by_class(d, rates, [](const BinaryRates& b) { return b.ppv; });
    j["f1"] = by_class(d, rates, [](const BinaryRates& b) { return b.f1; });
    J counts = J::object();
    for (size_t c = 0; c < d.cols(); ++c)
      counts[d.classes[c]] = {
          {"tp", rates[c].tp}, {"fp", rates[c].fp}, {"tn", rates[c].tn}, {"fn", rates[c].fn}};
    j["counts"] = counts;
  } else {
    const MulticlassResult m = multiclass_metrics(d);
    j["accuracy"] = m.accuracy;
    j["per_class_recall"] = by_class(d, m.recall, [](const std::optional<double>& v) { return v; });
    j["per_class_ppv"] = by_class(d, m.ppv, [](const std::optional<double>& v) { return v; });
    j["confusion"] = m.confusion;
    for (size_t c = 0; c < d.cols(); ++c)
      if (!m.recall[c])
        warnings.push_back(str_cat("class '", d.classes[c], "': no sample; recall undefined"));
  }
  j["warnings"] = warnings;
  return j;
}

}  // namespace evax
