#include "evax/report/report.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/report/html.h"
#include "evax/report/plot.h"
#include "evax/report/run_dir.h"

namespace fs = std::filesystem;

namespace evax {

namespace {

using Json = nlohmann::ordered_json;

const char* kCss = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0 auto;
max-width:1100px;padding:0 16px 40px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-top:18px}h2{border-bottom:2px solid #ccc;padding-bottom:3px;margin-top:36px}
h3{margin-top:24px}h4{margin:16px 0 6px}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;max-height:420px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:.92em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.headline td,tr.best td{background:#fff6d5;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.75em;color:#fff;vertical-align:middle}
.finished{background:#2a8a3a}.in-progress{background:#c78a00}.stopped{background:#b03030}.unknown{background:#777}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots svg{box-sizing:border-box;width:calc(50% - 5px);min-width:320px;height:auto;border:1px solid #eee}
svg text{font-size:11px;fill:#333}svg .pt{font-size:13px;font-weight:600}svg .grid{stroke:#eee}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.gallery figure{margin:0;max-width:260px}
.gallery img{max-width:260px;height:auto;border:1px solid #ddd;display:block}
figcaption{font-size:.8em;color:#555;word-break:break-all}.muted{color:#666;font-size:.9em}
nav ul{columns:2}
)";

std::string esc(const std::string& s) { return html_escape(s); }

std::string exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A table cell holding a number read from `file` (relative to the report's root) at `path`.
std::string num_cell(const std::string& file, const std::string& path, double v) {
  return "<td class=\"n\" data-metric=\"" + esc(file + "#" + path) + "\" data-value=\"" +
         esc(exact(v)) + "\">" + esc(format_metric(v)) + "</td>";
}

std::string join_path(const std::string& a, const std::string& b) {
  return a.empty() ? b : a + "/" + b;
}

std::string scalar_text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  return v.dump();
}

// {key: number or null}: a per-class (or per-metric) column; all-null ones too (undefined
// metrics of a tiny split), so they line up with their siblings.
bool is_number_map(const Json& v) {
  if (!v.is_object() || v.empty()) return false;
  for (const auto& kv : v.items())
    if (!kv.value().is_number() && !kv.value().is_null()) return false;
  return true;
}

// {key: number map or null} with at least one number map: a table, one row per key.
bool is_map_of_number_maps(const Json& v) {
  if (!v.is_object() || v.empty()) return false;
  bool any = false;
  for (const auto& kv : v.items()) {
    if (kv.value().is_null()) continue;
    if (!is_number_map(kv.value())) return false;
    any = true;
  }
  return any;
}

std::string cell(const std::string& file, const std::string& path, const Json& v) {
  if (v.is_number()) return num_cell(file, path, v.get<double>());
  return "<td>" + esc(scalar_text(v)) + "</td>";
}

// A table: rows = keys, columns = the maps, each cell the map's value at the row's key.
std::string key_table(const std::string& file, const std::string& prefix, const std::string& corner,
                      const std::vector<std::pair<std::string, const Json*>>& cols,
                      bool col_is_outer) {
  std::vector<std::string> rows;
  std::set<std::string> seen;
  for (const auto& c : cols)
    for (const auto& kv : c.second->items())
      if (seen.insert(kv.key()).second) rows.push_back(kv.key());
  std::ostringstream h;
  h << "<table><tr><th>" << esc(corner) << "</th>";
  for (const auto& c : cols) h << "<th>" << esc(c.first) << "</th>";
  h << "</tr>";
  for (const auto& r : rows) {
    h << "<tr><th>" << esc(r) << "</th>";
    for (const auto& c : cols) {
      const Json& m = *c.second;
      if (!m.contains(r)) {
        h << "<td></td>";
        continue;
      }
      const std::string path =
          col_is_outer ? join_path(join_path(prefix, c.first), r) : join_path(join_path(prefix, r), c.first);
      h << cell(file, path, m[r]);
    }
    h << "</tr>";
  }
  h << "</table>";
  return h.str();
}

// Renders a metrics.json object: scalars, per-class maps grouped by key set, maps of maps as
// tables, matrices, and whatever is deeper recursively (then as JSON text).
std::string render_metrics(const Json& j, const std::string& file, const std::string& prefix,
                           const std::string& headline, const std::vector<std::string>& classes,
                           int depth) {
  std::ostringstream h;
  std::vector<std::pair<std::string, const Json*>> scalars;
  std::vector<std::vector<std::pair<std::string, const Json*>>> groups;  // same key sets
  std::vector<std::pair<std::string, const Json*>> nested, others;
  for (const auto& kv : j.items()) {
    const Json& v = kv.value();
    if (v.is_primitive()) {
      scalars.emplace_back(kv.key(), &v);
    } else if (is_number_map(v)) {
      bool placed = false;
      for (auto& g : groups) {
        const Json& first = *g.front().second;
        bool same = first.size() == v.size();
        for (const auto& e : v.items()) same = same && first.contains(e.key());
        if (same) {
          g.emplace_back(kv.key(), &v);
          placed = true;
          break;
        }
      }
      if (!placed) groups.push_back({{kv.key(), &v}});
    } else if (is_map_of_number_maps(v)) {
      nested.emplace_back(kv.key(), &v);
    } else {
      others.emplace_back(kv.key(), &v);
    }
  }
  if (!scalars.empty()) {
    h << "<table><tr><th>metric</th><th>value</th></tr>";
    for (const auto& s : scalars) {
      const std::string path = join_path(prefix, s.first);
      h << "<tr" << (path == headline ? " class=\"headline\"" : "") << "><th>" << esc(s.first)
        << "</th>" << cell(file, path, *s.second) << "</tr>";
    }
    h << "</table>";
  }
  for (const auto& g : groups) h << key_table(file, prefix, "", g, true);
  for (const auto& n : nested) {
    h << "<h5>" << esc(join_path(prefix, n.first)) << "</h5>";
    std::vector<std::pair<std::string, const Json*>> cols;
    std::vector<std::string> inner;
    std::set<std::string> seen;
    for (const auto& kv : n.second->items())
      if (kv.value().is_object())
        for (const auto& e : kv.value().items())
          if (seen.insert(e.key()).second) inner.push_back(e.key());
    // Transposed: one row per outer key (e.g. class), one column per inner key (e.g. dice).
    h << "<table><tr><th></th>";
    for (const auto& c : inner) h << "<th>" << esc(c) << "</th>";
    h << "</tr>";
    for (const auto& kv : n.second->items()) {
      h << "<tr><th>" << esc(kv.key()) << "</th>";
      for (const auto& c : inner) {
        if (!kv.value().is_object() || !kv.value().contains(c)) {
          h << "<td></td>";
          continue;
        }
        h << cell(file, join_path(join_path(join_path(prefix, n.first), kv.key()), c),
                  kv.value()[c]);
      }
      h << "</tr>";
    }
    h << "</table>";
  }
  for (const auto& o : others) {
    const Json& v = *o.second;
    const std::string path = join_path(prefix, o.first);
    if (v.is_array() && !v.empty() && std::all_of(v.begin(), v.end(), [](const Json& e) {
          return e.is_string();
        })) {
      h << "<p><b>" << esc(path) << "</b>: ";
      for (size_t i = 0; i < v.size(); ++i) h << (i ? ", " : "") << esc(v[i].get<std::string>());
      h << "</p>";
    } else if (v.is_array() && !v.empty() && std::all_of(v.begin(), v.end(), [](const Json& r) {
                 return r.is_array() && std::all_of(r.begin(), r.end(),
                                                    [](const Json& e) { return e.is_number(); });
               })) {
      // A matrix (e.g. the confusion matrix, rows = true class).
      const bool labelled = classes.size() == v.size();
      h << "<h5>" << esc(path) << "</h5><table>";
      if (labelled) {
        h << "<tr><th></th>";
        for (const auto& c : classes) h << "<th>" << esc(c) << "</th>";
        h << "</tr>";
      }
      for (size_t r = 0; r < v.size(); ++r) {
        h << "<tr>" << (labelled ? "<th>" + esc(classes[r]) + "</th>" : "");
        for (size_t c = 0; c < v[r].size(); ++c)
          h << num_cell(file, path + "/" + std::to_string(r) + "/" + std::to_string(c),
                        v[r][c].get<double>());
        h << "</tr>";
      }
      h << "</table>";
    } else if ((v.is_object() || v.is_array()) && v.empty()) {
      h << "<p><b>" << esc(path) << "</b>: none</p>";
    } else if (v.is_object() && depth < 3) {
      h << "<h5>" << esc(path) << "</h5>"
        << render_metrics(v, file, path, headline, classes, depth + 1);
    } else {
      h << "<details><summary>" << esc(path) << "</summary><pre>" << esc(v.dump(2))
        << "</pre></details>";
    }
  }
  return h.str();
}

std::vector<std::string> list_images(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg"))
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string gallery(const std::string& title, std::vector<std::string> images,
                    const ReportOptions& o) {
  if (images.empty()) return "";
  // all.png (every ROC curve in one) first.
  std::stable_partition(images.begin(), images.end(),
                        [](const std::string& p) { return fs::path(p).stem() == "all"; });
  std::ostringstream h;
  const size_t shown = std::min(images.size(), static_cast<size_t>(std::max(0, o.max_gallery)));
  h << "<h4>" << esc(title) << "</h4>";
  if (shown < images.size())
    h << "<p class=\"muted\">showing " << shown << " of " << images.size() << " images</p>";
  h << "<div class=\"gallery\">";
  EmbedImageOptions eo;
  eo.max_side = o.max_image_side;
  for (size_t i = 0; i < shown; ++i) {
    const std::string uri = image_data_uri(images[i], eo);
    const std::string name = fs::path(images[i]).filename().string();
    h << "<figure>";
    if (uri.empty())
      h << "<p class=\"muted\">cannot read " << esc(name) << "</p>";
    else
      h << "<img alt=\"" << esc(name) << "\" src=\"" << uri << "\">";
    h << "<figcaption>" << esc(name) << "</figcaption></figure>";
  }
  h << "</div>";
  return h.str();
}

Json read_json(const std::string& path) {
  try {
    return Json::parse(read_file(path));
  } catch (const std::exception&) {
    return Json();
  }
}

std::string rel(const std::string& path, const std::string& root) {
  const std::string r = fs::path(path).lexically_relative(root).generic_string();
  return r.empty() || r == "." ? "(top level)" : r;
}

std::string state_badge(const RunStatus& s) {
  std::string cls = s.state;
  std::replace(cls.begin(), cls.end(), ' ', '-');
  return "<span class=\"badge " + esc(cls) + "\">" + esc(s.state) + "</span>";
}

// What kind of run a directory is, from its config's sections.
std::string run_kind(const YAML::Node& cfg, const std::string& dir) {
  if (!cfg || !cfg.IsMap()) {
    const Json m = read_json(dir + "/metrics.json");
    if (m.is_object() && m.contains("overall")) return "Grad-CAM localisation";
    return "evaluation";
  }
  if (cfg["stages"]) return "demo (MIM pretraining)";
  if (cfg["segment"] || (cfg["model"] && cfg["model"]["channels"])) return "segmentation";
  if (cfg["finetune"]) return "classification finetuning";
  if (cfg["target"] || cfg["masking"]) return "MIM pretraining";
  if (cfg["data"] && cfg["data"]["num_bits"]) return "dense teacher";
  return "run";
}

void flatten_yaml(const YAML::Node& n, const std::string& prefix,
                  std::vector<std::pair<std::string, std::string>>* out) {
  if (n.IsMap()) {
    for (const auto& kv : n) flatten_yaml(kv.second, join_path(prefix, kv.first.as<std::string>()), out);
    if (n.size() == 0) out->emplace_back(prefix, "{}");
    return;
  }
  YAML::Emitter e;
  e << YAML::Flow << n;
  out->emplace_back(prefix.empty() ? "." : prefix, e.c_str());
}

// Whether a config value equals a default given as YAML text: numbers by value (1e-3 = 0.001),
// lists element by element, everything else by its text.
bool same_config_value(const YAML::Node& a, const YAML::Node& b) {
  if (a.IsSequence() && b.IsSequence()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!same_config_value(a[i], b[i])) return false;
    return true;
  }
  if (!a.IsScalar() || !b.IsScalar()) return false;
  double x = 0, y = 0;
  if (YAML::convert<double>::decode(a, x) && YAML::convert<double>::decode(b, y)) return x == y;
  bool p = false, q = false;
  if (YAML::convert<bool>::decode(a, p) && YAML::convert<bool>::decode(b, q)) return p == q;
  return a.Scalar() == b.Scalar();
}

std::string config_section(const std::string& dir) {
  std::ostringstream h;
  std::string text;
  try {
    text = read_file(dir + "/config.yaml");
  } catch (const std::exception&) {
    return "";
  }
  h << "<h3>Config</h3>";
  const Json origins = read_json(dir + "/config_origins.json");
  // Every key the command reads with its default (YAML text; null = required), when recorded.
  const Json defaults = read_json(dir + "/config_defaults.json");
  const bool have_defaults = defaults.is_object();
  std::vector<std::pair<std::string, std::string>> leaves;
  YAML::Node root;
  try {
    root = YAML::Load(text);
    flatten_yaml(root, "", &leaves);
  } catch (const std::exception& e) {
    h << "<p class=\"muted\">config.yaml does not parse: " << esc(e.what()) << "</p>";
  }
  // Origins are recorded per key; a list element takes its list's.
  auto origin_of = [&](std::string path) -> std::string {
    if (!origins.is_object()) return "";
    for (;;) {
      if (origins.contains(path) && origins[path].is_string()) return origins[path];
      const auto dot = path.rfind('/');
      if (dot == std::string::npos) return "";
      path = path.substr(0, dot);
    }
  };
  auto node_at = [&](const std::string& path) {
    YAML::Node n = YAML::Clone(root);
    std::stringstream ss(path);
    for (std::string part; std::getline(ss, part, '/');) {
      if (!n.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
      n.reset(n[part]);
    }
    return n;
  };
  // Rows: every value config.yaml gives, the ones that differ from the code's default first
  // marked; then the keys it leaves at their defaults.
  struct Row {
    std::string path, value, dflt, origin;
    bool differs;
  };
  std::vector<Row> rows;
  std::set<std::string> given;
  size_t differing = 0;
  for (const auto& [path, value] : leaves) {
    given.insert(path);
    Row r{path, value, "", origin_of(path), true};
    if (have_defaults && defaults.contains(path)) {
      const Json& d = defaults[path];
      r.dflt = d.is_string() ? d.get<std::string>() : "(required)";
      if (d.is_string()) {
        try {
          r.differs = !same_config_value(node_at(path), YAML::Load(r.dflt));
        } catch (const std::exception&) {
        }
      }
    }
    differing += r.differs;
    rows.push_back(r);
  }
  std::vector<std::pair<std::string, std::string>> untouched;
  if (have_defaults)
    for (const auto& kv : defaults.items())
      if (!given.count(kv.key()) && kv.value().is_string())
        untouched.emplace_back(kv.key(), kv.value().get<std::string>());
  auto shown = [](std::string p) {
    std::replace(p.begin(), p.end(), '/', '.');
    return p;
  };
  if (have_defaults)
    h << "<p class=\"muted\">The resolved config (config.yaml): " << differing << " of "
      << rows.size() << " values differ from the code's defaults (highlighted, with where each "
      << "came from); " << untouched.size() << " more keys take their defaults (below).</p>";
  else
    h << "<p class=\"muted\">The resolved config (config.yaml). Every value listed was given by a "
         "config file or an override; keys not listed take the code's defaults."
      << (origins.is_object() ? "" : " Origins were not recorded for this run.") << "</p>";
  h << "<table><tr><th>key</th><th>value</th>" << (have_defaults ? "<th>default</th>" : "")
    << "<th>origin</th></tr>";
  for (const auto& r : rows) {
    const bool mark = have_defaults ? r.differs : r.origin.rfind("--set", 0) == 0;
    h << "<tr" << (mark ? " class=\"headline\"" : "") << "><td><code>" << esc(shown(r.path))
      << "</code></td><td><code>" << esc(r.value) << "</code></td>";
    if (have_defaults)
      h << "<td>" << (r.dflt.empty() ? "" : "<code>" + esc(r.dflt) + "</code>") << "</td>";
    h << "<td>" << esc(r.origin) << "</td></tr>";
  }
  h << "</table>";
  if (!untouched.empty()) {
    h << "<details><summary>Keys at their defaults (" << untouched.size()
      << ")</summary><table><tr><th>key</th><th>default</th></tr>";
    for (const auto& [path, d] : untouched)
      h << "<tr><td><code>" << esc(shown(path)) << "</code></td><td><code>" << esc(d)
        << "</code></td></tr>";
    h << "</table></details>";
  }
  h << "<details><summary>config.yaml</summary><pre>" << esc(text) << "</pre></details>";
  return h.str();
}

void flatten_json(const Json& j, const std::string& prefix,
                  std::vector<std::pair<std::string, std::string>>* out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& kv : j.items()) flatten_json(kv.value(), join_path(prefix, kv.key()), out);
    return;
  }
  if (j.is_array() && !j.empty() && std::all_of(j.begin(), j.end(), [](const Json& e) { return e.is_primitive(); })) {
    std::string s;
    for (size_t i = 0; i < j.size(); ++i) s += (i ? ", " : "") + scalar_text(j[i]);
    out->emplace_back(prefix, s);
    return;
  }
  out->emplace_back(prefix, j.is_string() ? j.get<std::string>() : j.dump());
}

std::string environment_section(const std::string& dir) {
  const Json env = read_json(dir + "/environment.json");
  if (!env.is_object()) return "";
  std::vector<std::pair<std::string, std::string>> rows;
  flatten_json(env, "", &rows);
  std::ostringstream h;
  h << "<h3>Environment</h3><table>";
  for (const auto& [k, v] : rows)
    h << "<tr><th>" << esc(k) << "</th><td>" << esc(v) << "</td></tr>";
  h << "</table>";
  return h.str();
}

std::string checkpoints_section(const std::string& dir) {
  const auto cks = checkpoints_list(dir);
  if (cks.empty()) return "";
  std::ostringstream h;
  h << "<h3>Checkpoints</h3><table><tr><th>checkpoint</th><th>step</th><th>epoch</th>"
       "<th>why</th><th>selection metric</th><th></th></tr>";
  for (const auto& c : cks) {
    h << "<tr" << (c.best ? " class=\"best\"" : "") << "><td><code>checkpoints/" << esc(c.name)
      << "</code></td><td class=\"n\">" << c.step << "</td><td class=\"n\">" << c.epoch
      << "</td><td>" << esc(c.why) << "</td><td>"
      << (c.metric.empty() ? "" : esc(c.metric) + " " + esc(format_metric(c.value))) << "</td><td>"
      << (c.best ? (c.name == "best" ? "best (selected)" : "best") : "") << "</td></tr>";
  }
  h << "</table>";
  return h.str();
}

double median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string curves_section(const std::string& dir, const ReportOptions& o) {
  const MetricsTable t = metrics_csv_read(dir + "/metrics.csv");
  if (t.steps.empty()) return "";
  PlotOptions po;
  po.max_points = o.max_plot_points;
  auto series = [&](const std::string& col, const std::string& name) {
    const auto* v = t.column(col);
    return PlotSeries{name.empty() ? col : name, t.steps, v ? *v : std::vector<double>{}};
  };
  std::vector<std::string> plots;
  auto plot = [&](const std::string& title, std::vector<PlotSeries> s, bool log_y = false) {
    s.erase(std::remove_if(s.begin(), s.end(), [](const PlotSeries& p) { return p.y.empty(); }),
            s.end());
    if (s.empty()) return;
    po.title = title;
    po.log_y = log_y;
    plots.push_back(svg_line_plot(s, po));
  };
  std::set<std::string> done = {"epoch"};
  std::vector<PlotSeries> loss = {series("loss", "train loss")};
  for (const std::string c : {"eval/loss", "eval/ema/loss"})
    if (t.column(c)) loss.push_back(series(c, ""));
  plot("loss", loss);
  plot("learning rate", {series("lr", "")});
  plot("throughput (images/s)", {series("images_per_s", "")});
  plot("gradient norm", {series("grad_norm", "")});
  done.insert({"loss", "eval/loss", "eval/ema/loss", "lr", "images_per_s", "grad_norm"});
  // Evaluation metrics: the summary ones together, per-class groups (eval/auc/<class>) each.
  std::vector<PlotSeries> eval_main;
  std::map<std::string, std::vector<PlotSeries>> eval_groups;
  for (const auto& c : t.columns) {
    if (done.count(c) || c.rfind("eval/", 0) != 0) continue;
    std::string k = c.substr(5);
    std::string group = k.rfind("ema/", 0) == 0 ? "ema/" : "";
    if (!group.empty()) k = k.substr(4);
    const auto slash = k.find('/');
    if (slash == std::string::npos) eval_main.push_back(series(c, c.substr(5)));
    else eval_groups[group + k.substr(0, slash)].push_back(series(c, k.substr(slash + 1)));
    done.insert(c);
  }
  plot("evaluation metrics", eval_main);
  for (auto& [g, s] : eval_groups) plot("evaluation: " + g + " per class", s);
  for (const auto& c : t.columns)
    if (!done.count(c)) plot(c, {series(c, "")});
  std::ostringstream h;
  h << "<h3>Curves</h3>";
  if (const auto* ips = t.column("images_per_s"))
    h << "<p>throughput: median " << esc(format_metric(median(*ips), 1))
      << " images/s over " << t.steps.size() << " logged steps (last step "
      << esc(format_metric(t.steps.back())) << ")</p>";
  h << "<div class=\"plots\">";
  for (const auto& p : plots) h << p;
  h << "</div>";
  return h.str();
}

std::string evaluations_section(const std::string& dir, const std::string& root,
                                const ReportOptions& o) {
  std::ostringstream h;
  std::vector<fs::path> splits;
  std::error_code ec;
  if (fs::is_directory(dir + "/eval", ec))
    for (const auto& e : fs::directory_iterator(dir + "/eval", ec))
      if (e.is_directory() && fs::exists(e.path() / "metrics.json")) splits.push_back(e.path());
  std::sort(splits.begin(), splits.end());
  // A Grad-CAM stage keeps its metrics.json at its own top.
  const bool own = fs::exists(dir + "/metrics.json");
  if (splits.empty() && !own) return "";
  h << "<h3>Evaluations</h3>";
  auto one = [&](const fs::path& d, const std::string& title) {
    const std::string file = (d / "metrics.json").string();
    const Json m = read_json(file);
    h << "<h4>" << esc(title) << " <span class=\"muted\">(" << esc(rel(file, root))
      << ")</span></h4>";
    if (!m.is_object()) {
      h << "<p class=\"muted\">metrics.json does not parse</p>";
      return;
    }
    std::vector<std::string> classes;
    if (m.contains("classes") && m["classes"].is_array())
      for (const auto& c : m["classes"])
        if (c.is_string()) classes.push_back(c);
    h << render_metrics(m, rel(file, root), "", headline_key(nlohmann::json::parse(m.dump())),
                        classes, 0);
    std::vector<std::pair<std::string, std::vector<std::string>>> galleries;
    const auto here = list_images(d);
    if (!here.empty()) galleries.push_back({"images", here});
    for (const auto& e : fs::directory_iterator(d, ec)) {
      if (!e.is_directory()) continue;
      const auto imgs = list_images(e.path());
      const std::string name = e.path().filename().string();
      const std::string t = name == "roc"        ? "ROC curves"
                            : name == "gallery"  ? "Grad-CAM gallery"
                            : name == "overlays" ? "overlays (prediction tinted, label outlined in red)"
                                                 : name;
      if (!imgs.empty()) galleries.push_back({t, imgs});
    }
    std::sort(galleries.begin(), galleries.end());
    for (const auto& [t, imgs] : galleries) h << gallery(t, imgs, o);
  };
  for (const auto& s : splits) one(s, "split " + s.filename().string());
  if (own) one(fs::path(dir), "localisation");
  return h.str();
}

std::string log_section(const std::string& dir, int lines) {
  std::string text;
  try {
    text = read_file(dir + "/log.txt");
  } catch (const std::exception&) {
    return "";
  }
  size_t pos = text.size();
  if (pos && text.back() == '\n') --pos;
  for (int n = 0; n < lines && pos != std::string::npos && pos > 0; ++n)
    pos = text.rfind('\n', pos - 1);
  const std::string tail = pos == std::string::npos ? text : text.substr(pos + 1);
  return "<details><summary>log.txt (last " + std::to_string(lines) + " lines)</summary><pre>" +
         esc(tail) + "</pre></details>";
}

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z", &tm);
  return buf;
}

}  // namespace

std::string report_html(const std::string& run_dir, const ReportOptions& o) {
  if (!fs::is_directory(run_dir)) raise<DataError>(run_dir, ": not a run directory");
  const std::string root = fs::weakly_canonical(run_dir).string();
  std::vector<std::string> runs = {root};
  for (const auto& s : sub_runs(root)) runs.push_back(s);
  // Stage order: the order the runs finished writing (the demo: teacher, pretraining, ...).
  {
    auto stamp = [](const std::string& d) {
      std::error_code ec;
      fs::file_time_type t = fs::file_time_type::min();
      for (const char* f : {"metrics.csv", "metrics.json", "config.yaml"}) {
        const fs::path p = fs::path(d) / f;
        if (fs::exists(p, ec)) t = std::max(t, fs::last_write_time(p, ec));
      }
      return t;
    };
    std::stable_sort(runs.begin(), runs.end(),
                     [&](const std::string& a, const std::string& b) { return stamp(a) < stamp(b); });
  }
  const std::string name = fs::path(root).filename().string();
  const RunStatus top = run_status(root);
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
       "<link rel=\"icon\" href=\"data:,\"><title>evax report: "
    << esc(name) << "</title><style>" << kCss << "</style></head><body>\n";
  h << "<h1>evax run report: " << esc(name) << " " << state_badge(top) << "</h1>";
  h << "<p class=\"muted\">" << esc(root) << " · written " << esc(now_text())
    << (o.generator.empty() ? "" : " by " + esc(o.generator)) << "</p>";
  if (!top.detail.empty()) h << "<p>" << esc(top.detail) << "</p>";

  // Summary: one row per run with its state and headline test number.
  h << "<h2 id=\"summary\">Summary</h2><table><tr><th>run</th><th>kind</th><th>status</th>"
       "<th>steps</th><th>headline</th><th>value</th></tr>";
  std::vector<YAML::Node> cfgs;
  for (size_t i = 0; i < runs.size(); ++i) {
    YAML::Node cfg;
    try {
      cfg = YAML::LoadFile(runs[i] + "/config.yaml");
    } catch (const std::exception&) {
    }
    cfgs.push_back(cfg);
    const RunStatus st = run_status(runs[i]);
    int64_t step = -1, total = -1;
    for (const auto& c : checkpoints_list(runs[i]))
      if (c.step > step) step = c.step, total = c.total_steps;
    const Headline hl = run_headline(runs[i]);
    h << "<tr><td><a href=\"#run-" << i << "\">" << esc(rel(runs[i], root)) << "</a></td><td>"
      << esc(run_kind(cfg, runs[i])) << "</td><td>" << state_badge(st) << "</td><td class=\"n\">"
      << (step >= 0 ? std::to_string(step) + (total > 0 ? " / " + std::to_string(total) : "") : "")
      << "</td>";
    if (hl.file.empty())
      h << "<td></td><td></td>";
    else
      h << "<td>" << esc(rel(hl.file, root) + " " + hl.metric) << "</td>"
        << num_cell(rel(hl.file, root), hl.metric, hl.value);
    h << "</tr>";
  }
  h << "</table>";
  const bool environment_shared = fs::exists(root + "/environment.json");
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string& d = runs[i];
    const RunStatus st = run_status(d);
    h << "\n<section id=\"run-" << i << "\"><h2>" << esc(rel(d, root)) << ": "
      << esc(run_kind(cfgs[i], d)) << " " << state_badge(st) << "</h2>";
    if (!st.detail.empty()) h << "<p>" << esc(st.detail) << "</p>";
    h << evaluations_section(d, root, o);
    h << curves_section(d, o);
    h << checkpoints_section(d);
    h << config_section(d);
    // The demo's stages share the top run's environment: shown once.
    if (d == root || !environment_shared) h << environment_section(d);
    h << log_section(d, o.log_tail_lines);
    h << "</section>";
  }
  h << "\n</body></html>\n";
  return h.str();
}

std::string report_write(const std::string& run_dir, const std::string& out,
                         const ReportOptions& o) {
  const std::string path = out.empty() ? run_dir + "/report.html" : out;
  const std::string html = report_html(run_dir, o);
  try {
    write_file_atomic(path, html);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    raise<DataError>(path, ": cannot write the report: ", e.what());
  }
  return path;
}

}  // namespace evax
