// Metrics against hand-computed values and scikit-learn (tools/sklearn_metrics_reference.py) on
// random data with heavy ties and missing labels.
#include "evax/eval/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/eval/metrics_report.h"
#include "skip.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using evax::ScoredLabels;
using json = nlohmann::json;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int8_t M = evax::kMissingLabel;

ScoredLabels one_class(std::vector<double> s, std::vector<int8_t> y) {
  ScoredLabels d;
  d.classes = {"c"};
  d.scores = std::move(s);
  d.labels = std::move(y);
  return d;
}

// Writes `d` as the two CSVs of `evax metrics`, scores with `decimals` digits (per class), the
// target rows in reverse order so that matching by id is exercised.
void write_csvs(const ScoredLabels& d, const std::vector<int>& decimals, const std::string& pred,
                const std::string& target) {
  std::ofstream p(pred), t(target);
  p << "id";
  t << "id";
  for (const auto& c : d.classes) p << ',' << c, t << ',' << c;
  p << '\n';
  t << '\n';
  for (size_t r = 0; r < d.rows(); ++r) {
    p << "img" << r;
    for (size_t c = 0; c < d.cols(); ++c) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.*f", decimals[c], d.score(r, c));
      p << ',' << buf;
    }
    p << '\n';
  }
  for (size_t r = d.rows(); r-- > 0;) {
    t << "img" << r;
    for (size_t c = 0; c < d.cols(); ++c)
      t << ',' << (d.label(r, c) == M ? std::string() : std::to_string(d.label(r, c)));
    t << '\n';
  }
}

// Runs the sklearn reference on the CSVs; false when it cannot run.
bool sklearn_reference(const std::string& args, const std::string& out, json& ref) {
  const std::string py = EVAX_PYTHON;
  if (py.empty() || ::access(py.c_str(), X_OK) != 0) return false;
  const std::string cmd = "'" + py + "' '" +
                          evax::test::source_path("tools/sklearn_metrics_reference.py") + "' " +
                          args + " --out '" + out + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  ref = json::parse(evax::read_file(out));
  return true;
}

// Tracks the largest |ours − sklearn| and requires nulls to agree.
struct Compare {
  double max_diff = 0;
  void operator()(const std::optional<double>& ours, const json& ref, const std::string& what) {
    INFO(what << ": evax " << (ours ? std::to_string(*ours) : "null") << ", sklearn "
              << ref.dump());
    REQUIRE(ours.has_value() == !ref.is_null());
    if (!ours) return;
    if (ref.is_string()) {
      REQUIRE(ref.get<std::string>() == "inf");
      CHECK(*ours == kInf);
      return;
    }
    const double diff = std::abs(*ours - ref.get<double>());
    max_diff = std::max(max_diff, diff);
    CHECK(diff <= 1e-9);
  }
};

std::mt19937 rng(20240611);
double uniform() { return std::uniform_real_distribution<double>(0, 1)(rng); }

// Random multi-label data: noisy scores (rounded later to 1 or 2 decimals, so ties are heavy),
// missing labels, and the edge cases: perfect, inverted, one label value, all missing.
ScoredLabels random_multilabel(size_t n) {
  ScoredLabels d;
  d.classes = {"Atelectasis", "Cardiomegaly", "Effusion",   "Perfect",
               "Inverted",    "OnlyNegative", "AllMissing", "Pleural Thickening"};
  const double prevalence[] = {0.3, 0.08, 0.5, 0.4, 0.4, 0.0, 0.3, 0.2};
  const double missing[] = {0.12, 0.2, 0.0, 0.1, 0.1, 0.15, 1.0, 0.3};
  for (size_t r = 0; r < n; ++r)
    for (size_t c = 0; c < d.cols(); ++c) {
      const int8_t y = uniform() < prevalence[c] ? 1 : 0;
      double s = std::clamp(0.35 * y + 0.65 * uniform(), 0.0, 1.0);
      if (c == 3) s = y ? 0.8 + 0.2 * uniform() : 0.1 + 0.6 * uniform();
      if (c == 4) s = y ? 0.2 * uniform() : 0.25 + 0.5 * uniform();
      d.scores.push_back(s);
      d.labels.push_back(uniform() < missing[c] ? M : y);
    }
  return d;
}

}  // namespace

TEST_CASE("metrics: AUC of hand-computed, tied, perfect and inverted scores") {
  CHECK(*evax::roc_auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}) == Approx(0.75).margin(1e-15));
  CHECK(*evax::roc_auc({0.5, 0.5, 0.5, 0.5}, {0, 1, 0, 1}) == 0.5);
  // One tie across the classes counts half: pairs (0.2,0.6) (0.2,0.6) (0.6,0.6) (0.6,0.9)...
  CHECK(*evax::roc_auc({0.2, 0.6, 0.6, 0.9}, {0, 0, 1, 1}) == Approx(0.875).margin(1e-15));
  CHECK(*evax::roc_auc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}) == 1.0);
  CHECK(*evax::roc_auc({0.1, 0.2, 0.8, 0.9}, {1, 1, 0, 0}) == 0.0);
  CHECK_FALSE(evax::roc_auc({0.1, 0.2}, {1, 1}).has_value());
  CHECK_FALSE(evax::roc_auc({}, {}).has_value());
  const auto c = evax::roc_curve({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1});
  CHECK(c.thresholds == std::vector<double>{kInf, 0.8, 0.4, 0.35, 0.1});
  CHECK(c.tpr == std::vector<double>{0, 0.5, 0.5, 1, 1});
  CHECK(c.fpr == std::vector<double>{0, 0, 0.5, 0.5, 1});
}

TEST_CASE("metrics: a class with one label value or none is null, warned and left out of mAUC") {
  ScoredLabels d;
  d.classes = {"good", "only_ones", "none_known", "inverted"};
  d.scores = {0.9, 0.9, 0.1, 0.1,  // one row per sample
              0.2, 0.8, 0.2, 0.9,  //
              0.7, 0.3, 0.3, 0.5};
  d.labels = {1, 1, M, 1,  //
              0, 1, M, 0,  //
              M, M, M, M};
  const auto r = evax::per_class_auc(d);
  REQUIRE(r.auc.size() == 4);
  CHECK(*r.auc[0] == 1.0);
  CHECK_FALSE(r.auc[1].has_value());
  CHECK_FALSE(r.auc[2].has_value());
  CHECK(*r.auc[3] == 0.0);
  CHECK(*r.mauc == 0.5);  // (1 + 0) / 2: the undefined classes are neither 0 nor NaN
  REQUIRE(r.warnings.size() == 2);
  CHECK_THAT(r.warnings[0], Contains("'only_ones'") && Contains("all 2 known labels are 1"));
  CHECK_THAT(r.warnings[1], Contains("'none_known'") && Contains("no known label"));
  const auto y = evax::per_class_youden(d);
  CHECK_FALSE(y[1].has_value());
  CHECK_FALSE(y[2].has_value());

  ScoredLabels none = one_class({0.3, 0.6}, {M, M});
  CHECK_FALSE(evax::per_class_auc(none).mauc.has_value());
  const auto rates = evax::per_class_rates(none);
  CHECK_FALSE(rates[0].sensitivity.has_value());
  CHECK_FALSE(rates[0].f1.has_value());
}

TEST_CASE("metrics: rates at a threshold count score >= threshold as positive") {
  ScoredLabels d = one_class({0.9, 0.5, 0.49, 0.2, 0.7, 0.1}, {1, 1, 1, 0, 0, M});
  const auto r = evax::per_class_rates(d)[0];
  CHECK(r.tp == 2);
  CHECK(r.fn == 1);
  CHECK(r.fp == 1);
  CHECK(r.tn == 1);
  CHECK(*r.sensitivity == Approx(2.0 / 3));
  CHECK(*r.specificity == 0.5);
  CHECK(*r.ppv == Approx(2.0 / 3));
  CHECK(*r.f1 == Approx(4.0 / 6));
  const auto high = evax::per_class_rates(d, std::vector<double>{0.95})[0];
  CHECK(*high.sensitivity == 0.0);
  CHECK(*high.specificity == 1.0);
  CHECK_FALSE(high.ppv.has_value());  // nothing predicted positive: undefined, not 0
  CHECK(*high.f1 == 0.0);
}

TEST_CASE("metrics: Youden threshold takes the highest of tied maxima") {
  // J = tpr - fpr is 0.5 at thresholds 0.9 and 0.7: the higher one wins (numpy argmax).
  CHECK(*evax::youden_threshold({0.9, 0.8, 0.7, 0.6}, {1, 0, 1, 0}) == 0.9);
  CHECK(*evax::youden_threshold({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}) == 0.8);
  // Inverted scores: no threshold beats J = 0, so nothing is called positive.
  CHECK(*evax::youden_threshold({0.1, 0.2, 0.8, 0.9}, {1, 1, 0, 0}) == kInf);
}

TEST_CASE("metrics: multi-class accuracy, recall and confusion") {
  ScoredLabels d;
  d.ids = {"a", "b", "c", "d", "e"};
  d.classes = {"normal", "pneumonia", "covid"};
  d.scores = {0.7, 0.2, 0.1,  //
              0.4, 0.4, 0.2,  // a tie: the first class wins
              0.1, 0.3, 0.6,  //
              0.2, 0.5, 0.3,  //
              0.3, 0.3, 0.4};
  d.labels = {1, 0, 0,  //
              0, 1, 0,  //
              0, 0, 1,  //
              0, 1, 0,  //
              1, 0, 0};
  const auto m = evax::multiclass_metrics(d);
  CHECK(m.accuracy == 0.6);
  CHECK(m.confusion == std::vector<std::vector<int64_t>>{{1, 0, 1}, {1, 1, 0}, {0, 0, 1}});
  CHECK(*m.recall[0] == 0.5);
  CHECK(*m.recall[1] == 0.5);
  CHECK(*m.recall[2] == 1.0);
  CHECK(*m.ppv[2] == 0.5);
  d.labels[5] = 1;  // row b now has two ones
  CHECK_THROWS_WITH(evax::multiclass_metrics(d), Contains("sample 'b'") && Contains("one-hot"));
}

TEST_CASE("metrics: prediction CSVs are matched by id and bad cells name file and line") {
  evax::test::TempDir tmp("metrics-csv");
  const std::string p = tmp / "p.csv", t = tmp / "t.csv";
  auto write = [](const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  };
  write(p, "id,A,B\nx,0.1,0.9\ny,0.8,0.2\n");
  write(t, "id,A,B\r\ny,1,\r\nx,0,1\r\n");
  ScoredLabels d = evax::read_prediction_csvs(p, t);
  CHECK(d.ids == std::vector<std::string>{"x", "y"});
  CHECK(d.scores == std::vector<double>{0.1, 0.9, 0.8, 0.2});
  CHECK(d.labels == std::vector<int8_t>{0, 1, 1, M});

  write(t, "id,A,B\nx,0,1\n");
  CHECK_THROWS_WITH(evax::read_prediction_csvs(p, t),
                    Contains("id 'y'") && Contains("p.csv:3") && Contains("no row in"));
  write(t, "id,A,B\nx,0,1\ny,1,0\nz,1,1\n");
  CHECK_THROWS_WITH(evax::read_prediction_csvs(p, t), Contains("id 'z'") && Contains("t.csv:4"));
  write(t, "id,B,A\nx,0,1\ny,1,0\n");
  CHECK_THROWS_WITH(evax::read_prediction_csvs(p, t),
                    Contains("class columns differ") && Contains("[A, B]") && Contains("[B, A]"));
  write(t, "id,A,B\nx,0,1\ny,2,0\n");
  CHECK_THROWS_WITH(evax::read_prediction_csvs(p, t),
                    Contains("t.csv:3: column 'A'") && Contains("got '2'"));
  write(t, "id,A,B\nx,0,1\ny,1,0\n");
  write(p, "id,A,B\nx,0.1,abc\ny,0.8,0.2\n");
  CHECK_THROWS_AS(evax::read_prediction_csvs(p, t), evax::DataError);
  CHECK_THROWS_WITH(evax::read_prediction_csvs(p, t), Contains("p.csv:2: column 'B'"));
  write(p, "name,A,B\nx,0.1,0.2\n");
  CHECK_THROWS_WITH(evax::read_prediction_csvs(p, t), Contains("p.csv:1") && Contains("'id'"));
}

TEST_CASE("metrics: multi-label metrics equal scikit-learn on tied scores with missing labels",
          "[python]") {
  if (std::string(EVAX_PYTHON).empty() || ::access(EVAX_PYTHON, X_OK) != 0)
    EVAX_SKIP("EVAX_PYTHON not configured: no scikit-learn reference");
  evax::test::TempDir tmp("metrics-ml");
  const ScoredLabels raw = random_multilabel(500);
  write_csvs(raw, {1, 2, 1, 1, 2, 2, 1, 2}, tmp / "p.csv", tmp / "t.csv");
  const ScoredLabels d = evax::read_prediction_csvs(tmp / "p.csv", tmp / "t.csv");
  const std::vector<double> thr = {0.3, 0.45, 0.6, 0.5, 0.2, 0.5, 0.5, 0.55};
  json ref;
  REQUIRE(sklearn_reference("--pred '" + tmp / "p.csv" + "' --target '" + tmp / "t.csv" +
                                "' --thresholds 0.3,0.45,0.6,0.5,0.2,0.5,0.5,0.55",
                            tmp / "ref.json", ref));
  Compare cmp;
  const auto auc = evax::per_class_auc(d);
  const auto youden = evax::per_class_youden(d);
  const auto at05 = evax::per_class_rates(d), atthr = evax::per_class_rates(d, thr);
  for (size_t c = 0; c < d.cols(); ++c) {
    const std::string name = d.classes[c];
    cmp(auc.auc[c], ref["auc"][c], name + " auc");
    cmp(youden[c], ref["youden"][c], name + " youden");
    for (const auto& [rates, key] :
         {std::pair{&at05, "rates_05"}, std::pair{&atthr, "rates_thr"}}) {
      const evax::BinaryRates& b = (*rates)[c];
      const json& r = ref[key][c];
      cmp(b.sensitivity, r[0], name + " sensitivity " + key);
      cmp(b.specificity, r[1], name + " specificity " + key);
      cmp(b.ppv, r[2], name + " ppv " + key);
      cmp(b.f1, r[3], name + " f1 " + key);
    }
  }
  cmp(auc.mauc, ref["mauc"], "mauc");
  CHECK(*auc.auc[3] == 1.0);  // perfect
  CHECK(*auc.auc[4] == 0.0);  // inverted
  CHECK(auc.warnings.size() == 2);
  // The report holds the same numbers.
  const auto report = evax::metrics_report(d, evax::MetricsTask::kMultilabel);
  CHECK(report["auc"]["OnlyNegative"].is_null());
  CHECK(report["mauc"].get<double>() == *auc.mauc);
  std::printf("multi-label vs scikit-learn: max abs difference %.3g over %zu classes\n",
              cmp.max_diff, d.cols());
}

TEST_CASE("metrics: multi-class accuracy, recall, AUC and confusion equal scikit-learn",
          "[python]") {
  if (std::string(EVAX_PYTHON).empty() || ::access(EVAX_PYTHON, X_OK) != 0)
    EVAX_SKIP("EVAX_PYTHON not configured: no scikit-learn reference");
  evax::test::TempDir tmp("metrics-mc");
  ScoredLabels raw;
  raw.classes = {"normal", "pneumonia", "covid", "rare"};  // "rare" never occurs: null + warning
  for (size_t r = 0; r < 400; ++r) {
    const size_t truth = uniform() < 0.5 ? 0 : uniform() < 0.6 ? 1 : 2;
    for (size_t c = 0; c < raw.cols(); ++c) {
      raw.scores.push_back((c == truth ? 0.3 : 0.0) + 0.7 * uniform());
      raw.labels.push_back(c == truth ? 1 : 0);
    }
  }
  write_csvs(raw, {1, 1, 1, 1}, tmp / "p.csv", tmp / "t.csv");
  const ScoredLabels d = evax::read_prediction_csvs(tmp / "p.csv", tmp / "t.csv");
  json ref;
  REQUIRE(sklearn_reference(
      "--task multiclass --pred '" + tmp / "p.csv" + "' --target '" + tmp / "t.csv" + "'",
      tmp / "ref.json", ref));
  const auto m = evax::multiclass_metrics(d);
  const auto auc = evax::per_class_auc(d);
  const json& mc = ref["multiclass"];
  Compare cmp;
  cmp(m.accuracy, mc["accuracy"], "accuracy");
  cmp(auc.mauc, ref["mauc"], "mauc");
  for (size_t c = 0; c < d.cols(); ++c) {
    cmp(auc.auc[c], ref["auc"][c], d.classes[c] + " auc");
    cmp(m.recall[c], mc["recall"][c], d.classes[c] + " recall");
    cmp(m.ppv[c], mc["ppv"][c], d.classes[c] + " ppv");
  }
  CHECK(json(m.confusion) == mc["confusion"]);
  const auto report = evax::metrics_report(d, evax::MetricsTask::kMulticlass);
  CHECK(report["per_class_recall"]["rare"].is_null());
  CHECK(report["warnings"].size() == 2);  // AUC and recall of "rare"
  std::printf("multi-class vs scikit-learn: max abs difference %.3g\n", cmp.max_diff);
}
