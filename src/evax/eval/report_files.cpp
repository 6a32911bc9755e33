#include "evax/eval/report_files.h"

#include "evax/io/image.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <system_error>

#include "evax/core/error.h"
#include "evax/core/files.h"

namespace fs = std::filesystem;

namespace evax {
namespace {

using J = nlohmann::ordered_json;

J opt_json(const std::optional<double>& v) { return v ? J(*v) : J(nullptr); }

// JSON has no infinity (nlohmann would write null); a Youden threshold can be +inf.
J threshold_json(const std::optional<double>& t) {
  if (!t) return nullptr;
  if (std::isinf(*t)) return *t > 0 ? "inf" : "-inf";
  return *t;
}

std::string cell(const std::optional<double>& v) { return v ? format_double_exact(*v) : ""; }

void make_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    raise<DataError>("cannot create directory '", dir, "': ",
                     ec ? ec.message() : "a file is in the way");
}

// Known labels of one class, with their scores (what every metric of that class sees).
void known_column(const ScoredLabels& d, size_t c, std::vector<double>& s,
                  std::vector<int8_t>& y) {
  for (size_t r = 0; r < d.rows(); ++r) {
    if (d.label(r, c) == kMissingLabel) continue;
    s.push_back(d.score(r, c));
    y.push_back(d.label(r, c));
  }
}

std::string sample_id(const ScoredLabels& d, size_t r) {
  return d.ids.empty() ? std::to_string(r) : d.ids[r];
}

void check_input(const ScoredLabels& d, const EvaluationFilesOptions& o) {
  EVAX_ASSERT(!d.classes.empty() && d.scores.size() % d.cols() == 0 &&
              d.labels.size() == d.scores.size());
  EVAX_ASSERT(d.ids.empty() || d.ids.size() == d.rows(), "one id per sample");
  EVAX_ASSERT(o.val_thresholds.empty() || o.val_thresholds.size() == d.cols(),
              "one validation threshold per class");
  // predictions.csv must read back (`evax metrics` takes finite numbers only).
  for (size_t r = 0; r < d.rows(); ++r)
    for (size_t c = 0; c < d.cols(); ++c)
      EVAX_CHECK(DataError, std::isfinite(d.score(r, c)), "sample '", sample_id(d, r),
                 "', class '", d.classes[c], "': score is ", format_double_exact(d.score(r, c)),
                 " (not finite)");
}

// ---- The CSVs.

std::string scores_csv(const ScoredLabels& d, bool labels) {
  std::string s = "id";
  for (const auto& c : d.classes) s += "," + csv_field(c);
  s += "\n";
  for (size_t r = 0; r < d.rows(); ++r) {
    s += csv_field(sample_id(d, r));
    for (size_t c = 0; c < d.cols(); ++c) {
      s += ",";
      if (!labels) s += format_double_exact(d.score(r, c));
      else if (d.label(r, c) != kMissingLabel) s += d.label(r, c) == 1 ? "1" : "0";
    }
    s += "\n";
  }
  return s;
}

std::string per_class_csv(const ScoredLabels& d, const EvaluationFilesOptions& o,
                          const AucResult& auc, const std::vector<BinaryRates>& at05,
                          const std::vector<std::optional<BinaryRates>>& at_val) {
  std::string s;
  if (o.task == MetricsTask::kMulticlass) {
    const MulticlassResult m = multiclass_metrics(d);
    s = "class,auc,recall,ppv\n";
    for (size_t c = 0; c < d.cols(); ++c)
      s += csv_field(d.classes[c]) + "," + cell(auc.auc[c]) + "," + cell(m.recall[c]) + "," +
           cell(m.ppv[c]) + "\n";
    return s;
  }
  s = "class,auc,sensitivity,specificity,ppv,f1,youden_threshold,sens_youden,spec_youden,"
      "ppv_youden,f1_youden\n";
  for (size_t c = 0; c < d.cols(); ++c) {
    const BinaryRates& b = at05[c];
    s += csv_field(d.classes[c]) + "," + cell(auc.auc[c]) + "," + cell(b.sensitivity) + "," +
         cell(b.specificity) + "," + cell(b.ppv) + "," + cell(b.f1);
    if (c < at_val.size() && at_val[c]) {
      const BinaryRates& y = *at_val[c];
      s += "," + format_double_exact(y.threshold) + "," + cell(y.sensitivity) + "," +
           cell(y.specificity) + "," + cell(y.ppv) + "," + cell(y.f1) + "\n";
    } else {
      s += ",,,,,\n";
    }
  }
  return s;
}

// ---- metrics.json.

J at_youden_json(const ScoredLabels& d, const EvaluationFilesOptions& o,
                 const std::vector<std::optional<BinaryRates>>& at_val) {
  J a = J::object();
  J thr = J::object(), sens = J::object(), spec = J::object(), ppv = J::object(),
    f1 = J::object(), counts = J::object();
  for (size_t c = 0; c < d.cols(); ++c) {
    const std::string& k = d.classes[c];
    const std::optional<BinaryRates>& b = at_val[c];
    thr[k] = threshold_json(o.val_thresholds[c]);
    sens[k] = b ? opt_json(b->sensitivity) : J(nullptr);
    spec[k] = b ? opt_json(b->specificity) : J(nullptr);
    ppv[k] = b ? opt_json(b->ppv) : J(nullptr);
    f1[k] = b ? opt_json(b->f1) : J(nullptr);
    counts[k] = b ? J{{"tp", b->tp}, {"fp", b->fp}, {"tn", b->tn}, {"fn", b->fn}} : J(nullptr);
  }
  a["threshold"] = thr;
  a["sensitivity"] = sens;
  a["specificity"] = spec;
  a["ppv"] = ppv;
  a["f1"] = f1;
  a["counts"] = counts;
  return a;
}

// metrics_report's keys in its order, with ours next to the ones they belong with.
J metrics_json(const ScoredLabels& d, const EvaluationFilesOptions& o,
               const std::vector<std::optional<BinaryRates>>& at_val) {
  const bool multilabel = o.task == MetricsTask::kMultilabel;
  const J report = metrics_report(d, o.task, 0.5);
  std::vector<std::string> notes;
  if (multilabel && o.val_thresholds.empty())
    notes.push_back("at_youden: no validation thresholds given; rates at the validation "
                    "split's Youden thresholds are not reported");
  if (!multilabel && !o.val_thresholds.empty())
    notes.push_back("validation thresholds ignored: multiclass predictions take the top score");
  J j;
  for (auto it = report.begin(); it != report.end(); ++it) {
    if (it.key() == "warnings") {
      if (multilabel && !o.val_thresholds.empty()) j["at_youden"] = at_youden_json(d, o, at_val);
      j["notes"] = notes;
    }
    j[it.key()] = it.value();
    if (it.key() == "task") j["split"] = o.split;
    if (it.key() == "classes" && multilabel) {
      J pos = J::object();
      for (size_t c = 0; c < d.cols(); ++c) {
        int64_t n = 0;
        for (size_t r = 0; r < d.rows(); ++r) n += d.label(r, c) == 1;
        pos[d.classes[c]] = n;
      }
      j["positives"] = pos;
    }
  }
  return j;
}

// ---- ROC PNGs.

constexpr int kSize = 480;
// The plot square inside the image: room for the title above and the tick labels below/left.
constexpr int kX0 = 64, kX1 = 456, kY0 = 40, kY1 = 432;
const cv::Scalar kBlack(0, 0, 0), kGrey(150, 150, 150), kGrid(232, 232, 232);
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

cv::Point plot_point(double fpr, double tpr) {
  return {kX0 + static_cast<int>(std::lround(fpr * (kX1 - kX0))),
          kY1 - static_cast<int>(std::lround(tpr * (kY1 - kY0)))};
}

// matplotlib's tab10 then tab20's light tones, as BGR.
cv::Scalar curve_colour(size_t i) {
  static const int rgb[][3] = {{31, 119, 180},  {255, 127, 14},  {44, 160, 44},   {214, 39, 40},
                               {148, 103, 189}, {140, 86, 75},   {227, 119, 194}, {127, 127, 127},
                               {188, 189, 34},  {23, 190, 207},  {174, 199, 232}, {255, 187, 120},
                               {152, 223, 138}, {255, 152, 150}, {197, 176, 213}, {196, 156, 148},
                               {247, 182, 210}, {219, 219, 141}, {158, 218, 229}};
  const int* c = rgb[i % (sizeof rgb / sizeof rgb[0])];
  return cv::Scalar(c[2], c[1], c[0]);
}

// Shortens `text` with "..." until it fits `width` pixels at `scale`.
std::string fit_text(std::string text, double scale, int width) {
  int base = 0;
  if (cv::getTextSize(text, kFont, scale, 1, &base).width <= width) return text;
  while (!text.empty() && cv::getTextSize(text + "...", kFont, scale, 1, &base).width > width)
    text.pop_back();
  return text + "...";
}

void put_centered(cv::Mat& img, const std::string& text, int cx, int baseline_y, double scale,
                  int thickness = 1) {
  int base = 0;
  const cv::Size sz = cv::getTextSize(text, kFont, scale, thickness, &base);
  cv::putText(img, text, {cx - sz.width / 2, baseline_y}, kFont, scale, kBlack, thickness,
              cv::LINE_AA);
}

// White canvas with the axes, a light grid, tick labels, axis titles, the chance line and the
// title.
cv::Mat roc_canvas(const std::string& title) {
  cv::Mat img(kSize, kSize, CV_8UC3, cv::Scalar(255, 255, 255));
  const char* ticks[] = {"0", "0.25", "0.5", "0.75", "1"};
  for (int i = 0; i <= 4; ++i) {
    const double v = i / 4.0;
    const cv::Point px = plot_point(v, 0), py = plot_point(0, v);
    if (i > 0 && i < 4) {
      cv::line(img, plot_point(v, 0), plot_point(v, 1), kGrid, 1);
      cv::line(img, plot_point(0, v), plot_point(1, v), kGrid, 1);
    }
    cv::line(img, px, px + cv::Point(0, 5), kBlack, 1);
    cv::line(img, py, py - cv::Point(5, 0), kBlack, 1);
    put_centered(img, ticks[i], px.x, kY1 + 20, 0.4);
    int base = 0;
    const cv::Size sz = cv::getTextSize(ticks[i], kFont, 0.4, 1, &base);
    cv::putText(img, ticks[i], {kX0 - 9 - sz.width, py.y + sz.height / 2}, kFont, 0.4, kBlack, 1,
                cv::LINE_AA);
  }
  put_centered(img, "false positive rate", (kX0 + kX1) / 2, kY1 + 40, 0.45);
  // The y title, drawn horizontally and turned a quarter to read bottom to top.
  cv::Mat label(22, kY1 - kY0, CV_8UC3, cv::Scalar(255, 255, 255));
  put_centered(label, "true positive rate", label.cols / 2, 16, 0.45);
  cv::rotate(label, label, cv::ROTATE_90_COUNTERCLOCKWISE);
  label.copyTo(img(cv::Rect(6, kY0, label.cols, label.rows)));
  cv::line(img, plot_point(0, 0), plot_point(1, 1), kGrey, 1, cv::LINE_AA);
  cv::rectangle(img, plot_point(0, 1), plot_point(1, 0), kBlack, 1);
  put_centered(img, fit_text(title, 0.55, kSize - 16), kSize / 2, 26, 0.55);
  return img;
}

void draw_curve(cv::Mat& img, const RocCurve& c, const cv::Scalar& colour) {
  std::vector<cv::Point> pts;
  for (size_t i = 0; i < c.fpr.size(); ++i) pts.push_back(plot_point(c.fpr[i], c.tpr[i]));
  cv::polylines(img, pts, false, colour, 2, cv::LINE_AA);
}

std::string auc_text(double auc) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", auc);
  return buf;
}

// File-name safe: letters, digits, '.', '-' and '_' stay, anything else becomes '_'.
std::string sanitise(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) out += std::isalnum(ch) || ch == '.' || ch == '-' ? ch : '_';
  return out.empty() ? "class" : out;
}

void write_roc_pngs(const std::string& dir, const ScoredLabels& d, const AucResult& auc,
                    const std::string& split) {
  make_dir(dir);
  const size_t digits = std::max<size_t>(2, std::to_string(d.cols() - 1).size());
  std::string mauc = auc.mauc ? auc_text(*auc.mauc) : "n/a";
  cv::Mat all = roc_canvas("all classes (" + split + ")  mAUC " + mauc);
  std::vector<std::pair<std::string, cv::Scalar>> legend;
  for (size_t c = 0; c < d.cols(); ++c) {
    if (!auc.auc[c]) continue;  // metrics_report already warns about the class
    std::vector<double> s;
    std::vector<int8_t> y;
    known_column(d, c, s, y);
    const RocCurve curve = roc_curve(s, y);
    cv::Mat img = roc_canvas(d.classes[c] + "  AUC " + auc_text(*auc.auc[c]));
    draw_curve(img, curve, curve_colour(0));
    std::string index = std::to_string(c);
    index.insert(0, digits - std::min(digits, index.size()), '0');
    image_write_png(dir + "/" + index + "_" + sanitise(d.classes[c]) + ".png", img);
    draw_curve(all, curve, curve_colour(legend.size()));
    legend.emplace_back(d.classes[c] + " " + auc_text(*auc.auc[c]), curve_colour(legend.size()));
  }
  // Legend in the lower right (ROC curves keep to the upper left); rows past the plot's height
  // are summed up in a last line.
  constexpr int kRow = 14, kBoxW = 190;
  const size_t fit = static_cast<size_t>((kY1 - kY0 - 16) / kRow);
  const size_t rows = legend.size() <= fit ? legend.size() : fit;
  if (rows > 0) {
    const int h = static_cast<int>(rows) * kRow + 8;
    const cv::Rect box(kX1 - kBoxW - 6, kY1 - h - 6, kBoxW, h);
    cv::rectangle(all, box, cv::Scalar(255, 255, 255), cv::FILLED);
    cv::rectangle(all, box, kGrey, 1);
    for (size_t i = 0; i < rows; ++i) {
      const int yy = box.y + 4 + static_cast<int>(i) * kRow + kRow / 2;
      const bool more = legend.size() > rows && i + 1 == rows;
      if (!more) cv::line(all, {box.x + 6, yy}, {box.x + 26, yy}, legend[i].second, 2, cv::LINE_AA);
      const std::string text =
          more ? "+" + std::to_string(legend.size() - rows + 1) + " more" : legend[i].first;
      cv::putText(all, fit_text(text, 0.38, kBoxW - 40), {box.x + 32, yy + 4}, kFont, 0.38, kBlack,
                  1, cv::LINE_AA);
    }
  }
  image_write_png(dir + "/all.png", all);
}

// ---- The printed table.

std::string fmt3(const J& v) {
  if (v.is_string()) return v.get<std::string>();  // "inf" thresholds
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v.get<double>());
  return buf;
}

std::string pad_left(const std::string& s, size_t w) {
  return s.size() >= w ? s : std::string(w - s.size(), ' ') + s;
}
std::string pad_right(const std::string& s, size_t w) {
  return s.size() >= w ? s : s + std::string(w - s.size(), ' ');
}

// Mean of the numbers of one column (nulls and "inf" left out), or null.
J column_mean(const J& by_class) {
  double sum = 0;
  int n = 0;
  for (auto it = by_class.begin(); it != by_class.end(); ++it)
    if (it.value().is_number()) sum += it.value().get<double>(), ++n;
  return n ? J(sum / n) : J(nullptr);
}

}  // namespace

std::string format_double_exact(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

nlohmann::ordered_json write_evaluation_files(const std::string& dir, const ScoredLabels& d,
                                              const EvaluationFilesOptions& o) {
  check_input(d, o);
  const bool multilabel = o.task == MetricsTask::kMultilabel;
  const AucResult auc = per_class_auc(d);
  std::vector<BinaryRates> at05;
  std::vector<std::optional<BinaryRates>> at_val;
  if (multilabel) {
    at05 = per_class_rates(d, 0.5);
    if (!o.val_thresholds.empty()) {
      // A class without a threshold gets no rates; 0 only fills its slot.
      std::vector<double> thr;
      for (const auto& t : o.val_thresholds) thr.push_back(t.value_or(0.0));
      const std::vector<BinaryRates> r = per_class_rates(d, thr);
      for (size_t c = 0; c < d.cols(); ++c)
        at_val.push_back(o.val_thresholds[c] ? std::optional<BinaryRates>(r[c]) : std::nullopt);
    }
  }
  const J metrics = metrics_json(d, o, at_val);
  make_dir(dir);
  write_file_atomic(dir + "/metrics.json", metrics.dump(2) + "\n");
  write_file_atomic(dir + "/per_class.csv", per_class_csv(d, o, auc, at05, at_val));
  write_file_atomic(dir + "/predictions.csv", scores_csv(d, false));
  write_file_atomic(dir + "/targets.csv", scores_csv(d, true));
  if (o.roc_png) write_roc_pngs(dir + "/roc", d, auc, o.split);
  return metrics;
}

std::string evaluation_table(const nlohmann::ordered_json& m) {
  const std::vector<std::string> classes = m.at("classes").get<std::vector<std::string>>();
  size_t w = 5;  // "class"
  for (const auto& c : classes) w = std::max(w, c.size());
  constexpr size_t kCol = 8;
  struct Column {
    std::string head;
    const J* values;  // class → value
    J mean;           // null: no mean cell
  };
  std::vector<Column> cols;
  auto add = [&](const std::string& head, const J& values, bool mean) {
    cols.push_back({head, &values, mean ? column_mean(values) : J(nullptr)});
  };
  const bool multilabel = m.value("task", "") == "multilabel";
  const bool has_pos = m.contains("positives");
  if (has_pos) add("pos", m.at("positives"), false);
  add("AUC", m.at("auc"), false);
  cols.back().mean = m.at("mauc");  // the mean over the classes with an AUC, as reported
  std::string group;
  if (multilabel) {
    add("sens", m.at("sensitivity"), true);
    add("spec", m.at("specificity"), true);
    add("PPV", m.at("ppv"), true);
    add("F1", m.at("f1"), true);
    const J& t = m.value("threshold", J(0.5));
    group = pad_right("", w + kCol * cols.size() - kCol * 4 + 2) + "at threshold " +
            (t.is_number() ? format_double_exact(t.get<double>()) : t.dump());
    if (m.contains("at_youden")) {
      const J& a = m.at("at_youden");
      group = pad_right(group, w + kCol * cols.size() + 2) + "at the validation Youden threshold";
      add("thr", a.at("threshold"), false);
      add("sens", a.at("sensitivity"), true);
      add("spec", a.at("specificity"), true);
      add("PPV", a.at("ppv"), true);
      add("F1", a.at("f1"), true);
    }
  } else {
    add("recall", m.at("per_class_recall"), true);
    add("PPV", m.at("per_class_ppv"), true);
  }
  std::string out;
  if (!group.empty()) out += group + "\n";
  out += pad_right("class", w);
  for (const auto& c : cols) out += pad_left(c.head, kCol);
  out += "\n";
  for (const auto& name : classes) {
    out += pad_right(name, w);
    for (const auto& c : cols) {
      const J& v = c.values->contains(name) ? c.values->at(name) : J(nullptr);
      out += pad_left(v.is_number_integer() ? std::to_string(v.get<int64_t>()) : fmt3(v), kCol);
    }
    out += "\n";
  }
  out += pad_right("mean", w);
  for (const auto& c : cols) out += pad_left(c.mean.is_null() ? "" : fmt3(c.mean), kCol);
  out += "\n";
  if (!multilabel && m.contains("accuracy")) out += "accuracy " + fmt3(m.at("accuracy")) + "\n";
  return out;
}

}  // namespace evax
