// Classification metrics equal to scikit-learn's: ROC AUC (per class, multi-label with missing
// labels), rates at a threshold, Youden thresholds, and multi-class accuracy / confusion.
// Plain C++ on host vectors, so any caller (trainer, command, tests) can use them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace evax {

/// A label nobody knows: every metric skips it for that class only.
inline constexpr int8_t kMissingLabel = -1;

/// Scores and labels of n samples over the classes, row-major (one row per sample).
struct ScoredLabels {
  std::vector<std::string> ids;      ///< sample ids (may be empty; only used in messages)
  std::vector<std::string> classes;  ///< class names, one per column
  std::vector<double> scores;        ///< n × classes.size()
  std::vector<int8_t> labels;        ///< n × classes.size(): 0, 1 or kMissingLabel

  size_t cols() const { return classes.size(); }
  size_t rows() const { return classes.empty() ? 0 : scores.size() / classes.size(); }
  double score(size_t r, size_t c) const { return scores[r * cols() + c]; }
  int8_t label(size_t r, size_t c) const { return labels[r * cols() + c]; }
};

/// sklearn.metrics.roc_curve(y, s) (drop_intermediate=True): thresholds decrease, the first is
/// +inf (nothing predicted positive); a sample is positive at t when its score >= t.
struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;
};

/// The ROC curve of 0/1 `labels` (no missing values); empty when a label value is absent.
RocCurve roc_curve(const std::vector<double>& scores, const std::vector<int8_t>& labels);
/// sklearn's roc_auc_score of 0/1 `labels` (ties share average rank); nullopt when only one
/// label value is present.
std::optional<double> roc_auc(const std::vector<double>& scores, const std::vector<int8_t>& labels);
/// Youden's J threshold: the roc_curve threshold maximising tpr − fpr, the highest one on ties
/// (numpy's argmax over the decreasing thresholds, so +inf when no threshold beats J = 0);
/// nullopt when only one label value is present.
std::optional<double> youden_threshold(const std::vector<double>& scores,
                                       const std::vector<int8_t>& labels);

/// Per-class AUC and their mean (mAUC).
struct AucResult {
  std::vector<std::optional<double>> auc;  ///< per class; nullopt when a label value is absent
  std::optional<double> mauc;              ///< mean over the classes with an AUC
  std::vector<std::string> warnings;       ///< one line per class left out of the mean
};

/// AUC of every class over its known labels; classes without both label values are nullopt,
/// warned about and left out of the mean (never counted as 0 or NaN).
AucResult per_class_auc(const ScoredLabels& d);
/// youden_threshold of every class over its known labels.
std::vector<std::optional<double>> per_class_youden(const ScoredLabels& d);

/// Confusion counts of one class at one threshold and the rates they give.
struct BinaryRates {
  double threshold = 0.5;  ///< positive when score >= threshold
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  std::optional<double> sensitivity;  ///< tp / (tp + fn); nullopt when no positive
  std::optional<double> specificity;  ///< tn / (tn + fp); nullopt when no negative
  std::optional<double> ppv;          ///< tp / (tp + fp); nullopt when nothing predicted positive
  std::optional<double> f1;           ///< 2tp / (2tp + fp + fn); nullopt when all three are 0
};

/// Rates of every class at its own threshold (`thresholds` has one per class).
std::vector<BinaryRates> per_class_rates(const ScoredLabels& d,
                                         const std::vector<double>& thresholds);
/// Rates of every class at one threshold shared by all.
std::vector<BinaryRates> per_class_rates(const ScoredLabels& d, double threshold = 0.5);

/// Multi-class results; the predicted class is the first highest score (numpy argmax).
struct MulticlassResult {
  double accuracy = 0;                        ///< top-1, over all samples (micro)
  std::vector<std::optional<double>> recall;  ///< per true class; nullopt when it has no sample
  std::vector<std::optional<double>> ppv;     ///< per predicted class; nullopt when never predicted
  std::vector<std::vector<int64_t>> confusion;  ///< [true][predicted] counts
};

/// Multi-class metrics of one-hot `d.labels` (DataError naming the sample when a row is not
/// one-hot or when there is no sample).
MulticlassResult multiclass_metrics(const ScoredLabels& d);

}  // namespace evax
