#include "evax/eval/metrics.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "evax/core/error.h"

namespace evax {
namespace {

// numpy's pairwise summation (np.add.reduce on a contiguous float64 array), so the trapezoid sum
// rounds as sklearn's does.
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double res = 0.;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// The known (score, label) pairs of class `c`.
void known_column(const ScoredLabels& d, size_t c, std::vector<double>& s, std::vector<int8_t>& y) {
  s.clear();
  y.clear();
  for (size_t r = 0; r < d.rows(); ++r) {
    if (d.label(r, c) == kMissingLabel) continue;
    s.push_back(d.score(r, c));
    y.push_back(d.label(r, c));
  }
}

std::optional<double> ratio(int64_t num, int64_t den) {
  if (den == 0) return std::nullopt;
  return static_cast<double>(num) / static_cast<double>(den);
}

void check_shape(const ScoredLabels& d) {
  EVAX_ASSERT(!d.classes.empty() && d.scores.size() % d.cols() == 0 &&
              d.labels.size() == d.scores.size());
}

}  // namespace

RocCurve roc_curve(const std::vector<double>& scores, const std::vector<int8_t>& labels) {
  EVAX_ASSERT(scores.size() == labels.size());
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  // Cumulative counts at the last sample of each distinct score (sklearn's threshold_idxs).
  std::vector<int64_t> tps, fps;
  std::vector<double> thr;
  int64_t tp = 0;
  for (size_t i = 0; i < n; ++i) {
    EVAX_ASSERT(labels[order[i]] == 0 || labels[order[i]] == 1);
    tp += labels[order[i]];
    if (i + 1 == n || scores[order[i]] != scores[order[i + 1]]) {
      tps.push_back(tp);
      fps.push_back(static_cast<int64_t>(i + 1) - tp);
      thr.push_back(scores[order[i]]);
    }
  }
  if (tps.empty() || tps.back() == 0 || fps.back() == 0) return {};
  const int64_t pos = tps.back(), neg = fps.back();
  // drop_intermediate: keep a point only where the curve turns (second differences nonzero).
  RocCurve c;
  c.fpr.push_back(0.0);
  c.tpr.push_back(0.0);
  c.thresholds.push_back(std::numeric_limits<double>::infinity());
  const size_t m = tps.size();
  for (size_t i = 0; i < m; ++i) {
    const bool keep = m <= 2 || i == 0 || i + 1 == m || fps[i + 1] - 2 * fps[i] + fps[i - 1] != 0 ||
                      tps[i + 1] - 2 * tps[i] + tps[i - 1] != 0;
    if (!keep) continue;
    c.fpr.push_back(static_cast<double>(fps[i]) / static_cast<double>(neg));
    c.tpr.push_back(static_cast<double>(tps[i]) / static_cast<double>(pos));
    c.thresholds.push_back(thr[i]);
  }
  return c;
}

std::optional<double> roc_auc(const std::vector<double>& scores,
                              const std::vector<int8_t>& labels) {
  const RocCurve c = roc_curve(scores, labels);
  if (c.fpr.empty()) return std::nullopt;
  // numpy.trapezoid: sum of diff(x) * (y[1:] + y[:-1]) / 2.0.
  std::vector<double> terms(c.fpr.size() - 1);
  for (size_t i = 0; i + 1 < c.fpr.size(); ++i)
    terms[i] = (c.fpr[i + 1] - c.fpr[i]) * (c.tpr[i + 1] + c.tpr[i]) / 2.0;
  return pairwise_sum(terms.data(), terms.size());
}

std::optional<double> youden_threshold(const std::vector<double>& scores,
                                       const std::vector<int8_t>& labels) {
  const RocCurve c = roc_curve(scores, labels);
  if (c.fpr.empty()) return std::nullopt;
  size_t best = 0;
  for (size_t i = 1; i < c.fpr.size(); ++i)
    if (c.tpr[i] - c.fpr[i] > c.tpr[best] - c.fpr[best]) best = i;  // first max wins
  return c.thresholds[best];
}

AucResult per_class_auc(const ScoredLabels& d) {
  check_shape(d);
  AucResult r;
  std::vector<double> s;
  std::vector<int8_t> y;
  double sum = 0;
  size_t counted = 0;
  for (size_t c = 0; c < d.cols(); ++c) {
    known_column(d, c, s, y);
    r.auc.push_back(roc_auc(s, y));
    if (r.auc.back()) {
      sum += *r.auc.back();
      ++counted;
      continue;
    }
    const auto pos = std::count(y.begin(), y.end(), int8_t{1});
    r.warnings.push_back(
        y.empty()
            ? str_cat("class '", d.classes[c], "': no known label; AUC undefined, left out of mAUC")
            : str_cat("class '", d.classes[c], "': all ", y.size(), " known labels are ",
                      pos > 0 ? 1 : 0, "; AUC undefined, left out of mAUC"));
  }
  if (counted > 0) r.mauc = sum / static_cast<double>(counted);
  return r;
}

std::vector<std::optional<double>> per_class_youden(const ScoredLabels& d) {
  check_shape(d);
  std::vector<std::optional<double>> out;
  std::vector<double> s;
  std::vector<int8_t> y;
  for (size_t c = 0; c < d.cols(); ++c) {
    known_column(d, c, s, y);
    out.push_back(youden_threshold(s, y));
  }
  return out;
}

std::vector<BinaryRates> per_class_rates(const ScoredLabels& d,
                                         const std::vector<double>& thresholds) {
  check_shape(d);
  EVAX_ASSERT(thresholds.size() == d.cols(), "one threshold per class");
  std::vector<BinaryRates> out(d.cols());
  for (size_t c = 0; c < d.cols(); ++c) {
    BinaryRates& b = out[c];
    b.threshold = thresholds[c];
    for (size_t r = 0; r < d.rows(); ++r) {
      const int8_t y = d.label(r, c);
      if (y == kMissingLabel) continue;
      const bool p = d.score(r, c) >= b.threshold;
      (y == 1 ? (p ? b.tp : b.fn) : (p ? b.fp : b.tn)) += 1;
    }
    b.sensitivity = ratio(b.tp, b.tp + b.fn);
    b.specificity = ratio(b.tn, b.tn + b.fp);
    b.ppv = ratio(b.tp, b.tp + b.fp);
    b.f1 = ratio(2 * b.tp, 2 * b.tp + b.fp + b.fn);
  }
  return out;
}

std::vector<BinaryRates> per_class_rates(const ScoredLabels& d, double threshold) {
  return per_class_rates(d, std::vector<double>(d.cols(), threshold));
}

MulticlassResult multiclass_metrics(const ScoredLabels& d) {
  check_shape(d);
  const size_t k = d.cols(), n = d.rows();
  EVAX_CHECK(DataError, n > 0, "multi-class metrics: no sample");
  MulticlassResult m;
  m.confusion.assign(k, std::vector<int64_t>(k, 0));
  int64_t correct = 0;
  for (size_t r = 0; r < n; ++r) {
    size_t truth = k, ones = 0, pred = 0;
    for (size_t c = 0; c < k; ++c) {
      const int8_t y = d.label(r, c);
      if (y == 1) truth = c, ++ones;
      EVAX_CHECK(DataError, y == 0 || y == 1, "multi-class target of sample ",
                 d.ids.empty() ? std::to_string(r) : "'" + d.ids[r] + "'",
                 " is not one-hot: class '", d.classes[c], "' is missing");
      if (d.score(r, c) > d.score(r, pred)) pred = c;
    }
    EVAX_CHECK(DataError, ones == 1, "multi-class target of sample ",
               d.ids.empty() ? std::to_string(r) : "'" + d.ids[r] + "'", " is not one-hot: ", ones,
               " classes are 1");
    ++m.confusion[truth][pred];
    correct += truth == pred;
  }
  m.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  for (size_t c = 0; c < k; ++c) {
    int64_t row = 0, col = 0;
    for (size_t j = 0; j < k; ++j) row += m.confusion[c][j], col += m.confusion[j][c];
    m.recall.push_back(ratio(m.confusion[c][c], row));
    m.ppv.push_back(ratio(m.confusion[c][c], col));
  }
  return m;
}

}  // namespace evax
