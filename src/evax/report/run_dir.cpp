#include "evax/report/run_dir.h"

#include <signal.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "evax/core/files.h"
#include "evax/core/strings.h"

namespace fs = std::filesystem;

namespace evax {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const std::exception&) {
    return nlohmann::json();
  }
}

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

double to_double(const std::string& s) {
  if (s.empty()) return kNaN;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return end == s.c_str() ? kNaN : v;
}

}  // namespace

void run_status_write(const std::string& dir, const std::string& state,
                      const std::string& message) {
  nlohmann::ordered_json j;
  const nlohmann::json old = read_json(dir + "/status.json");
  j["state"] = state;
  j["started"] = old.is_object() && old.contains("started") ? old["started"] : nlohmann::json(now_iso());
  if (state == "running") {
    j["pid"] = static_cast<int64_t>(::getpid());
    j["host"] = host_name();
  } else {
    j["ended"] = now_iso();
  }
  if (!message.empty()) j["message"] = message;
  write_file_atomic(dir + "/status.json", j.dump(2) + "\n");
}

RunStatus run_status(const std::string& dir) {
  RunStatus s;
  const nlohmann::json j = read_json(dir + "/status.json");
  if (j.is_object() && j.contains("state") && j["state"].is_string()) {
    const std::string state = j["state"];
    const std::string msg = j.value("message", "");
    if (state == "finished") return {"finished", msg};
    if (state == "stopped") return {"stopped", msg};
    if (state == "running") {
      const int64_t pid = j.value("pid", int64_t{0});
      // Only this host's process table can tell whether the writer is still alive.
      if (pid > 0 && j.value("host", "") == host_name() && ::kill(static_cast<pid_t>(pid), 0) != 0 &&
          errno == ESRCH)
        return {"stopped", "process " + std::to_string(pid) + " ended without finishing"};
      return {"in progress", ""};
    }
  }
  // Older runs (no status.json): the newest checkpoint against the schedule's length.
  int64_t step = -1, total = -1;
  for (const auto& c : checkpoints_list(dir))
    if (c.step > step) step = c.step, total = c.total_steps;
  if (step >= 0 && total > 0) {
    if (step >= total) return {"finished", "last checkpoint at the schedule's end"};
    return {"in progress",
            "no status.json; last checkpoint at step " + std::to_string(step) + " of " +
                std::to_string(total)};
  }
  if (fs::exists(dir + "/metrics.json") && !fs::exists(dir + "/config.yaml"))
    return {"finished", ""};  // an evaluation output (e.g. the demo's Grad-CAM stage)
  return s;
}

const std::vector<double>* MetricsTable::column(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return &values[i];
  return nullptr;
}

MetricsTable metrics_csv_read(const std::string& path) {
  MetricsTable t;
  if (!fs::exists(path)) return t;
  std::istringstream in(read_file(path));
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::vector<std::string> cells = split_on(line, ',');
    if (header) {
      header = false;
      if (cells.empty() || cells[0] != "step") return t;
      t.columns.assign(cells.begin() + 1, cells.end());
      t.values.assign(t.columns.size(), {});
      continue;
    }
    const double step = to_double(cells[0]);
    if (std::isnan(step) || cells.size() != t.columns.size() + 1) continue;  // a torn line
    t.steps.push_back(step);
    for (size_t c = 0; c < t.columns.size(); ++c) t.values[c].push_back(to_double(cells[c + 1]));
  }
  return t;
}

std::vector<CheckpointInfo> checkpoints_list(const std::string& run_dir) {
  std::vector<CheckpointInfo> out;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  CheckpointInfo best;
  bool have_best = false;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (!e.is_directory()) continue;
    const std::string name = e.path().filename().string();
    // step-N and best; not the temporaries of atomic writes.
    if (name != "best" && (name.rfind("step-", 0) != 0 || name.size() == 5 ||
                           name.find_first_not_of("0123456789", 5) != std::string::npos))
      continue;
    CheckpointInfo c;
    c.name = name;
    c.value = kNaN;
    const nlohmann::json m = read_json((e.path() / "meta.json").string());
    if (m.is_object()) {
      c.step = m.value("step", int64_t{-1});
      c.epoch = m.value("epoch", int64_t{-1});
      c.why = m.value("why", "");
      c.metric = m.value("metric", "");
      if (m.contains("value") && m["value"].is_number()) c.value = m["value"].get<double>();
      if (m.contains("run") && m["run"].is_object())
        c.total_steps = m["run"].value("total_steps", int64_t{-1});
    }
    if (name == "best") {
      c.best = have_best = true;
      best = c;
    } else {
      out.push_back(c);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  if (have_best) {
    for (auto& c : out) c.best = c.step == best.step;
    out.push_back(best);
  }
  return out;
}

std::vector<std::string> sub_runs(const std::string& dir) {
  std::vector<std::pair<fs::file_time_type, std::string>> found;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    const std::string name = it->path().filename().string();
    if (name == "eval" || name == "checkpoints" || name == "tensorboard" || name == "data" ||
        name == "gallery" || name.rfind('.', 0) == 0) {
      it.disable_recursion_pending();
      continue;
    }
    fs::file_time_type t = fs::file_time_type::min();
    bool run = false;
    for (const char* f : {"metrics.csv", "metrics.json", "config.yaml"}) {
      const fs::path p = it->path() / f;
      if (!fs::exists(p, ec)) continue;
      run = true;
      t = std::max(t, fs::last_write_time(p, ec));
    }
    if (run) found.emplace_back(t, it->path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

double json_number_at(const nlohmann::json& j, const std::string& path) {
  const nlohmann::json* cur = &j;
  for (const std::string& part : split_on(path, '/')) {
    if (cur->is_object() && cur->contains(part)) {
      cur = &(*cur)[part];
    } else if (cur->is_array() && !part.empty() &&
               part.find_first_not_of("0123456789") == std::string::npos &&
               std::stoul(part) < cur->size()) {
      cur = &(*cur)[std::stoul(part)];
    } else {
      return kNaN;
    }
  }
  return cur->is_number() ? cur->get<double>() : kNaN;
}

std::string headline_key(const nlohmann::json& metrics, const std::string& preferred) {
  if (!metrics.is_object()) return "";
  if (!preferred.empty() && !std::isnan(json_number_at(metrics, preferred))) return preferred;
  const std::string task = metrics.value("task", "");
  if (task == "multilabel" && metrics.contains("mauc")) return "mauc";
  if (task == "multiclass" && metrics.contains("accuracy")) return "accuracy";
  if (metrics.contains("mDice")) return "mDice";
  if (metrics.contains("overall") && metrics["overall"].is_object() &&
      metrics["overall"].contains("map"))
    return "overall/map";
  return "";
}

Headline run_headline(const std::string& run_dir, const std::string& preferred) {
  Headline h;
  h.value = kNaN;
  std::string split = "test";
  try {
    const YAML::Node cfg = YAML::LoadFile(run_dir + "/config.yaml");
    if (cfg["eval"] && cfg["eval"]["test_split"]) split = cfg["eval"]["test_split"].as<std::string>();
  } catch (const std::exception&) {
  }
  for (const std::string& f : {run_dir + "/eval/" + split + "/metrics.json", run_dir + "/metrics.json"}) {
    if (!fs::exists(f)) continue;
    const nlohmann::json m = read_json(f);
    const std::string key = headline_key(m, preferred);
    if (key.empty()) continue;
    h.file = f;
    h.metric = key;
    h.value = json_number_at(m, key);
    return h;
  }
  return h;
}

}  // namespace evax
