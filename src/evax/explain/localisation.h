// How well maps localise boxes: EVA-X's Grad-CAM scoring (grad_cam/get_cams.py, evax_finetune.md
// §4) on host arrays. Per box, the map thresholded (map > t) against the box's mask at the map's
// resolution gives an IoU; over boxes, mIoU = mean IoU, AP25 = fraction of boxes with IoU > 0.25,
// AP50 = fraction with IoU > 0.5 and "mAP" = (AP25 + AP50) / 2 (fractions here; EVA-X reports
// percentages). The threshold is the candidate 0.01 … 0.60 with the largest overall mAP.
//
// Example:
//   auto t = cam_threshold_grid();
//   std::vector<std::vector<double>> ious;  // per box, the IoU at each candidate
//   ious.push_back(box_ious(map.data(), h, w, box_rect(b, iw, ih, w, h, BoxScale::kImage), t));
//   ThresholdChoice c = choose_threshold(ious, t);
//   LocalisationReport r = localisation_report(ious, box_classes, c.index);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "evax/data/manifest.h"

namespace evax {

/// A box's mask on a map: rows [y0, y1) × columns [x0, x1), inside the map (may be empty).
struct BoxRect {
  int64_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  int64_t area() const { return (x1 > x0 && y1 > y0) ? (x1 - x0) * (y1 - y0) : 0; }
};

/// How box coordinates (pixels of the stored image) reach the map's grid.
enum class BoxScale {
  /// From the image's stored size to the map's: a map pixel belongs to the box when its centre
  /// lies inside the scaled box; a box that covers no centre gets the pixel holding its centre.
  kImage,
  /// EVA-X get_cams.py: x, y, w, h each divided by 1024, multiplied by the map side (W for x and
  /// w, H for y and h) and truncated (int()); mask[y:y+h, x:x+w] = 1, clipped as numpy slices.
  k1024,
};

/// "image" or "1024"; ConfigError naming the value otherwise.
BoxScale box_scale_from_name(const std::string& name);

/// The mask rectangle of `b` (pixels of an image of img_w × img_h) on a map_w × map_h map.
BoxRect box_rect(const Box& b, int64_t img_w, int64_t img_h, int64_t map_w, int64_t map_h,
                 BoxScale scale);

/// IoU of the map's (h × w, row-major) pixels above each threshold (map > t compared in float32,
/// as numpy compares a float32 map with a Python float; `thresholds` ascending) with the
/// rectangle: |on ∧ box| / |on ∨ box|, 0 when the union is empty.
std::vector<double> box_ious(const float* map, int64_t h, int64_t w, const BoxRect& r,
                             const std::vector<double>& thresholds);

/// Threshold-free scores of one map against one box.
struct BoxPointing {
  /// Pointing game (Zhang et al., "Top-down neural attention by excitation backprop"): 1 when the
  /// map's maximum lies inside the box; with tied maxima, the share of them inside (so a uniform
  /// map scores the box's share of the map, the chance level).
  double hit = 0;
  /// Energy-based pointing game (Score-CAM's): the share of the map's mass inside the box
  /// (negative values count as 0; an all-zero map scores the box's share of the map).
  double energy = 0;
  /// The box's share of the map: the hit rate of a maximum placed uniformly at random.
  double chance = 0;
};

/// The pointing-game hit and energy share of the map (h × w, row-major) for the rectangle.
BoxPointing box_pointing(const float* map, int64_t h, int64_t w, const BoxRect& r);

/// EVA-X's threshold candidates: k / 100 for k = 1 … 60.
std::vector<double> cam_threshold_grid();

/// Scores of a set of boxes (fractions).
struct LocalisationScores {
  double miou = 0;    ///< mean IoU
  double ap25 = 0;    ///< fraction of boxes with IoU > 0.25
  double ap50 = 0;    ///< fraction with IoU > 0.5
  double map = 0;     ///< (ap25 + ap50) / 2, EVA-X's "mAP"
  int64_t boxes = 0;  ///< boxes scored (all scores 0 when none)
  double pointing = 0;  ///< mean pointing-game hit (threshold-free; when hits were given)
  double energy = 0;    ///< mean energy share inside the box (threshold-free; when given)
  /// One-sided p-value of the pointing game against chance: P(X >= boxes hit outright), X the
  /// hits of maxima placed uniformly at random (Poisson-binomial over the boxes' shares); 1
  /// without hits.
  double pointing_p = 1;
};

/// P(X >= k) for X a sum of independent Bernoulli(p_i) (exact, by recursion over the p_i).
double poisson_binomial_tail(const std::vector<double>& p, int64_t k);

/// The scores of the given IoUs.
LocalisationScores localisation_scores(const std::vector<double>& ious);

/// A threshold picked from candidates.
struct ThresholdChoice {
  size_t index = 0;          ///< into the candidates
  double threshold = 0;      ///< candidates[index]
  LocalisationScores scores; ///< overall, at that threshold, on the boxes it was chosen on
};

/// The candidate with the largest overall mAP over the boxes (`ious[box][candidate]`); the
/// smallest such threshold on ties (and candidate 0 without boxes).
ThresholdChoice choose_threshold(const std::vector<std::vector<double>>& ious,
                                 const std::vector<double>& candidates);

/// Per class (keyed by `classes[box]`) and overall scores at candidate `index`.
struct LocalisationReport {
  std::map<std::string, LocalisationScores> per_class;
  LocalisationScores overall;
};
/// `hits`, when not empty, holds each box's BoxPointing (same order as `ious`) and fills the
/// pointing and energy means.
LocalisationReport localisation_report(const std::vector<std::vector<double>>& ious,
                                       const std::vector<std::string>& classes, size_t index,
                                       const std::vector<BoxPointing>& hits = {});

/// Chance baseline: a constant map of 1 (every pixel on at every candidate threshold, so a box
/// scores its share of the image).
std::vector<float> uniform_map(int64_t h, int64_t w);
/// Chance baseline: a Gaussian centred in the image, σ = a quarter of each side, min-max scaled
/// to [0, 1] like a CAM (the "radiologist looks at the middle" prior).
std::vector<float> centre_map(int64_t h, int64_t w);

}  // namespace evax
