// The files of `evax evaluate`: CSVs that `evax metrics` reads back to the same numbers,
// per-class values equal to the metrics functions, rates at validation thresholds, ROC PNGs.
#include "evax/eval/report_files.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <opencv2/core.hpp>
#include <random>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/eval/metrics_report.h"
#include "evax/io/image.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using evax::ScoredLabels;
using J = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

constexpr int8_t M = evax::kMissingLabel;
constexpr double kInf = std::numeric_limits<double>::infinity();

// An RFC 4180 reader (quoted fields, doubled quotes, commas and newlines inside quotes), kept
// independent of the writer under test.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1, std::vector<std::string>(1));
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch != '"') rows.back().back() += ch;
      else if (i + 1 < text.size() && text[i + 1] == '"') rows.back().back() += '"', ++i;
      else quoted = false;
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      rows.back().emplace_back();
    } else if (ch == '\n') {
      rows.emplace_back(1);
    } else {
      rows.back().back() += ch;
    }
  }
  if (rows.back().size() == 1 && rows.back()[0].empty()) rows.pop_back();
  return rows;
}

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  return parse_csv(evax::read_file(path));
}

// Cell text → number (empty = null), exactly as written.
std::optional<double> num(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return std::strtod(s.c_str(), nullptr);
}

std::mt19937 rng(20250307);
double uniform() { return std::uniform_real_distribution<double>(0, 1)(rng); }

// Multi-label data with heavy ties (scores rounded to 1 or 2 decimals in some classes), scores
// at full double precision in others, missing labels and a class with one label value.
ScoredLabels random_multilabel(size_t n) {
  ScoredLabels d;
  d.classes = {"Atelectasis", "Pleural Thickening", "Effusion", "Fine", "OnlyNegative"};
  const double prevalence[] = {0.3, 0.2, 0.5, 0.4, 0.0};
  const double missing[] = {0.1, 0.3, 0.0, 0.05, 0.2};
  const int decimals[] = {1, 2, 0, 0, 2};  // 0: full precision
  for (size_t r = 0; r < n; ++r)
    for (size_t c = 0; c < d.cols(); ++c) {
      const int8_t y = uniform() < prevalence[c] ? 1 : 0;
      double s = 0.35 * y + 0.65 * uniform();
      if (c == 2) s = std::exp(-3 * s) / 7;  // digits that %.9g would lose
      const double scale = std::pow(10, decimals[c]);
      if (decimals[c] > 0) s = std::round(s * scale) / scale;
      d.scores.push_back(s);
      d.labels.push_back(uniform() < missing[c] ? M : y);
    }
  return d;
}

// Every key metrics_report writes holds the same value in metrics.json.
void require_same_report(const J& metrics, const J& report) {
  for (auto it = report.begin(); it != report.end(); ++it) {
    INFO("key " << it.key());
    REQUIRE(metrics.contains(it.key()));
    CHECK(metrics.at(it.key()) == it.value());
  }
}

// The hand-checked example: 6 samples, 3 classes.
//   A: positives {0.9, 0.5}, negatives {0.7, 0.3} (two labels missing): 3 of 4 pairs ordered,
//      AUC 0.75. At 0.5: tp 2 (0.9, 0.5 counts as >=), fp 1 (0.7), tn 1, fn 0.
//   B: positives {0.6, 0.9, 0.4}, negatives {0.2, 0.6, 0.1}: 7.5 of 9 pairs (the 0.6 tie counts
//      half), AUC 5/6. At 0.5: tp 2, fp 1, tn 2, fn 1.
//   C: only positives: no AUC, no specificity.
ScoredLabels hand_example() {
  ScoredLabels d;
  d.ids = {"s1", "s2", "s3", "s4", "s5", "s6"};
  d.classes = {"A", "B", "C"};
  d.scores = {0.9, 0.2, 0.95,  //
              0.7, 0.6, 0.5,   //
              0.5, 0.6, 0.3,   //
              0.3, 0.1, 0.2,   //
              0.6, 0.9, 0.92,  //
              0.1, 0.4, 0.1};
  d.labels = {1, 0, 1,  //
              0, 1, 1,  //
              1, 0, 1,  //
              0, 0, M,  //
              M, 1, 1,  //
              M, 1, 1};
  return d;
}

// Centroid of the coloured pixels (the curves: axes, grid, text and chance line are grey).
struct Ink {
  int count = 0;
  double x = 0, y = 0;
};
Ink coloured_ink(const cv::Mat& img) {
  Ink ink;
  for (int r = 0; r < img.rows; ++r)
    for (int c = 0; c < img.cols; ++c) {
      const cv::Vec3b p = img.at<cv::Vec3b>(r, c);
      const int hi = std::max({p[0], p[1], p[2]}), lo = std::min({p[0], p[1], p[2]});
      if (hi - lo < 60) continue;
      ++ink.count;
      ink.x += c;
      ink.y += r;
    }
  if (ink.count) ink.x /= ink.count, ink.y /= ink.count;
  return ink;
}

}  // namespace

TEST_CASE("report files: predictions.csv and targets.csv give metrics.json's AUC exactly") {
  evax::test::TempDir tmp("report-ml");
  const ScoredLabels d = random_multilabel(400);  // no ids: rows are named 0, 1, ...
  evax::EvaluationFilesOptions o;
  o.split = "val";
  o.roc_png = false;
  const J metrics = evax::write_evaluation_files(tmp.str(), d, o);
  CHECK(J::parse(evax::read_file(tmp / "metrics.json")) == metrics);
  CHECK_FALSE(fs::exists(tmp / "roc"));

  const ScoredLabels back =
      evax::read_prediction_csvs(tmp / "predictions.csv", tmp / "targets.csv");
  REQUIRE(back.rows() == d.rows());
  CHECK(back.ids.front() == "0");
  CHECK(back.ids.back() == "399");
  CHECK(back.classes == d.classes);
  CHECK(back.scores == d.scores);  // exact: full-precision scores survive the text
  CHECK(back.labels == d.labels);
  const J again = evax::metrics_report(back, evax::MetricsTask::kMultilabel, 0.5);
  CHECK(again.at("auc") == metrics.at("auc"));
  CHECK(again.at("mauc") == metrics.at("mauc"));
  REQUIRE(metrics.at("auc").at("OnlyNegative").is_null());
  require_same_report(metrics, again);

  CHECK(metrics.at("split") == "val");
  for (size_t c = 0; c < d.cols(); ++c) {
    int64_t pos = 0;
    for (size_t r = 0; r < d.rows(); ++r) pos += d.label(r, c) == 1;
    CHECK(metrics.at("positives").at(d.classes[c]) == pos);
  }
  CHECK_FALSE(metrics.contains("at_youden"));
  REQUIRE(metrics.at("notes").size() == 1);
  CHECK_THAT(metrics.at("notes")[0].get<std::string>(), Contains("at_youden"));
}

TEST_CASE("report files: multi-class files give metrics.json's AUC and accuracy exactly") {
  evax::test::TempDir tmp("report-mc");
  ScoredLabels d;
  d.classes = {"normal", "pneumonia", "covid"};
  for (size_t r = 0; r < 300; ++r) {
    d.ids.push_back("case-" + std::to_string(1000 - r));
    const size_t truth = uniform() < 0.5 ? 0 : uniform() < 0.6 ? 1 : 2;
    for (size_t c = 0; c < d.cols(); ++c) {
      const double s = (c == truth ? 0.3 : 0.0) + 0.7 * uniform();
      d.scores.push_back(r % 2 ? std::round(s * 10) / 10 : s);
      d.labels.push_back(c == truth ? 1 : 0);
    }
  }
  evax::EvaluationFilesOptions o;
  o.task = evax::MetricsTask::kMulticlass;
  const J metrics = evax::write_evaluation_files(tmp.str(), d, o);
  const ScoredLabels back =
      evax::read_prediction_csvs(tmp / "predictions.csv", tmp / "targets.csv");
  CHECK(back.ids == d.ids);
  const J again = evax::metrics_report(back, evax::MetricsTask::kMulticlass, 0.5);
  CHECK(again.at("auc") == metrics.at("auc"));
  CHECK(again.at("mauc") == metrics.at("mauc"));
  require_same_report(metrics, again);
  CHECK_FALSE(metrics.contains("positives"));

  const auto m = evax::multiclass_metrics(d);
  const auto rows = read_csv(tmp / "per_class.csv");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == std::vector<std::string>{"class", "auc", "recall", "ppv"});
  for (size_t c = 0; c < d.cols(); ++c) {
    CHECK(rows[c + 1][0] == d.classes[c]);
    CHECK(num(rows[c + 1][1]) == metrics.at("auc").at(d.classes[c]).get<double>());
    CHECK(num(rows[c + 1][2]) == m.recall[c]);
    CHECK(num(rows[c + 1][3]) == m.ppv[c]);
  }
  CHECK_THAT(evax::evaluation_table(metrics), Contains("recall") && Contains("accuracy"));
}

TEST_CASE("report files: per_class.csv holds the hand-checked values, null as an empty cell") {
  evax::test::TempDir tmp("report-hand");
  const ScoredLabels d = hand_example();
  evax::EvaluationFilesOptions o;
  o.val_thresholds = {0.5, std::nullopt, 0.93};
  const J metrics = evax::write_evaluation_files(tmp.str(), d, o);
  const auto rows = read_csv(tmp / "per_class.csv");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == std::vector<std::string>{"class", "auc", "sensitivity", "specificity", "ppv",
                                            "f1", "youden_threshold", "sens_youden",
                                            "spec_youden", "ppv_youden", "f1_youden"});
  const auto& a = rows[1];
  REQUIRE(a.size() == 11);
  CHECK(a[0] == "A");
  CHECK(num(a[1]) == 0.75);
  CHECK(num(a[2]) == 1.0);
  CHECK(num(a[3]) == 0.5);
  CHECK(num(a[4]) == 2.0 / 3);
  CHECK(num(a[5]) == 0.8);
  CHECK(num(a[6]) == 0.5);  // the given threshold: same rates as at 0.5
  CHECK(std::vector<std::string>(a.begin() + 7, a.end()) ==
        std::vector<std::string>(a.begin() + 2, a.begin() + 6));
  const auto& b = rows[2];
  CHECK(*num(b[1]) == Approx(5.0 / 6).margin(1e-12));
  CHECK(num(b[1]) == evax::per_class_auc(d).auc[1]);
  CHECK(num(b[2]) == 2.0 / 3);
  CHECK(num(b[3]) == 2.0 / 3);
  CHECK(num(b[4]) == 2.0 / 3);
  CHECK(num(b[5]) == 2.0 / 3);
  CHECK(std::all_of(b.begin() + 6, b.end(), [](const std::string& s) { return s.empty(); }));
  // C: only positives. At 0.5 tp 3 (0.95, 0.5, 0.92), fn 2; at 0.93 tp 1, fn 4.
  const auto& c = rows[3];
  CHECK(c[1].empty());
  CHECK(num(c[2]) == 0.6);
  CHECK(c[3].empty());
  CHECK(num(c[4]) == 1.0);
  CHECK(num(c[6]) == 0.93);
  CHECK(num(c[7]) == 0.2);
  CHECK(c[8].empty());
  CHECK(num(c[10]) == 2.0 / 6);

  CHECK(metrics.at("auc").at("C").is_null());
  CHECK(metrics.at("positives") == J{{"A", 2}, {"B", 3}, {"C", 5}});
  REQUIRE(metrics.at("warnings").size() == 1);
  CHECK_THAT(metrics.at("warnings")[0].get<std::string>(), Contains("'C'"));
  CHECK(fs::exists(tmp / "roc/00_A.png"));
  CHECK(fs::exists(tmp / "roc/01_B.png"));
  CHECK_FALSE(fs::exists(tmp / "roc/02_C.png"));
  CHECK(fs::exists(tmp / "roc/all.png"));

  // The printed table: one row per class, the mean row takes mAUC (0.75 + 5/6) / 2.
  const std::string table = evax::evaluation_table(metrics);
  INFO(table);
  std::vector<std::string> lines;
  for (size_t at = 0, nl; (nl = table.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(table.substr(at, nl - at));
  REQUIRE(lines.size() == 6);  // group line, header, A, B, C, mean
  CHECK_THAT(lines[0], Contains("at threshold 0.5") && Contains("Youden"));
  CHECK(lines[2].rfind("A ", 0) == 0);
  CHECK_THAT(lines[2], Contains("0.750") && Contains("0.800"));
  CHECK_THAT(lines[4], Contains("     -") && Contains("0.930"));
  CHECK(lines[5].rfind("mean", 0) == 0);
  CHECK_THAT(lines[5], Contains("0.792"));
  for (const auto& l : lines) CHECK(l.size() <= lines[1].size());
}

TEST_CASE("report files: at_youden counts use the validation thresholds, not 0.5") {
  evax::test::TempDir tmp("report-youden");
  // Validation: "lesion" separates at 0.25; "unknown" has no positive; "never" is inverted,
  // so its Youden threshold is +inf (nothing positive).
  ScoredLabels val;
  val.classes = {"lesion", "unknown", "never"};
  val.scores = {0.3, 0.1, 0.1,  0.25, 0.2, 0.2,  0.1, 0.3, 0.8,  0.05, 0.4, 0.9};
  val.labels = {1, 0, 1,  1, 0, 1,  0, 0, 0,  0, 0, 0};
  evax::EvaluationFilesOptions o;
  o.val_thresholds = evax::per_class_youden(val);
  REQUIRE(o.val_thresholds[0] == 0.25);
  REQUIRE_FALSE(o.val_thresholds[1].has_value());
  REQUIRE(o.val_thresholds[2] == kInf);

  // Test: lesion at 0.25 → tp 2 (0.4, 0.3), fp 2 (0.26, 0.6), tn 1, fn 1 (0.1);
  //       lesion at 0.5  → tp 0, fp 1 (0.6), tn 2, fn 3.
  ScoredLabels d;
  d.classes = val.classes;
  const std::vector<double> lesion = {0.4, 0.3, 0.26, 0.2, 0.6, 0.1};
  const std::vector<int8_t> truth = {1, 1, 0, 0, 0, 1};
  for (size_t r = 0; r < lesion.size(); ++r) {
    d.scores.insert(d.scores.end(), {lesion[r], 0.7, 0.99});
    d.labels.insert(d.labels.end(), {truth[r], truth[r], truth[r]});
  }
  const J metrics = evax::write_evaluation_files(tmp.str(), d, o);
  CHECK(metrics.at("counts").at("lesion") == J{{"tp", 0}, {"fp", 1}, {"tn", 2}, {"fn", 3}});
  const J& y = metrics.at("at_youden");
  CHECK(y.at("threshold") == J{{"lesion", 0.25}, {"unknown", nullptr}, {"never", "inf"}});
  CHECK(y.at("counts").at("lesion") == J{{"tp", 2}, {"fp", 2}, {"tn", 1}, {"fn", 1}});
  CHECK(y.at("sensitivity").at("lesion") == 2.0 / 3);
  CHECK(y.at("specificity").at("lesion") == 1.0 / 3);
  CHECK(y.at("ppv").at("lesion") == 0.5);
  for (const char* k : {"sensitivity", "specificity", "ppv", "f1", "counts"})
    CHECK(y.at(k).at("unknown").is_null());
  CHECK(y.at("counts").at("never") == J{{"tp", 0}, {"fp", 0}, {"tn", 3}, {"fn", 3}});
  CHECK(y.at("sensitivity").at("never") == 0.0);
  CHECK(y.at("ppv").at("never").is_null());
  CHECK(metrics.at("notes").empty());

  const auto rows = read_csv(tmp / "per_class.csv");
  CHECK(num(rows[1][6]) == 0.25);
  CHECK(num(rows[1][7]) == 2.0 / 3);
  CHECK(rows[2][6].empty());
  CHECK(rows[3][6] == "inf");
  CHECK_THAT(evax::evaluation_table(metrics), Contains("inf"));
}

TEST_CASE("report files: ROC PNGs decode at 480x480 and show each class's own curve") {
  evax::test::TempDir tmp("report-png");
  ScoredLabels d;
  d.classes = {"Perfect", "Inverted", "No Finding/other"};
  for (size_t r = 0; r < 40; ++r) {
    const int8_t y = r % 3 == 0 ? 1 : 0;
    d.scores.insert(d.scores.end(), {y ? 0.6 + 0.01 * r : 0.01 * r / 2, y ? 0.1 : 0.5, uniform()});
    d.labels.insert(d.labels.end(), {y, y, y});
  }
  evax::EvaluationFilesOptions o;
  const J metrics = evax::write_evaluation_files(tmp.str(), d, o);
  REQUIRE(metrics.at("auc").at("Perfect") == 1.0);
  REQUIRE(metrics.at("auc").at("Inverted") == 0.0);
  const auto read = [&](const std::string& name) {
    return evax::image_decode(evax::read_file(tmp / name), name);
  };
  const cv::Mat perfect = read("roc/00_Perfect.png"), inverted = read("roc/01_Inverted.png"),
                other = read("roc/02_No_Finding_other.png"), all = read("roc/all.png");
  for (const cv::Mat* m : {&perfect, &inverted, &other, &all}) {
    REQUIRE(m->type() == CV_8UC3);
    CHECK(m->cols == 480);
    CHECK(m->rows == 480);
    CHECK(m->at<cv::Vec3b>(2, 2) == cv::Vec3b(255, 255, 255));  // white background
  }
  // Perfect runs up the left edge and along the top; inverted along the bottom and up the right.
  const Ink p = coloured_ink(perfect), i = coloured_ink(inverted);
  CHECK(p.count > 300);
  CHECK(i.count > 300);
  CHECK(p.x + 100 < i.x);
  CHECK(p.y + 100 < i.y);
  CHECK(cv::norm(perfect, inverted, cv::NORM_L1) > 0);
  // all.png overlays every curve: more ink than any single one.
  CHECK(coloured_ink(all).count > std::max(p.count, i.count));
}

TEST_CASE("report files: ids with commas and quotes are quoted and read back") {
  evax::test::TempDir tmp("report-ids");
  ScoredLabels d;
  d.ids = {"patient 1, view PA", "say \"hi\"", "plain"};
  d.classes = {"Mass, left"};
  d.scores = {0.25, 0.125, 1.0 / 3};
  d.labels = {1, M, 0};
  evax::EvaluationFilesOptions o;
  o.roc_png = false;
  evax::write_evaluation_files(tmp.str(), d, o);
  const std::string text = evax::read_file(tmp / "predictions.csv");
  CHECK_THAT(text, Contains("\"patient 1, view PA\"") && Contains("\"say \"\"hi\"\"\""));
  const auto pred = read_csv(tmp / "predictions.csv"), target = read_csv(tmp / "targets.csv");
  REQUIRE(pred.size() == 4);
  REQUIRE(target.size() == 4);
  CHECK(pred[0] == std::vector<std::string>{"id", "Mass, left"});
  CHECK(target[0] == pred[0]);
  for (size_t r = 0; r < 3; ++r) {
    REQUIRE(pred[r + 1].size() == 2);
    CHECK(pred[r + 1][0] == d.ids[r]);
    CHECK(target[r + 1][0] == d.ids[r]);
    CHECK(num(pred[r + 1][1]) == d.scores[r]);
  }
  CHECK(target[1][1] == "1");
  CHECK(target[2][1].empty());
  CHECK(target[3][1] == "0");
  // `evax metrics` reads them back (its reader is RFC 4180 too).
  const ScoredLabels back =
      evax::read_prediction_csvs(tmp / "predictions.csv", tmp / "targets.csv");
  CHECK(back.ids == d.ids);
  CHECK(back.classes == d.classes);
  CHECK(back.scores == d.scores);
  CHECK(back.labels == d.labels);
}

TEST_CASE("report files: unwritable directories and non-finite scores are data errors") {
  evax::test::TempDir tmp("report-err");
  const ScoredLabels d = hand_example();
  evax::write_file_atomic(tmp / "blocker", "a file, not a directory\n");
  CHECK_THROWS_AS(evax::write_evaluation_files(tmp / "blocker/out", d, {}), evax::DataError);
  CHECK_THROWS_WITH(evax::write_evaluation_files(tmp / "blocker/out", d, {}),
                    Contains("blocker/out"));
  ScoredLabels bad = d;
  bad.scores[4] = std::nan("");
  CHECK_THROWS_WITH(evax::write_evaluation_files(tmp / "nan", bad, {}),
                    Contains("sample 's2'") && Contains("'B'") && Contains("not finite"));
  CHECK_FALSE(fs::exists(tmp / "nan"));
  CHECK(evax::format_double_exact(0.1) == "0.1");
  CHECK(std::strtod(evax::format_double_exact(1.0 / 3).c_str(), nullptr) == 1.0 / 3);
}
