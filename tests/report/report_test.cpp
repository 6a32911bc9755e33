// report.html from a small synthetic run directory built here: the numbers shown equal the
// metrics.json files, everything from the files is escaped, nothing is fetched, curves stay
// bounded however long the run, the best checkpoint is marked and the run's state is read right.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/image.h"
#include "evax/report/html.h"
#include "evax/report/plot.h"
#include "evax/report/report.h"
#include "evax/report/run_dir.h"
#include "report_fixture.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Every data-metric="file#path" data-value="v" pair of the page, with the text shown.
struct Shown {
  std::string key, value, text;
};
std::vector<Shown> shown_metrics(const std::string& html) {
  std::vector<Shown> out;
  const std::string tag = "data-metric=\"";
  for (size_t p = html.find(tag); p != std::string::npos; p = html.find(tag, p + 1)) {
    Shown s;
    const size_t k0 = p + tag.size(), k1 = html.find('"', k0);
    s.key = html.substr(k0, k1 - k0);
    const std::string vtag = "\" data-value=\"";
    REQUIRE(html.compare(k1, vtag.size(), vtag) == 0);
    const size_t v0 = k1 + vtag.size(), v1 = html.find('"', v0);
    s.value = html.substr(v0, v1 - v0);
    REQUIRE(html.compare(v1, 2, "\">") == 0);
    const size_t t0 = v1 + 2, t1 = html.find("</td>", t0);
    s.text = html.substr(t0, t1 - t0);
    out.push_back(s);
  }
  return out;
}

// The values of every `name="..."` attribute of the page (plain scanning: std::regex recurses per
// character and overflows the stack on data: URIs).
std::vector<std::string> attributes(const std::string& html, const std::string& name) {
  std::vector<std::string> out;
  const std::string tag = " " + name + "=\"";
  for (size_t p = html.find(tag); p != std::string::npos; p = html.find(tag, p + 1)) {
    const size_t v0 = p + tag.size();
    out.push_back(html.substr(v0, html.find('"', v0) - v0));
  }
  return out;
}

// Every number of a metrics.json at a '/'-path (objects and arrays walked).
void numbers(const json& j, const std::string& prefix, std::map<std::string, double>* out) {
  if (j.is_number()) {
    (*out)[prefix] = j.get<double>();
  } else if (j.is_object()) {
    for (const auto& kv : j.items()) numbers(kv.value(), prefix.empty() ? kv.key() : prefix + "/" + kv.key(), out);
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) numbers(j[i], prefix + "/" + std::to_string(i), out);
  }
}

std::string unescape(std::string s) {
  for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"}, {"&amp;", "&"}}) {
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
      s.replace(p, from.size(), to);
  }
  return s;
}

}  // namespace

TEST_CASE("report: every number of each metrics.json is shown and equals the file") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  const std::string html = report_html(dir);
  const auto shown = shown_metrics(html);
  REQUIRE(!shown.empty());
  std::map<std::string, std::map<std::string, double>> expected;  // file → path → value
  for (const char* f : {"eval/test/metrics.json", "eval/val/metrics.json", "seg/eval/test/metrics.json"})
    numbers(json::parse(read_file(dir + "/" + f)), "", &expected[f]);
  std::map<std::string, std::set<std::string>> seen;
  for (const auto& s : shown) {
    const std::string key = unescape(s.key);
    const auto hash = key.find('#');
    REQUIRE(hash != std::string::npos);
    const std::string file = key.substr(0, hash), path = key.substr(hash + 1);
    INFO(key);
    REQUIRE(expected.count(file));
    REQUIRE(expected[file].count(path));
    const double v = expected[file][path];
    CHECK(std::stod(s.value) == v);  // exact (17 digits)
    CHECK(s.text == html_escape(format_metric(v)));
    seen[file].insert(path);
  }
  // Nothing left out: every number of every metrics.json is on the page.
  for (const auto& [file, paths] : expected)
    for (const auto& [path, v] : paths) {
      INFO(file << "#" << path);
      CHECK(seen[file].count(path));
    }
  // The headline (mAUC) is highlighted and in the summary.
  CHECK(html.find("<tr class=\"headline\"><th>mauc</th>") != std::string::npos);
  CHECK(html.find("eval/test/metrics.json mauc") != std::string::npos);
}

TEST_CASE("report: text from the run's files is escaped, and nothing is fetched or run") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  const std::string html = report_html(dir);
  // The fixture's class name, config value and log line carry markup.
  CHECK(html.find(test::kHostile) == std::string::npos);
  CHECK(html.find(html_escape(test::kHostile)) != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  // Every src= is a data: URI; every href is in-page or data:.
  const auto srcs = attributes(html, "src"), hrefs = attributes(html, "href");
  for (const auto& v : srcs) CHECK(v.rfind("data:image/png;base64,", 0) == 0);
  for (const auto& v : hrefs) CHECK((v.rfind("data:", 0) == 0 || v.rfind("#", 0) == 0));
  const size_t images = srcs.size();
  // ROC all.png + one per class, and the overlay; the seg run's gallery is bounded by max_gallery.
  CHECK(images >= 3);
  // No URL but SVG's namespace name (an identifier, never fetched).
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t p = html.find(needle); p != std::string::npos; p = html.find(needle, p + 1)) ++n;
    return n;
  };
  CHECK(count("http") == count("xmlns=\"http://www.w3.org/2000/svg\""));
  CHECK(html.find("url(") == std::string::npos);  // no CSS fetch either
  CHECK(html.find("@import") == std::string::npos);
}

TEST_CASE("report: galleries are bounded and large images downscaled") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  ReportOptions o;
  o.max_gallery = 2;
  o.max_image_side = 64;
  const std::string html = report_html(dir, o);
  CHECK(html.find("showing 2 of 5 images") != std::string::npos);  // seg/eval/test/overlays
  // The 300 x 200 overlay comes back as a 64-pixel-wide PNG.
  const std::string uri = image_data_uri(dir + "/seg/eval/test/overlays/0.png", {64, 1 << 20});
  REQUIRE(uri.rfind("data:image/png;base64,", 0) == 0);
  CHECK(html.find(uri) != std::string::npos);
}

TEST_CASE("report: curves of a long run keep at most max_plot_points points each") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run", /*steps=*/60000);
  ReportOptions o;
  o.max_plot_points = 200;
  const std::string html = report_html(dir, o);
  int lines = 0;
  for (const auto& pts : attributes(html, "points")) {
    const size_t n = std::count(pts.begin(), pts.end(), ',');
    CHECK(n <= 200);
    CHECK(n >= 2);
    ++lines;
  }
  CHECK(lines >= 4);  // loss, lr, throughput, grad norm, evaluation metrics ...
  CHECK(html.size() < 2'000'000);
}

TEST_CASE("report: min/max downsampling keeps the ends and every bucket's extremes") {
  PlotSeries s{"x", {}, {}};
  for (int i = 0; i < 100000; ++i) {
    s.x.push_back(i);
    s.y.push_back(std::sin(i * 0.001) + (i == 54321 ? 10.0 : 0.0) - (i == 777 ? 10.0 : 0.0));
  }
  s.y[500] = NAN;  // a gap is dropped
  const PlotSeries d = downsample_minmax(s, 300);
  REQUIRE(d.x.size() <= 300);
  REQUIRE(d.x.size() >= 250);
  CHECK(d.x.front() == 0);
  CHECK(d.x.back() == 99999);
  CHECK(std::is_sorted(d.x.begin(), d.x.end()));
  // The spikes survive: a plain stride would drop them.
  CHECK(std::find(d.x.begin(), d.x.end(), 54321.0) != d.x.end());
  CHECK(std::find(d.x.begin(), d.x.end(), 777.0) != d.x.end());
  CHECK(*std::max_element(d.y.begin(), d.y.end()) == *std::max_element(s.y.begin(), s.y.end()));
  for (double y : d.y) CHECK(std::isfinite(y));
  // Small series come back whole (minus NaNs).
  const PlotSeries small = downsample_minmax(PlotSeries{"s", {1, 2, 3}, {1, NAN, 3}}, 300);
  CHECK(small.x == std::vector<double>{1, 3});
}

TEST_CASE("report: the checkpoint list marks the best one") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  const auto cks = checkpoints_list(dir);
  REQUIRE(cks.size() == 3);
  CHECK(cks[0].name == "step-00000010");
  CHECK(cks[0].best);
  CHECK_FALSE(cks[1].best);
  CHECK(cks[2].name == "best");
  const std::string html = report_html(dir);
  CHECK(html.find("<tr class=\"best\"><td><code>checkpoints/step-00000010</code>") != std::string::npos);
  CHECK(html.find("<tr><td><code>checkpoints/step-00000020</code>") != std::string::npos);
}

TEST_CASE("report: config values show their origin, the environment is listed") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  const std::string html = report_html(dir);
  CHECK(html.find("<td><code>optimizer.lr</code></td><td><code>0.001</code></td><td>--set optimizer.lr=0.001</td>") !=
        std::string::npos);
  CHECK(html.find("<td><code>train.epochs</code></td><td><code>3</code></td><td>configs/x.yaml:7</td>") !=
        std::string::npos);
  CHECK(html.find("<th>libtorch</th><td>2.12.1</td>") != std::string::npos);
}

TEST_CASE("report: with the recorded defaults, values that differ are marked and the rest listed") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  // lr 0.001 equals its default written 1e-3 (numbers compare by value); epochs 3 differs from 1;
  // warmup_epochs is not in config.yaml: it takes its default.
  write_file_atomic(dir + "/config_defaults.json",
                    R"({"optimizer/lr": "1e-3", "train/epochs": "1", "train/warmup_epochs": "0.5"})");
  const std::string html = report_html(dir);
  CHECK(html.find("<tr><td><code>optimizer.lr</code></td><td><code>0.001</code></td><td><code>1e-3"
                  "</code></td><td>--set optimizer.lr=0.001</td></tr>") != std::string::npos);
  CHECK(html.find("<tr class=\"headline\"><td><code>train.epochs</code></td><td><code>3</code></td>"
                  "<td><code>1</code></td><td>configs/x.yaml:7</td></tr>") != std::string::npos);
  CHECK(html.find("Keys at their defaults (1)") != std::string::npos);
  CHECK(html.find("<td><code>train.warmup_epochs</code></td><td><code>0.5</code></td>") !=
        std::string::npos);
}

TEST_CASE("report: the run's state comes from status.json, else from its checkpoints") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  CHECK(run_status(dir).state == "finished");
  run_status_write(dir, "running");  // this process: alive
  CHECK(run_status(dir).state == "in progress");
  // A writer that is gone: pid 2^22 + 1 is above Linux's pid_max default range in use here.
  json s = json::parse(read_file(dir + "/status.json"));
  s["pid"] = 4194304 + 1;
  write_file_atomic(dir + "/status.json", s.dump());
  CHECK(run_status(dir).state == "stopped");
  run_status_write(dir, "stopped", "preempted");
  CHECK(run_status(dir).state == "stopped");
  CHECK(run_status(dir).detail == "preempted");
  CHECK(report_html(dir).find("<span class=\"badge stopped\">stopped</span>") != std::string::npos);
  // Without status.json: the newest checkpoint (20) against the schedule's 30 steps.
  fs::remove(dir + "/status.json");
  CHECK(run_status(dir).state == "in progress");
  CHECK(run_status(dir).detail == "no status.json; last checkpoint at step 20 of 30");
}

TEST_CASE("report: report_write writes report.html and refuses a missing directory") {
  test::TempDir tmp("report");
  const std::string dir = test::make_report_fixture(tmp / "run");
  CHECK(report_write(dir) == dir + "/report.html");
  CHECK(read_file(dir + "/report.html").rfind("<!DOCTYPE html>", 0) == 0);
  CHECK_THROWS_AS(report_write(tmp / "missing"), DataError);
}

TEST_CASE("report: html_escape, base64 and number formatting") {
  CHECK(html_escape("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(format_metric(0.92976) == "0.9298");
  CHECK(format_metric(400) == "400");
  CHECK(format_metric(NAN) == "-");
  CHECK(format_metric(1.0 / 0.0) == "inf");
}
