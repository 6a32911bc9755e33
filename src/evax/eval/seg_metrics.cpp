#include "evax/eval/seg_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "evax/core/error.h"

namespace evax {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// a / b, NaN when b = 0 (for areas a = 0 then too: the 0/0 numpy gives mmseg).
double ratio(double a, double b) { return b == 0 ? kNaN : a / b; }

// numpy.nanmean over the given entries: NaN when all are NaN.
double nanmean(const std::vector<double>& v, size_t from) {
  double sum = 0;
  int64_t n = 0;
  for (size_t i = from; i < v.size(); ++i)
    if (!std::isnan(v[i])) sum += v[i], ++n;
  return n == 0 ? kNaN : sum / static_cast<double>(n);
}

// numpy.percentile(sorted, 100 q) with the default 'linear' method (and its lerp form).
double percentile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double t = pos - static_cast<double>(lo), a = sorted[lo], b = sorted[hi];
  return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t;
}

nlohmann::ordered_json num(double v) {
  return std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v);
}

}  // namespace

ValueDistribution value_distribution(const std::vector<double>& values) {
  ValueDistribution d;
  std::vector<double> v;
  v.reserve(values.size());
  for (double x : values) {
    if (std::isnan(x))
      ++d.undefined;
    else
      v.push_back(x);
  }
  d.count = static_cast<int64_t>(v.size());
  if (v.empty()) {
    d.mean = d.median = d.p25 = d.p75 = d.min = d.max = kNaN;
    return d;
  }
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  d.mean = sum / static_cast<double>(v.size());
  const size_t n = v.size();
  d.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;  // numpy.median
  d.p25 = percentile(v, 0.25);
  d.p75 = percentile(v, 0.75);
  d.min = v.front();
  d.max = v.back();
  return d;
}

SegMetrics::SegMetrics(std::vector<std::string> class_names, int ignore_index)
    : classes_(std::move(class_names)), ignore_index_(ignore_index) {
  EVAX_CHECK(ConfigError, !classes_.empty(), "segmentation metrics need at least one class name");
  EVAX_CHECK(ConfigError, classes_.size() <= 256,
             "segmentation metrics take uint8 class ids: at most 256 classes, got ",
             classes_.size());
  std::set<std::string> seen;
  for (const auto& c : classes_)
    EVAX_CHECK(ConfigError, seen.insert(c).second, "duplicate segmentation class name '", c, "'");
  EVAX_CHECK(ConfigError, ignore_index == -1 || (ignore_index >= 0 && ignore_index <= 255),
             "ignore_index must be -1 (none) or 0..255, got ", ignore_index);
  EVAX_CHECK(ConfigError, ignore_index < 0 || ignore_index >= num_classes(), "ignore_index ",
             ignore_index, " is also a class id (", num_classes(), " classes)");
  reset();
}

void SegMetrics::reset() {
  const size_t c = classes_.size();
  intersect_.assign(c, 0);
  union_.assign(c, 0);
  pred_.assign(c, 0);
  label_.assign(c, 0);
  image_dice_.clear();
  images_ = 0;
}

void SegMetrics::add(const uint8_t* pred, const uint8_t* label, size_t n_pixels) {
  const size_t nc = classes_.size();
  EVAX_CHECK(DataError, n_pixels == 0 || (pred && label), "segmentation metrics: null image data");
  // Per-image counts first (the per-image Dice needs them), then into the totals.
  std::vector<int64_t> inter(nc, 0), p(nc, 0), l(nc, 0);
  for (size_t i = 0; i < n_pixels; ++i) {
    const int y = label[i];
    if (y == ignore_index_) continue;
    const int x = pred[i];
    EVAX_CHECK(DataError, static_cast<size_t>(y) < nc, "segmentation label value ", y, " at pixel ",
               i, " is neither a class id (", nc, " classes) nor the ignore index ", ignore_index_);
    EVAX_CHECK(DataError, static_cast<size_t>(x) < nc, "segmentation prediction value ", x,
               " at pixel ", i, " is not a class id (", nc, " classes)");
    ++p[x];
    ++l[y];
    if (x == y) ++inter[x];
  }
  for (size_t c = 0; c < nc; ++c) {
    intersect_[c] += inter[c];
    pred_[c] += p[c];
    label_[c] += l[c];
    union_[c] += p[c] + l[c] - inter[c];
  }
  for (size_t c = 1; c < nc; ++c)
    image_dice_.push_back(p[c] + l[c] == 0 ? kNaN
                                           : 2.0 * static_cast<double>(inter[c]) /
                                                 static_cast<double>(p[c] + l[c]));
  ++images_;
}

void SegMetrics::add(const uint8_t* pred, int64_t pred_h, int64_t pred_w, const uint8_t* label,
                     int64_t label_h, int64_t label_w) {
  EVAX_CHECK(DataError, pred_h == label_h && pred_w == label_w && pred_h >= 0 && pred_w >= 0,
             "segmentation prediction is ", pred_h, "x", pred_w, " but its label is ", label_h, "x",
             label_w, " (metrics are taken at the label's original resolution)");
  add(pred, label, static_cast<size_t>(pred_h * pred_w));
}

void SegMetrics::add(const std::vector<uint8_t>& pred, const std::vector<uint8_t>& label) {
  EVAX_CHECK(DataError, pred.size() == label.size(), "segmentation prediction has ", pred.size(),
             " pixels but its label has ", label.size());
  add(pred.data(), label.data(), pred.size());
}

std::vector<int64_t> SegMetrics::totals() const {
  std::vector<int64_t> t;
  t.reserve(4 * classes_.size() + 1);
  for (const auto* v : {&intersect_, &union_, &pred_, &label_})
    t.insert(t.end(), v->begin(), v->end());
  t.push_back(images_);
  return t;
}

void SegMetrics::set_totals(const std::vector<int64_t>& t) {
  const size_t nc = classes_.size();
  EVAX_CHECK(DataError, t.size() == 4 * nc + 1, "segmentation totals: expected ", 4 * nc + 1,
             " values (4 x ", nc, " classes + images), got ", t.size());
  for (int64_t v : t) EVAX_CHECK(DataError, v >= 0, "segmentation totals: negative count ", v);
  auto it = t.begin();
  for (auto* v : {&intersect_, &union_, &pred_, &label_}) {
    std::copy(it, it + static_cast<std::ptrdiff_t>(nc), v->begin());
    it += static_cast<std::ptrdiff_t>(nc);
  }
  images_ = t.back();
}

void SegMetrics::set_image_dice(const std::vector<double>& d) {
  const size_t fg = classes_.size() - 1;
  if (fg == 0) {
    EVAX_CHECK(DataError, d.empty(), "per-image Dice given for a single-class metric");
  } else {
    EVAX_CHECK(DataError, d.size() == static_cast<size_t>(images_) * fg,
               "per-image Dice: expected ", images_, " images x ", fg,
               " foreground classes = ", static_cast<size_t>(images_) * fg, " values, got ",
               d.size());
  }
  image_dice_ = d;
}

void SegMetrics::merge(const SegMetrics& other) {
  EVAX_CHECK(ConfigError, other.classes_ == classes_ && other.ignore_index_ == ignore_index_,
             "cannot merge segmentation metrics over different classes or ignore indices");
  for (size_t c = 0; c < classes_.size(); ++c) {
    intersect_[c] += other.intersect_[c];
    union_[c] += other.union_[c];
    pred_[c] += other.pred_[c];
    label_[c] += other.label_[c];
  }
  image_dice_.insert(image_dice_.end(), other.image_dice_.begin(), other.image_dice_.end());
  images_ += other.images_;
}

SegMetricsResult SegMetrics::compute() const {
  SegMetricsResult r;
  const size_t nc = classes_.size();
  r.classes = classes_;
  r.intersect = intersect_;
  r.union_area = union_;
  r.pred_area = pred_;
  r.label_area = label_;
  r.images = images_;
  double sum_i = 0, sum_l = 0;
  for (size_t c = 0; c < nc; ++c) {
    const auto i = static_cast<double>(intersect_[c]), u = static_cast<double>(union_[c]),
               p = static_cast<double>(pred_[c]), l = static_cast<double>(label_[c]);
    r.iou.push_back(ratio(i, u));
    r.dice.push_back(ratio(2 * i, p + l));
    r.acc.push_back(ratio(i, l));
    sum_i += i;
    sum_l += l;
  }
  r.aacc = ratio(sum_i, sum_l);
  r.miou = nanmean(r.iou, 0);
  r.mdice = nanmean(r.dice, 0);
  r.macc = nanmean(r.acc, 0);
  r.miou_fg = nanmean(r.iou, 1);
  r.mdice_fg = nanmean(r.dice, 1);
  const size_t fg = nc - 1;
  for (size_t c = 0; c < fg; ++c) {
    std::vector<double> v;
    v.reserve(image_dice_.size() / fg);
    for (size_t k = c; k < image_dice_.size(); k += fg) v.push_back(image_dice_[k]);
    r.image_dice.push_back(value_distribution(v));
  }
  return r;
}

nlohmann::ordered_json SegMetricsResult::to_json() const {
  using J = nlohmann::ordered_json;
  J j = J::object();
  j["classes"] = classes;
  j["images"] = images;
  j["aAcc"] = num(aacc);
  j["mIoU"] = num(miou);
  j["mDice"] = num(mdice);
  j["mAcc"] = num(macc);
  j["mIoU_fg"] = num(miou_fg);
  j["mDice_fg"] = num(mdice_fg);
  J pc = J::object();
  for (size_t c = 0; c < classes.size(); ++c) {
    J o = J::object();
    o["iou"] = num(iou[c]);
    o["dice"] = num(dice[c]);
    o["acc"] = num(acc[c]);
    o["intersect"] = intersect[c];
    o["union"] = union_area[c];
    o["pred_area"] = pred_area[c];
    o["label_area"] = label_area[c];
    pc[classes[c]] = std::move(o);
  }
  j["per_class"] = std::move(pc);
  J pi = J::object();
  for (size_t c = 0; c < image_dice.size(); ++c) {
    const ValueDistribution& d = image_dice[c];
    J o = J::object();
    o["count"] = d.count;
    o["undefined"] = d.undefined;
    o["mean"] = num(d.mean);
    o["median"] = num(d.median);
    o["p25"] = num(d.p25);
    o["p75"] = num(d.p75);
    o["min"] = num(d.min);
    o["max"] = num(d.max);
    pi[classes[c + 1]] = std::move(o);
  }
  j["per_image_dice"] = std::move(pi);
  j["definitions"] = {
      {"mIoU", "mean IoU over all classes, background included (mmseg, EVA-X tables)"},
      {"mDice", "mean Dice over all classes, background included (mmseg, EVA-X tables)"},
      {"mAcc", "mean per-class accuracy I/L over all classes (mmseg)"},
      {"mIoU_fg", "mean IoU over the foreground classes (id >= 1) only"},
      {"mDice_fg", "mean Dice over the foreground classes (id >= 1) only"},
      {"aAcc", "pixel accuracy over all labelled pixels"},
      {"per_class", "areas summed over the data set; a 0/0 ratio is null and left out of means"},
      {"per_image_dice",
       "per foreground class, Dice of each image; 'undefined' counts images where the class is "
       "in neither prediction nor label (left out of the statistics)"},
  };
  return j;
}

}  // namespace evax
