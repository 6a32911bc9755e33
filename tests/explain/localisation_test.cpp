// Localisation metrics against a direct numpy computation (tools/localisation_reference.py:
// random maps and boxes, EVA-X's IoU / mIoU / AP25 / AP50 / mAP and threshold search, both box
// rules), the centred baseline map, and small cases computed by hand.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <vector>

#include "evax/core/error.h"
#include "evax/explain/localisation.h"
#include "python_reference.h"
#include "skip.h"
#include "tensor_util.h"

using namespace evax;

namespace {

const TensorMap& reference() {
  static const TensorMap map = test::python_reference("localisation_reference.py",
                                                      "explain/localisation_reference.safetensors");
  return map;
}

torch::Tensor reft(const std::string& name) { return test::reference_tensor(reference(), name); }

void check_scores(const LocalisationScores& s, const torch::Tensor& want) {
  auto w = want.to(torch::kFloat64).contiguous();
  const double* v = w.data_ptr<double>();
  CHECK(s.miou == Approx(v[0]).margin(1e-12));
  CHECK(s.ap25 == Approx(v[1]).margin(1e-12));
  CHECK(s.ap50 == Approx(v[2]).margin(1e-12));
  CHECK(s.map == Approx(v[3]).margin(1e-12));
  CHECK(s.boxes == static_cast<int64_t>(v[4]));
}

}  // namespace

TEST_CASE("localisation: rects, IoUs, scores and the threshold search equal numpy's") {
  if (std::string(EVAX_PYTHON).empty()) EVAX_SKIP("no EVAX_PYTHON: the reference needs numpy");
  const auto boxes = reft("boxes").contiguous();
  const auto box_map = reft("box_map"), box_label = reft("box_label"), box_group = reft("box_group");
  const auto box_img = reft("box_img");
  const int64_t n = boxes.size(0);
  const std::vector<std::string> labels = {"A", "B", "C"};
  const std::vector<double> grid = cam_threshold_grid();
  REQUIRE(grid.size() == 60);
  for (const char* rule : {"image", "1024"}) {
    INFO("rule " << rule);
    const BoxScale scale = box_scale_from_name(rule);
    const auto want_rects = reft(std::string(rule) + "/rects");
    const auto want_ious = reft(std::string(rule) + "/ious");
    const auto want_hits = reft(std::string(rule) + "/hits");
    std::vector<std::vector<double>> val, test;
    std::vector<std::string> test_classes;
    std::vector<BoxPointing> test_hits;
    double worst_hit = 0;
    int64_t tied = 0;
    int64_t bad_rects = 0;
    double worst = 0;
    for (int64_t b = 0; b < n; ++b) {
      const auto m = reft("map/" + std::to_string(box_map[b].item<int64_t>())).contiguous();
      Box box;
      box.x = static_cast<float>(boxes[b][0].item<double>());
      box.y = static_cast<float>(boxes[b][1].item<double>());
      box.w = static_cast<float>(boxes[b][2].item<double>());
      box.h = static_cast<float>(boxes[b][3].item<double>());
      // The manifest's Box holds floats: the reference's doubles must be floats already.
      REQUIRE(static_cast<double>(box.x) == boxes[b][0].item<double>());
      const BoxRect r = box_rect(box, box_img[b][0].item<int64_t>(), box_img[b][1].item<int64_t>(),
                                 m.size(1), m.size(0), scale);
      const std::vector<int64_t> got{r.x0, r.y0, r.x1, r.y1};
      for (int k = 0; k < 4; ++k) bad_rects += got[k] != want_rects[b][k].item<int64_t>();
      const auto ious = box_ious(m.data_ptr<float>(), m.size(0), m.size(1), r, grid);
      for (size_t k = 0; k < grid.size(); ++k)
        worst = std::max(worst, std::abs(ious[k] - want_ious[b][static_cast<int64_t>(k)].item<double>()));
      const BoxPointing hp = box_pointing(m.data_ptr<float>(), m.size(0), m.size(1), r);
      const std::vector<double> got_hit{hp.hit, hp.energy, hp.chance};
      for (int k = 0; k < 3; ++k)
        worst_hit = std::max(worst_hit, std::abs(got_hit[k] - want_hits[b][k].item<double>()));
      tied += hp.hit > 0 && hp.hit < 1;
      if (box_group[b].item<int64_t>() == 1) {
        test.push_back(ious);
        test_hits.push_back(hp);
        test_classes.push_back(labels[static_cast<size_t>(box_label[b].item<int64_t>())]);
      } else {
        val.push_back(ious);
      }
    }
    CHECK(bad_rects == 0);
    CHECK(worst <= 1e-15);
    CHECK(worst_hit <= 1e-12);
    CHECK(tied > 0);  // the reference's tied maxima reach boxes: fractional hits are exercised
    // Threshold-free scores and the pointing game's p-value (the reference computes it by a DFT).
    const LocalisationReport pr = localisation_report(test, test_classes, 0, test_hits);
    for (const char* cls : {"overall", "A", "B", "C"}) {
      INFO("pointing, class " << cls);
      const LocalisationScores& s = std::string(cls) == "overall" ? pr.overall : pr.per_class.at(cls);
      const auto want = reft(std::string(rule) + "/pointing/" + cls);
      CHECK(s.pointing == Approx(want[0].item<double>()).margin(1e-12));
      CHECK(s.energy == Approx(want[1].item<double>()).margin(1e-12));
      CHECK(s.pointing_p == Approx(want[2].item<double>()).margin(1e-12));
    }
    // Blobs near the boxes: a real effect under the image rule (1024 misplaces these boxes).
    if (std::string(rule) == "image") CHECK(pr.overall.pointing_p < 0.5);
    for (const char* protocol : {"paper", "split"}) {
      INFO("protocol " << protocol);
      const std::string key = std::string(rule) + "/" + protocol;
      const ThresholdChoice t = choose_threshold(std::string(protocol) == "paper" ? test : val, grid);
      CHECK(static_cast<int64_t>(t.index) == reft(key + "/index").item<int64_t>());
      CHECK(t.threshold == grid[t.index]);
      const LocalisationReport r = localisation_report(test, test_classes, t.index);
      check_scores(r.overall, reft(key + "/overall"));
      for (const auto& l : labels) {
        INFO("class " << l);
        REQUIRE(r.per_class.count(l));
        check_scores(r.per_class.at(l), reft(key + "/" + l));
      }
    }
  }
  // The reference exercises a real choice: the two protocols pick different thresholds.
  CHECK(reft("image/paper/index").item<int64_t>() != reft("image/split/index").item<int64_t>());
  // The centred baseline map.
  for (auto [h, w] : {std::pair<int64_t, int64_t>{24, 36}, {40, 40}}) {
    const auto c = centre_map(h, w);
    const auto want = reft("centre/" + std::to_string(h) + "x" + std::to_string(w));
    CHECK(test::max_abs(torch::from_blob(const_cast<float*>(c.data()), {h, w}, torch::kFloat32), want) <= 1e-7);
  }
}

TEST_CASE("localisation: small cases by hand") {
  // A 4 x 4 map; the box covers rows 1-2, columns 1-2 (4 pixels).
  const std::vector<float> map = {0.0f, 0.1f, 0.1f, 0.0f,  //
                                  0.1f, 0.9f, 0.6f, 0.0f,  //
                                  0.1f, 0.7f, 0.3f, 0.2f,  //
                                  0.0f, 0.0f, 0.0f, 0.0f};
  const BoxRect r{1, 1, 3, 3};
  const auto ious = box_ious(map.data(), 4, 4, r, {0.05, 0.25, 0.3, 0.5, 0.8, 0.95});
  // t 0.05: on = 9 pixels (all > 0.05: 0.1 x4, 0.9, 0.6, 0.7, 0.3, 0.2), inter 4, union 9.
  CHECK(ious[0] == Approx(4.0 / 9.0));
  // t 0.25: on = {0.9, 0.6, 0.7, 0.3}: all in the box → 1.
  CHECK(ious[1] == 1.0);
  // t 0.3: 0.3 is not > 0.3 (in float32 either): 3 of 4.
  CHECK(ious[2] == 0.75);
  CHECK(ious[3] == 0.75);  // t 0.5: {0.9, 0.6, 0.7}
  CHECK(ious[4] == 0.25);  // t 0.8: {0.9}
  CHECK(ious[5] == 0.0);   // t 0.95: nothing on, union = the box
  // Nothing on and an empty box: IoU 0, not NaN.
  CHECK(box_ious(map.data(), 4, 4, BoxRect{2, 2, 2, 2}, {0.95})[0] == 0.0);

  // Scores: IoUs 0.1, 0.3, 0.6, 0.26 → mIoU 0.315, AP25 3/4, AP50 1/4, mAP 0.5.
  const LocalisationScores s = localisation_scores({0.1, 0.3, 0.6, 0.26});
  CHECK(s.miou == Approx(0.315));
  CHECK(s.ap25 == 0.75);
  CHECK(s.ap50 == 0.25);
  CHECK(s.map == 0.5);
  CHECK(s.boxes == 4);
  // Exactly 0.25 / 0.5 do not count (strict >).
  CHECK(localisation_scores({0.25, 0.5}).ap25 == 0.5);
  CHECK(localisation_scores({0.25, 0.5}).ap50 == 0.0);
  CHECK(localisation_scores({}).boxes == 0);

  // Threshold search: candidate 1 and 2 tie on mAP; the smaller wins.
  const std::vector<std::vector<double>> ious2 = {{0.1, 0.6, 0.6}, {0.0, 0.3, 0.3}, {0.2, 0.1, 0.0}};
  const ThresholdChoice t = choose_threshold(ious2, {0.1, 0.2, 0.3});
  CHECK(t.index == 1);
  CHECK(t.threshold == 0.2);
  CHECK(t.scores.map == Approx((2.0 / 3 + 1.0 / 3) / 2));

  // Box rules. 1024: EVA-X's int(v / 1024 * 224) per value.
  Box b{"Nodule", 100.f, 200.f, 50.f, 30.f};
  BoxRect e = box_rect(b, 1024, 1024, 224, 224, BoxScale::k1024);
  CHECK(e.x0 == 21);  // int(21.875)
  CHECK(e.y0 == 43);  // int(43.75)
  CHECK(e.x1 == 21 + 10);  // w: int(10.9375)
  CHECK(e.y1 == 43 + 6);   // h: int(6.5625)
  // Image scale, same image: the pixel-centre rule; an integer box at scale 1 is itself.
  Box p{"Nodule", 47.f, 18.f, 2.f, 2.f};
  BoxRect q = box_rect(p, 64, 64, 64, 64, BoxScale::kImage);
  CHECK((q.x0 == 47 && q.x1 == 49 && q.y0 == 18 && q.y1 == 20));
  // A box smaller than a map pixel keeps the pixel holding its centre.
  q = box_rect(p, 1024, 1024, 14, 14, BoxScale::kImage);
  CHECK(q.area() == 1);
  CHECK(q.x0 == 0);  // (47 + 1) / 1024 · 14 = 0.66 → pixel 0
  CHECK_THROWS_AS(box_scale_from_name("512"), ConfigError);

  // Baselines: uniform is on everywhere (a box scores its share); centre peaks in the middle.
  const auto u = uniform_map(4, 4);
  CHECK(box_ious(u.data(), 4, 4, r, {0.6})[0] == 0.25);
  const auto c = centre_map(5, 5);
  CHECK(c[12] == Approx(1.0).margin(1e-6));
  CHECK(*std::min_element(c.begin(), c.end()) == 0.0f);

  // Pointing game: the 4 x 4 map's maximum (0.9) lies in the box; energy = in-box mass / mass.
  BoxPointing h = box_pointing(map.data(), 4, 4, r);
  CHECK(h.hit == 1.0);
  CHECK(h.energy == Approx((0.9 + 0.6 + 0.7 + 0.3) / 3.1));  // mass 3.1 in all
  CHECK(h.chance == 0.25);
  CHECK(box_pointing(map.data(), 4, 4, BoxRect{0, 3, 4, 4}).hit == 0.0);
  // Tied maxima count by their share inside; a uniform map scores the box's share; an all-zero
  // map has no mass: its energy is the box's share too; negative values carry no mass.
  CHECK(box_pointing(u.data(), 4, 4, r).hit == 0.25);
  const std::vector<float> zero(16, 0.0f);
  CHECK(box_pointing(zero.data(), 4, 4, r).energy == 0.25);
  std::vector<float> neg(16, -1.0f);
  neg[5] = 2.0f;  // in the box
  neg[0] = 2.0f;  // outside
  CHECK(box_pointing(neg.data(), 4, 4, r).hit == 0.5);
  CHECK(box_pointing(neg.data(), 4, 4, r).energy == 0.5);
  // Poisson-binomial tail by hand: p = {0.5, 0.5}: P(X >= 1) = 0.75, P(X >= 2) = 0.25.
  CHECK(poisson_binomial_tail({0.5, 0.5}, 0) == 1.0);
  CHECK(poisson_binomial_tail({0.5, 0.5}, 1) == Approx(0.75));
  CHECK(poisson_binomial_tail({0.5, 0.5}, 2) == Approx(0.25));
  CHECK(poisson_binomial_tail({0.5, 0.5}, 3) == 0.0);
  // The report: hits 1 and 0.5 (not outright) → pointing 0.75, one outright hit: p = P(X >= 1).
  const LocalisationReport rep = localisation_report(
      {{0.3}, {0.1}}, {"A", "A"}, 0, {BoxPointing{1.0, 0.4, 0.1}, BoxPointing{0.5, 0.2, 0.2}});
  CHECK(rep.overall.pointing == 0.75);
  CHECK(rep.overall.energy == Approx(0.3));
  CHECK(rep.overall.pointing_p == Approx(1 - 0.9 * 0.8));
  CHECK(localisation_report({{0.3}}, {"A"}, 0).overall.pointing_p == 1.0);  // no hits given
}
