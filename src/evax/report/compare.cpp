#include "evax/report/compare.h"

#include <glob.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "evax/core/error.h"
#include "evax/report/html.h"

namespace fs = std::filesystem;

namespace evax {

namespace {

void flatten(const YAML::Node& n, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>* out) {
  if (n.IsMap() && n.size() > 0) {
    for (const auto& kv : n)
      flatten(kv.second, (prefix.empty() ? "" : prefix + ".") + kv.first.as<std::string>(), out);
    return;
  }
  YAML::Emitter e;
  e << YAML::Flow << n;
  out->emplace_back(prefix, e.c_str());
}

bool is_run_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) &&
         (fs::exists(p / "config.yaml", ec) || fs::exists(p / "metrics.csv", ec));
}

std::string pct(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// The numbers of one row: the run's headline in percent, the paper's and the difference.
struct Row {
  std::string metric, evax, paper, diff, table, source, state;
  double evax_value = NAN;
};

Row row_of(const RunSummary& r) {
  Row row;
  row.metric = r.headline.metric.empty() ? (r.paper.present ? r.paper.metric : "") : r.headline.metric;
  row.evax_value = r.headline.value * 100;
  row.evax = pct(row.evax_value);
  row.state = r.status.state;
  if (r.status.state == "in progress" && !std::isfinite(r.headline.value))
    row.evax = "- (in progress)";
  else if (r.status.state == "in progress")
    row.evax += " (in progress)";
  if (r.paper.present) {
    row.paper = pct(r.paper.value);
    row.diff = std::isfinite(row.evax_value) ? pct(row.evax_value - r.paper.value) : "-";
    if (!row.diff.empty() && row.diff[0] != '-') row.diff = "+" + row.diff;
    row.table = r.paper.table;
    row.source = r.paper.source;
  }
  return row;
}

}  // namespace

RunSummary run_summary(const std::string& dir) {
  if (!fs::is_directory(dir)) raise<DataError>(dir, ": not a run directory");
  RunSummary s;
  s.dir = dir;
  s.status = run_status(dir);
  try {
    const YAML::Node cfg = YAML::LoadFile(dir + "/config.yaml");
    flatten(cfg, "", &s.config);
    if (const YAML::Node p = cfg["paper"]; p && p.IsMap()) {
      s.paper.present = true;
      s.paper.table = p["table"] ? p["table"].as<std::string>() : "";
      s.paper.metric = p["metric"] ? p["metric"].as<std::string>() : "";
      s.paper.source = p["source"] ? p["source"].as<std::string>() : "";
      s.paper.value = p["value"] ? p["value"].as<double>() : NAN;
    }
  } catch (const std::exception&) {
    // No or unreadable config.yaml: the run is compared without its config.
  }
  s.headline = run_headline(dir, s.paper.metric);
  return s;
}

std::vector<std::string> expand_run_args(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& p) {
    std::error_code ec;
    const std::string key = fs::weakly_canonical(p, ec).string();
    if (seen.insert(key).second) out.push_back(p);
  };
  for (const auto& a : args) {
    if (a.find_first_of("*?[") == std::string::npos) {
      if (!fs::is_directory(a)) raise<UsageError>(a, ": no such run directory");
      add(a);
      continue;
    }
    glob_t g{};
    const int rc = ::glob(a.c_str(), GLOB_TILDE, nullptr, &g);
    std::vector<std::string> found;
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (is_run_dir(g.gl_pathv[i])) found.push_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (found.empty()) raise<UsageError>("`", a, "` matches no run directory");
    std::sort(found.begin(), found.end());
    for (const auto& f : found) add(f);
  }
  if (out.empty()) raise<UsageError>("no run directories given");
  return out;
}

CompareTables compare_runs(const std::vector<RunSummary>& runs) {
  std::vector<Row> rows;
  for (const auto& r : runs) rows.push_back(row_of(r));
  // Config keys whose value differs between the runs (a missing key counts as a value).
  std::vector<std::string> keys;
  std::set<std::string> seen;
  std::vector<std::map<std::string, std::string>> maps;
  for (const auto& r : runs) {
    maps.emplace_back(r.config.begin(), r.config.end());
    for (const auto& kv : r.config)
      if (seen.insert(kv.first).second) keys.push_back(kv.first);
  }
  std::vector<std::string> diff_keys;
  for (const auto& k : keys) {
    std::set<std::string> values;
    for (const auto& m : maps) values.insert(m.count(k) ? "=" + m.at(k) : "missing");
    if (values.size() > 1) diff_keys.push_back(k);
  }
  auto value_of = [&](size_t i, const std::string& k) {
    return maps[i].count(k) ? maps[i].at(k) : std::string("(absent)");
  };

  std::ostringstream md;
  md << "| run | status | metric | evax (%) | paper (%) | difference (points) | paper table | "
        "source |\n|---|---|---|---:|---:|---:|---|---|\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const Row& r = rows[i];
    md << "| " << markdown_cell(runs[i].dir) << " | " << markdown_cell(r.state) << " | " << markdown_cell(r.metric)
       << " | " << r.evax << " | " << (r.paper.empty() ? "-" : r.paper) << " | "
       << (r.diff.empty() ? "-" : r.diff) << " | " << markdown_cell(r.table) << " | "
       << markdown_cell(r.source) << " |\n";
  }
  if (runs.size() > 1) {
    md << "\n";
    if (diff_keys.empty()) {
      md << "The runs' configs are identical.\n";
    } else {
      md << "Config differences:\n\n| key |";
      for (const auto& r : runs) md << " " << markdown_cell(r.dir) << " |";
      md << "\n|---|";
      for (size_t i = 0; i < runs.size(); ++i) md << "---|";
      md << "\n";
      for (const auto& k : diff_keys) {
        md << "| " << markdown_cell(k) << " |";
        for (size_t i = 0; i < runs.size(); ++i) md << " " << markdown_cell(value_of(i, k)) << " |";
        md << "\n";
      }
    }
  }

  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" "
       "href=\"data:,\"><title>evax compare</title><style>body{font-family:system-ui,Arial,"
       "sans-serif;margin:20px}table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px "
       "solid #ccc;padding:3px 8px}td.n{text-align:right}tr.in-progress td{background:#fff6d5}"
       "</style></head><body><h1>evax compare</h1><table><tr><th>run</th><th>status</th>"
       "<th>metric</th><th>evax (%)</th><th>paper (%)</th><th>difference (points)</th>"
       "<th>paper table</th><th>source</th></tr>";
  for (size_t i = 0; i < runs.size(); ++i) {
    const Row& r = rows[i];
    std::string cls = r.state;
    std::replace(cls.begin(), cls.end(), ' ', '-');
    h << "<tr class=\"" << html_escape(cls) << "\"><td>" << html_escape(runs[i].dir) << "</td><td>"
      << html_escape(r.state) << "</td><td>" << html_escape(r.metric) << "</td><td class=\"n\">"
      << html_escape(r.evax) << "</td><td class=\"n\">" << html_escape(r.paper.empty() ? "-" : r.paper)
      << "</td><td class=\"n\">" << html_escape(r.diff.empty() ? "-" : r.diff) << "</td><td>"
      << html_escape(r.table) << "</td><td>" << html_escape(r.source) << "</td></tr>";
  }
  h << "</table>";
  if (runs.size() > 1) {
    if (diff_keys.empty()) {
      h << "<p>The runs' configs are identical.</p>";
    } else {
      h << "<h2>Config differences</h2><table><tr><th>key</th>";
      for (const auto& r : runs) h << "<th>" << html_escape(r.dir) << "</th>";
      h << "</tr>";
      for (const auto& k : diff_keys) {
        h << "<tr><td><code>" << html_escape(k) << "</code></td>";
        for (size_t i = 0; i < runs.size(); ++i)
          h << "<td><code>" << html_escape(value_of(i, k)) << "</code></td>";
        h << "</tr>";
      }
      h << "</table>";
    }
  }
  h << "</body></html>\n";
  return {md.str(), h.str()};
}

}  // namespace evax
