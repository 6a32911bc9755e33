// Segmentation metrics equal to mmseg 0.29's (CustomDataset.evaluate with ['mIoU', 'mDice'],
// metrics.intersect_and_union + total_area_to_metrics), plus foreground-only means and a per-image
// Dice distribution. Plain C++ on host arrays of class ids at the original image resolution.
//
// Definitions (per class c, areas summed over the whole dataset, pixels whose label is the
// ignore index left out of every area, the prediction's included):
//   I_c = #(pred = c and label = c), P_c = #(pred = c), L_c = #(label = c), U_c = P_c + L_c − I_c
//   IoU_c = I_c / U_c, Dice_c = 2 I_c / (P_c + L_c), Acc_c = I_c / L_c, aAcc = Σ I / Σ L
// A 0/0 is NaN (a class absent from prediction and label has NaN IoU and Dice; a class absent from
// the label has NaN Acc) and means are NaN-means: NaN classes are left out, never counted as 0.
//   mIoU / mDice / mAcc       over all classes, background included: mmseg and EVA-X's tables
//   mIoU_fg / mDice_fg        over the classes >= 1 only
// Per-image Dice of a foreground class c in one image: 2 I / (P + L) over that image's pixels. An
// image where c is in neither the prediction nor the label has NO per-image Dice for c (0/0): it
// is recorded as undefined (NaN in the exported list), counted in `undefined`, and left out of
// the distribution — a correct "nothing here" must not score 0, nor inflate the mean with 1.
//
// Distributed use: each rank add()s its images; then sum totals() over ranks (an all-reduce of
// int64) and concatenate image_dice() (an all-gather of double) and hand both to a SegMetrics via
// set_totals() / set_image_dice() (or merge() two accumulators in one process).
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace evax {

/// mmseg's ignore_index: label pixels with this value are left out of every metric.
inline constexpr int kSegIgnoreIndex = 255;

/// Summary of a list of per-image values; every statistic is over the defined values only and NaN
/// when there are none (percentiles: numpy's default linear interpolation).
struct ValueDistribution {
  int64_t count = 0;      ///< defined values
  int64_t undefined = 0;  ///< undefined (NaN) values, left out of the statistics
  double mean = 0, median = 0, p25 = 0, p75 = 0, min = 0, max = 0;
};

/// ValueDistribution of `values`, NaN entries counted as undefined.
ValueDistribution value_distribution(const std::vector<double>& values);

/// Everything SegMetrics::compute() reports. Per-class vectors have one entry per class.
struct SegMetricsResult {
  std::vector<std::string> classes;  ///< class names, index = class id
  /// Data-set totals per class: I, U, P and L (pixels).
  std::vector<int64_t> intersect, union_area, pred_area, label_area;
  std::vector<double> iou, dice, acc;  ///< per class; NaN where 0/0
  double aacc = 0;      ///< Σ I / Σ L over all classes (NaN when no labelled pixel)
  double miou = 0;      ///< NaN-mean of iou over all classes (background included; mmseg, EVA-X)
  double mdice = 0;     ///< NaN-mean of dice over all classes (background included)
  double macc = 0;      ///< NaN-mean of acc over all classes (mmseg's mAcc)
  double miou_fg = 0;   ///< NaN-mean of iou over classes >= 1 (foreground only)
  double mdice_fg = 0;  ///< NaN-mean of dice over classes >= 1 (foreground only)
  int64_t images = 0;   ///< images added
  /// Per foreground class (index c − 1 for class c): distribution of its per-image Dice.
  std::vector<ValueDistribution> image_dice;

  /// Stable JSON: "classes", "images", "aAcc", "mIoU", "mDice", "mAcc", "mIoU_fg", "mDice_fg",
  /// "per_class" {name: {iou, dice, acc, intersect, union, pred_area, label_area}},
  /// "per_image_dice" {foreground name: {count, undefined, mean, median, p25, p75, min, max}},
  /// "definitions" {key: one-line meaning}. Values are fractions in [0, 1], null for NaN.
  nlohmann::ordered_json to_json() const;
};

/// Accumulates per-class areas and per-image foreground Dice over a data set.
class SegMetrics {
 public:
  /// `class_names[c]` names class id c (at least one; ConfigError for none or a duplicate);
  /// `ignore_index` (0..255, or -1 for none) marks label pixels left out.
  explicit SegMetrics(std::vector<std::string> class_names, int ignore_index = kSegIgnoreIndex);

  /// One image: `pred` and `label` hold n_pixels class ids each, in the same pixel order.
  /// DataError for a prediction id >= the number of classes or a label id that is neither a class
  /// nor the ignore index (mmseg would silently drop it from the label area only).
  void add(const uint8_t* pred, const uint8_t* label, size_t n_pixels);
  /// add() of a pred_h × pred_w prediction and a label_h × label_w label (row-major); DataError
  /// naming both sizes when they differ (metrics are taken at the label's resolution).
  void add(const uint8_t* pred, int64_t pred_h, int64_t pred_w, const uint8_t* label,
           int64_t label_h, int64_t label_w);
  /// add() of two vectors; DataError naming both sizes when they differ.
  void add(const std::vector<uint8_t>& pred, const std::vector<uint8_t>& label);

  int64_t num_classes() const { return static_cast<int64_t>(classes_.size()); }
  const std::vector<std::string>& classes() const { return classes_; }
  int64_t images() const { return images_; }

  /// The dataset totals, flat, 4·C + 1 int64 (sum them over ranks): intersect[C], union[C],
  /// pred_area[C], label_area[C], images.
  std::vector<int64_t> totals() const;
  /// Replaces the totals by `t` (layout of totals(); DataError for a wrong length or a negative).
  void set_totals(const std::vector<int64_t>& t);
  /// Per-image foreground Dice, image-major: images × (C − 1) doubles, NaN where undefined
  /// (concatenate over ranks; the statistics do not depend on the order of images).
  const std::vector<double>& image_dice() const { return image_dice_; }
  /// Replaces the per-image list (DataError when its length is not a multiple of C − 1, or does
  /// not match images() when C > 1).
  void set_image_dice(const std::vector<double>& d);
  /// Adds `other`'s totals and appends its per-image list (ConfigError when the classes or the
  /// ignore index differ).
  void merge(const SegMetrics& other);
  /// Forgets everything added.
  void reset();

  /// The metrics of everything added (or set) so far.
  SegMetricsResult compute() const;

 private:
  std::vector<std::string> classes_;
  int ignore_index_;
  std::vector<int64_t> intersect_, union_, pred_, label_;
  std::vector<double> image_dice_;
  int64_t images_ = 0;
};

}  // namespace evax
