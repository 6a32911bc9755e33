// Segmentation metrics against hand-computed values and an independent numpy implementation of
// mmseg 0.29's formulas (tools/seg_metrics_reference.py) on random masks with ignore pixels.
#include "evax/eval/seg_metrics.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "python_reference.h"
#include "skip.h"

using Catch::Matchers::Contains;
using evax::SegMetrics;
using json = nlohmann::json;

namespace {

constexpr uint8_t X = 255;  // ignore

bool is_nan(double v) { return std::isnan(v); }

// Largest |ours − reference| over every number in `ref` (recursively), requiring the same keys,
// nulls in the same places and equal integers.
struct JsonCompare {
  double max_diff = 0;
  void operator()(const nlohmann::ordered_json& ours, const json& ref, const std::string& path) {
    INFO(path);
    if (ref.is_object()) {
      REQUIRE(ours.is_object());
      for (auto it = ref.begin(); it != ref.end(); ++it) {
        REQUIRE(ours.contains(it.key()));
        (*this)(ours.at(it.key()), it.value(), path + "." + it.key());
      }
      return;
    }
    if (ref.is_null()) {
      CHECK(ours.is_null());
      return;
    }
    REQUIRE(ours.is_number());
    if (ref.is_number_integer()) {
      CHECK(ours.get<int64_t>() == ref.get<int64_t>());
      return;
    }
    const double d = std::abs(ours.get<double>() - ref.get<double>());
    max_diff = std::max(max_diff, d);
    CHECK(d <= 1e-12);
  }
};

// The reference cases (empty when no EVAX_PYTHON is configured).
json reference_cases() {
  if (std::string(EVAX_PYTHON).empty()) return json();
  return json::parse(evax::read_file(
      evax::test::python_reference_file("seg_metrics_reference.py", "seg_metrics_reference.json")));
}

SegMetrics accumulate(const json& c, size_t from = 0, size_t step = 1) {
  SegMetrics m(c.at("classes").get<std::vector<std::string>>());
  const auto& imgs = c.at("images");
  for (size_t i = from; i < imgs.size(); i += step) {
    const auto p = imgs[i].at("pred").get<std::vector<uint8_t>>();
    const auto l = imgs[i].at("label").get<std::vector<uint8_t>>();
    const int64_t h = imgs[i].at("h"), w = imgs[i].at("w");
    m.add(p.data(), h, w, l.data(), h, w);
  }
  return m;
}

}  // namespace

TEST_CASE("seg metrics: hand-computed two-class case", "[seg]") {
  SegMetrics m({"normal", "lesion"});
  // 2x3 image; the ignored pixel's prediction (1) must not count.
  //   label 0 0 1 / 1 X 1,  pred 0 1 1 / 0 1 1  → kept pixels: label 0 0 1 1 1, pred 0 1 1 0 1
  //   class 0: P 2, L 2, I 1, U 3; class 1: P 3, L 3, I 2, U 4.
  m.add(std::vector<uint8_t>{0, 1, 1, 0, 1, 1}, std::vector<uint8_t>{0, 0, 1, 1, X, 1});
  auto r = m.compute();
  CHECK(r.iou[0] == Approx(1.0 / 3).epsilon(1e-15));
  CHECK(r.iou[1] == Approx(0.5).epsilon(1e-15));
  CHECK(r.dice[0] == Approx(0.5).epsilon(1e-15));
  CHECK(r.dice[1] == Approx(2.0 / 3).epsilon(1e-15));
  CHECK(r.acc[0] == Approx(0.5).epsilon(1e-15));
  CHECK(r.acc[1] == Approx(2.0 / 3).epsilon(1e-15));
  CHECK(r.aacc == Approx(3.0 / 5).epsilon(1e-15));
  CHECK(r.miou == Approx(5.0 / 12).epsilon(1e-15));
  CHECK(r.mdice == Approx(7.0 / 12).epsilon(1e-15));
  CHECK(r.miou_fg == Approx(0.5).epsilon(1e-15));
  CHECK(r.mdice_fg == Approx(2.0 / 3).epsilon(1e-15));
  CHECK(r.union_area == std::vector<int64_t>{3, 4});
  REQUIRE(r.image_dice.size() == 1);
  CHECK(r.image_dice[0].count == 1);
  CHECK(r.image_dice[0].undefined == 0);
  CHECK(r.image_dice[0].mean == Approx(2.0 / 3).epsilon(1e-15));

  // An all-ignore image changes no area; its per-image Dice is undefined, not 0.
  m.add(std::vector<uint8_t>{1, 1, 0, 0}, std::vector<uint8_t>{X, X, X, X});
  // An image with no foreground anywhere: background areas grow by 4, foreground Dice undefined.
  m.add(std::vector<uint8_t>{0, 0, 0, 0}, std::vector<uint8_t>{0, 0, 0, 0});
  r = m.compute();
  CHECK(r.images == 3);
  CHECK(r.iou[0] == Approx(5.0 / 7).epsilon(1e-15));  // I 5, U 7
  CHECK(r.dice[0] == Approx(10.0 / 12).epsilon(1e-15));
  CHECK(r.iou[1] == Approx(0.5).epsilon(1e-15));
  CHECK(r.aacc == Approx(7.0 / 9).epsilon(1e-15));
  CHECK(r.image_dice[0].count == 1);
  CHECK(r.image_dice[0].undefined == 2);
  CHECK(r.image_dice[0].mean == Approx(2.0 / 3).epsilon(1e-15));
  const auto j = r.to_json();
  CHECK(j["per_image_dice"]["lesion"]["undefined"] == 2);
  CHECK(j["per_image_dice"]["lesion"]["median"].get<double>() == Approx(2.0 / 3));
  CHECK(j["per_class"]["normal"]["union"] == 7);
  CHECK(j["mIoU"].get<double>() == Approx((5.0 / 7 + 0.5) / 2).epsilon(1e-15));
  CHECK(j["mIoU_fg"].get<double>() == Approx(0.5).epsilon(1e-15));
  CHECK(j.contains("definitions"));
}

TEST_CASE("seg metrics: empty classes are NaN and left out of the means", "[seg]") {
  SegMetrics m({"bg", "a", "b", "c"});
  // Class 1 only in the label (never predicted): IoU 0 and Dice 0, counted.
  // Class 2 only in the prediction: IoU 0, Dice 0, but Acc 0/0 = NaN.
  // Class 3 in neither: IoU, Dice and Acc NaN, left out of every mean.
  //   label 0 1 1 0, pred 0 0 2 0: class 0 P 3 L 2 I 2 U 3; class 1 P 0 L 2 I 0 U 2;
  //   class 2 P 1 L 0 I 0 U 1.
  m.add(std::vector<uint8_t>{0, 0, 2, 0}, std::vector<uint8_t>{0, 1, 1, 0});
  const auto r = m.compute();
  CHECK(r.iou[0] == Approx(2.0 / 3).epsilon(1e-15));
  CHECK(r.iou[1] == 0.0);
  CHECK(r.iou[2] == 0.0);
  CHECK(is_nan(r.iou[3]));
  CHECK(is_nan(r.dice[3]));
  CHECK(r.acc[1] == 0.0);
  CHECK(is_nan(r.acc[2]));
  CHECK(is_nan(r.acc[3]));
  CHECK(r.miou == Approx((2.0 / 3) / 3).epsilon(1e-15));
  CHECK(r.mdice == Approx((2.0 * 2 / 5) / 3).epsilon(1e-15));
  CHECK(r.macc == Approx((1.0 + 0.0) / 2).epsilon(1e-15));
  CHECK(r.miou_fg == 0.0);
  const auto j = r.to_json();
  CHECK(j["per_class"]["c"]["iou"].is_null());
  CHECK(j["per_class"]["b"]["acc"].is_null());
  CHECK(j["per_class"]["a"]["iou"] == 0.0);
  // Per image: a and b have Dice 0 (present on one side), c is undefined.
  CHECK(j["per_image_dice"]["a"]["mean"] == 0.0);
  CHECK(j["per_image_dice"]["b"]["count"] == 1);
  CHECK(j["per_image_dice"]["c"]["undefined"] == 1);
  CHECK(j["per_image_dice"]["c"]["mean"].is_null());
  CHECK_FALSE(j["per_image_dice"].contains("bg"));

  // Only background anywhere: the foreground means are NaN (null), the background one is 1.
  SegMetrics bg({"bg", "fg"});
  bg.add(std::vector<uint8_t>{0, 0}, std::vector<uint8_t>{0, X});
  const auto rb = bg.compute();
  CHECK(rb.miou == 1.0);
  CHECK(is_nan(rb.miou_fg));
  CHECK(rb.to_json()["mDice_fg"].is_null());
  // Nothing added at all: every ratio is NaN, nothing crashes.
  const auto empty = SegMetrics({"bg", "fg"}).compute().to_json();
  CHECK(empty["aAcc"].is_null());
  CHECK(empty["mIoU"].is_null());
  CHECK(empty["per_image_dice"]["fg"]["count"] == 0);
}

TEST_CASE("seg metrics: per-image distribution statistics", "[seg]") {
  // Sorted defined values 0, 0.25, 0.5, 1 (n = 4): median (0.25 + 0.5) / 2; numpy's linear
  // percentile at position q (n − 1): p25 at 0.75 → 0.1875, p75 at 2.25 → 0.625.
  const auto d = evax::value_distribution({0.5, std::nan(""), 1.0, 0.0, 0.25});
  CHECK(d.count == 4);
  CHECK(d.undefined == 1);
  CHECK(d.mean == 0.4375);
  CHECK(d.median == 0.375);
  CHECK(d.p25 == 0.1875);
  CHECK(d.p75 == 0.625);
  CHECK(d.min == 0.0);
  CHECK(d.max == 1.0);
  const auto one = evax::value_distribution({0.3});
  CHECK((one.median == 0.3 && one.p25 == 0.3 && one.p75 == 0.3));
  const auto none = evax::value_distribution({std::nan("")});
  CHECK(none.count == 0);
  CHECK(is_nan(none.mean));
}

TEST_CASE("seg metrics: bad input is a typed error", "[seg]") {
  SegMetrics m({"bg", "fg"});
  const std::vector<uint8_t> a(6, 0), b(6, 0);
  CHECK_THROWS_AS(m.add(a.data(), 2, 3, b.data(), 3, 2), evax::DataError);
  CHECK_THROWS_WITH(m.add(a.data(), 2, 3, b.data(), 3, 2), Contains("2x3") && Contains("3x2"));
  CHECK_THROWS_AS(m.add(std::vector<uint8_t>(5, 0), std::vector<uint8_t>(4, 0)), evax::DataError);
  CHECK_THROWS_WITH(m.add(std::vector<uint8_t>(5, 0), std::vector<uint8_t>(4, 0)),
                    Contains("5 pixels") && Contains("has 4"));
  CHECK_THROWS_AS(m.add(std::vector<uint8_t>{0, 2}, std::vector<uint8_t>{0, 1}), evax::DataError);
  CHECK_THROWS_WITH(m.add(std::vector<uint8_t>{0, 2}, std::vector<uint8_t>{0, 1}),
                    Contains("prediction value 2"));
  CHECK_THROWS_AS(m.add(std::vector<uint8_t>{0, 1}, std::vector<uint8_t>{7, 1}), evax::DataError);
  CHECK_THROWS_WITH(m.add(std::vector<uint8_t>{0, 1}, std::vector<uint8_t>{7, 1}),
                    Contains("label value 7"));
  CHECK(m.images() == 0);  // failed images add nothing
  CHECK_THROWS_AS(SegMetrics({"a", "a"}), evax::ConfigError);
  CHECK_THROWS_AS(SegMetrics(std::vector<std::string>{}), evax::ConfigError);
  CHECK_THROWS_AS(SegMetrics({"bg", "fg"}, 1), evax::ConfigError);
  CHECK_THROWS_AS(m.set_totals({1, 2, 3}), evax::DataError);
  CHECK_THROWS_AS(m.set_image_dice({0.5}), evax::DataError);
  CHECK_THROWS_AS(m.merge(SegMetrics({"bg", "other"})), evax::ConfigError);
  // No ignore index: 255 is then an invalid label value.
  SegMetrics strict({"bg", "fg"}, -1);
  CHECK_THROWS_AS(strict.add(std::vector<uint8_t>{0}, std::vector<uint8_t>{X}), evax::DataError);
}

TEST_CASE("seg metrics: equal to numpy's mmseg formulas", "[seg][python]") {
  const json ref = reference_cases();
  if (ref.is_null()) EVAX_SKIP("EVAX_PYTHON is not configured (numpy reference)");
  REQUIRE(ref.at("cases").size() >= 4);
  double max_diff = 0;
  for (const auto& c : ref.at("cases")) {
    const std::string name = c.at("name");
    INFO("case " << name);
    const SegMetrics m = accumulate(c);
    JsonCompare cmp;
    cmp(m.compute().to_json(), c.at("expected"), name);
    max_diff = std::max(max_diff, cmp.max_diff);

    // Three "ranks" holding every third image: summed totals + concatenated per-image lists
    // reproduce the single-process result (per-image statistics do not depend on image order).
    std::vector<int64_t> sum;
    std::vector<double> gathered;
    for (size_t r = 0; r < 3; ++r) {
      const SegMetrics part = accumulate(c, r, 3);
      const auto t = part.totals();
      if (sum.empty()) sum.assign(t.size(), 0);
      for (size_t k = 0; k < t.size(); ++k) sum[k] += t[k];
      gathered.insert(gathered.end(), part.image_dice().begin(), part.image_dice().end());
    }
    SegMetrics merged(c.at("classes").get<std::vector<std::string>>());
    merged.set_totals(sum);
    merged.set_image_dice(gathered);
    JsonCompare cmp2;
    cmp2(merged.compute().to_json(), c.at("expected"), name + " (merged)");
    SegMetrics m2 = accumulate(c, 0, 2);
    m2.merge(accumulate(c, 1, 2));
    JsonCompare cmp3;
    cmp3(m2.compute().to_json(), c.at("expected"), name + " (merge)");
    max_diff = std::max({max_diff, cmp2.max_diff, cmp3.max_diff});
  }
  WARN("seg metrics: max |evax - numpy| = " << max_diff);
}
