#include "evax/explain/cam_eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <opencv2/imgproc.hpp>

#include "evax/core/csv.h"
#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/core/progress.h"
#include "evax/core/strings.h"
#include "evax/eval/report_files.h"
#include "evax/explain/render.h"
#include "evax/io/image.h"

namespace fs = std::filesystem;

namespace evax {

namespace {

// One (image, class) pair: its map is computed once for all its boxes of that class. `row`
// points into the Manifest the items were made from, which must outlive them.
struct Item {
  const ManifestRow* row = nullptr;
  int64_t cls = 0;
  std::vector<Box> boxes;
};

std::vector<Item> items_of(const Manifest& rows, const ClassifierSpec& spec,
                           std::map<std::string, int64_t>* skipped) {
  std::vector<Item> items;
  for (const ManifestRow& row : rows.rows) {
    std::vector<Item> mine;
    for (const Box& b : row.boxes) {
      const auto k = box_class_index(spec, b.label);
      if (!k) {
        ++(*skipped)[b.label];
        continue;
      }
      auto it = std::find_if(mine.begin(), mine.end(), [&](const Item& i) { return i.cls == *k; });
      if (it == mine.end()) mine.push_back({&row, *k, {b}});
      else it->boxes.push_back(b);
    }
    items.insert(items.end(), mine.begin(), mine.end());
  }
  return items;
}

// Per box: its record and its IoUs at every candidate for the model and the baselines.
struct Scored {
  std::vector<CamBox> boxes;
  std::vector<std::string> classes;
  std::vector<std::vector<double>> model, uniform, centre;
  std::vector<BoxPointing> model_hits, uniform_hits, centre_hits;
};

Scored score_items(const LoadedClassifier& c, const std::vector<Item>& items,
                   const CamEvalOptions& o, BoxScale scale, const std::vector<double>& cands,
                   const std::string& label, std::vector<CamGalleryItem>* gallery) {
  Scored s;
  const int64_t size = cam_input_size(c.spec, o.input());
  const std::vector<float> uni = uniform_map(size, size), cen = centre_map(size, size);
  ProgressOptions po;
  po.unit = "map";
  Progress bar("cam " + label, static_cast<int64_t>(items.size()), po);
  const size_t batch = static_cast<size_t>(o.batch_size());
  for (size_t start = 0; start < items.size(); start += batch) {
    const size_t end = std::min(items.size(), start + batch);
    std::vector<cv::Mat> units;
    std::vector<int64_t> classes;
    for (size_t i = start; i < end; ++i) {
      units.push_back(image_read_unit(items[i].row->path, {}));
      classes.push_back(items[i].cls);
    }
    const GradCamResult r = cam_units(c, units, classes, o.input(), o.cam());
    const torch::Tensor scores = cam_class_scores(c.spec, r.logits, r.classes);
    for (size_t i = start; i < end; ++i) {
      const Item& it = items[i];
      const cv::Mat& unit = units[i - start];
      const torch::Tensor map = r.maps[static_cast<int64_t>(i - start)].contiguous();
      const float* m = map.data_ptr<float>();
      const std::string cls = c.spec.classes[static_cast<size_t>(it.cls)];
      for (const Box& b : it.boxes) {
        CamBox cb;
        cb.path = it.row->path;
        cb.line = it.row->line;
        cb.cls = cls;
        cb.box = b;
        cb.rect = box_rect(b, unit.cols, unit.rows, size, size, scale);
        cb.score = scores[static_cast<int64_t>(i - start)].item<double>();
        s.model.push_back(box_ious(m, size, size, cb.rect, cands));
        s.uniform.push_back(box_ious(uni.data(), size, size, cb.rect, cands));
        s.centre.push_back(box_ious(cen.data(), size, size, cb.rect, cands));
        s.model_hits.push_back(box_pointing(m, size, size, cb.rect));
        s.uniform_hits.push_back(box_pointing(uni.data(), size, size, cb.rect));
        s.centre_hits.push_back(box_pointing(cen.data(), size, size, cb.rect));
        s.classes.push_back(cls);
        s.boxes.push_back(std::move(cb));
      }
      if (gallery && static_cast<int64_t>(gallery->size()) < o.gallery())
        gallery->push_back({it.row->path, cls, it.boxes, map.clone()});
    }
    bar.advance(static_cast<int64_t>(end - start));
  }
  bar.finish();
  return s;
}

// Chooses one kind of map's threshold on `on` and scores `eval` with it.
CamScored score_kind(const std::vector<std::vector<double>>& on,
                     const std::vector<std::vector<double>>& eval,
                     const std::vector<std::string>& eval_classes,
                     const std::vector<BoxPointing>& eval_hits,
                     const std::vector<double>& cands, size_t* index) {
  const ThresholdChoice t = choose_threshold(on, cands);
  CamScored k;
  k.threshold = t.threshold;
  k.chosen_on = t.scores;
  k.report = localisation_report(eval, eval_classes, t.index, eval_hits);
  *index = t.index;
  return k;
}

nlohmann::ordered_json scores_json(const LocalisationScores& s) {
  return {{"miou", s.miou},   {"ap25", s.ap25},         {"ap50", s.ap50},   {"map", s.map},
          {"boxes", s.boxes}, {"pointing", s.pointing}, {"energy", s.energy},
          {"pointing_p", s.pointing_p}};
}

nlohmann::ordered_json per_class_json(const LocalisationReport& r) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [name, s] : r.per_class) j[name] = scores_json(s);
  return j;
}

std::string safe_name(std::string s) {
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') ch = '_';
  return s;
}

}  // namespace

CamEvalResult cam_evaluate(const LoadedClassifier& c, const Manifest& manifest,
                           const CamEvalOptions& o) {
  const std::string& protocol = o.protocol();
  if (protocol != "split" && protocol != "paper" && protocol != "fixed")
    raise<ConfigError>("cam-eval protocol '", protocol, "' is unknown; valid: split (threshold ",
                       "chosen on another split), paper (searched on the evaluated split, EVA-X), ",
                       "fixed");
  if (protocol == "split" && o.threshold_split() == o.split())
    raise<ConfigError>("the threshold split and the evaluated split are both '", o.split(),
                       "': use protocol paper to search the threshold on the evaluated split");
  if (protocol == "fixed" && !(o.threshold() >= 0 && o.threshold() < 1))
    raise<ConfigError>("a fixed threshold must be in [0, 1), got ", o.threshold());
  if (o.batch_size() < 1) raise<ConfigError>("batch size must be >= 1, got ", o.batch_size());
  if (o.input().crop())
    raise<ConfigError>("cam-eval maps the whole image (no centre crop): boxes outside a crop "
                       "could not be scored");
  const BoxScale scale = box_scale_from_name(o.box_scale());
  const int64_t size = cam_input_size(c.spec, o.input());
  cam_input(cv::Mat(16, 16, CV_32F, cv::Scalar(0.5)), c.spec, o.input());  // validates options
  const std::vector<double> cands =
      protocol == "fixed" ? std::vector<double>{o.threshold()} : cam_threshold_grid();

  CamEvalResult r;
  r.split = o.split();
  r.protocol = protocol;
  const Manifest eval_rows = manifest.select_split(o.split());
  const std::vector<Item> eval_items = items_of(eval_rows, c.spec, &r.skipped);
  if (eval_items.empty())
    raise<DataError>("'", manifest.file, "': split '", o.split(), "' has no box of the ",
                     "checkpoint's classes (", join_with(c.spec.classes), ")");
  Scored thr;
  if (protocol == "split") {
    std::map<std::string, int64_t> ignored;
    const Manifest thr_rows = manifest.select_split(o.threshold_split());  // items point into it
    const std::vector<Item> thr_items = items_of(thr_rows, c.spec, &ignored);
    if (thr_items.empty())
      raise<DataError>("'", manifest.file, "': split '", o.threshold_split(), "' has no box of ",
                       "the checkpoint's classes to choose the threshold on; use --protocol paper ",
                       "(searched on the evaluated split, EVA-X's protocol) or --threshold T");
    thr = score_items(c, thr_items, o, scale, cands, o.threshold_split(), nullptr);
  }
  Scored ev = score_items(c, eval_items, o, scale, cands, o.split(), &r.gallery);
  const Scored& on = protocol == "split" ? thr : ev;
  r.threshold_chosen_on = protocol == "split" ? o.threshold_split()
                          : protocol == "paper" ? o.split()
                                                : "given";
  r.threshold_boxes = static_cast<int64_t>(on.boxes.size());
  size_t im = 0, iu = 0, ic = 0;
  r.model = score_kind(on.model, ev.model, ev.classes, ev.model_hits, cands, &im);
  r.uniform = score_kind(on.uniform, ev.uniform, ev.classes, ev.uniform_hits, cands, &iu);
  r.centre = score_kind(on.centre, ev.centre, ev.classes, ev.centre_hits, cands, &ic);
  r.boxes = std::move(ev.boxes);
  for (size_t b = 0; b < r.boxes.size(); ++b) {
    r.boxes[b].iou = ev.model[b][im];
    r.boxes[b].iou_uniform = ev.uniform[b][iu];
    r.boxes[b].iou_centre = ev.centre[b][ic];
    r.boxes[b].pointing = ev.model_hits[b].hit;
    r.boxes[b].energy = ev.model_hits[b].energy;
  }
  for (const auto& [label, n] : r.skipped)
    log_warn("cam-eval: ", n, " box(es) labelled '", label, "' skipped: no such class in the "
             "checkpoint");

  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  if (o.cam().layers().empty())
    layers.push_back("blocks." + std::to_string(c.model->blocks->size() - 1) + ".norm1");
  for (const auto& l : o.cam().layers()) layers.push_back(l);
  r.settings = {{"model", c.spec.model},
                {"weights", c.weights},
                {"method", o.cam().method()},
                {"layers", layers},
                {"input_size", size},
                {"resize", o.input().resize()},
                {"mean", std::isnan(o.input().mean()) ? c.spec.mean : o.input().mean()},
                {"std", std::isnan(o.input().std()) ? c.spec.std : o.input().std()},
                {"box_scale", o.box_scale()}};
  return r;
}

nlohmann::ordered_json cam_eval_json(const CamEvalResult& r) {
  nlohmann::ordered_json j;
  j["split"] = r.split;
  j["protocol"] = r.protocol;
  j["threshold"] = r.model.threshold;
  j["threshold_chosen_on"] = r.threshold_chosen_on;
  j["threshold_boxes"] = r.threshold_boxes;
  j["overall"] = scores_json(r.model.report.overall);
  j["per_class"] = per_class_json(r.model.report);
  auto base = [](const CamScored& k) {
    nlohmann::ordered_json b;
    b["threshold"] = k.threshold;
    b["overall"] = scores_json(k.report.overall);
    b["per_class"] = per_class_json(k.report);
    return b;
  };
  j["baselines"] = {{"uniform", base(r.uniform)}, {"centre", base(r.centre)}};
  nlohmann::ordered_json sk = nlohmann::ordered_json::object();
  for (const auto& [label, n] : r.skipped) sk[label] = n;
  j["skipped_boxes"] = sk;
  j["settings"] = r.settings;
  std::string note =
      "Scores are fractions (EVA-X reports percentages). IoU of (map > threshold) with each box's "
      "mask at the map's resolution; AP25/AP50: fraction of boxes with IoU > 0.25/0.5; mAP = "
      "(AP25 + AP50) / 2. Threshold-free: pointing = share of boxes holding the map's maximum "
      "(pointing game; tied maxima count by their share inside), energy = mean share of the "
      "map's mass inside the box; pointing_p = one-sided p-value of the boxes hit outright "
      "against maxima placed uniformly at random (Poisson-binomial over the boxes' shares of "
      "the map). Baselines: a uniform map (every pixel on) and a centred Gaussian, their "
      "thresholds chosen the same way.";
  if (r.protocol == "paper")
    note += " Protocol paper: the threshold was searched on the evaluated split itself (EVA-X's "
            "protocol), so the scores are optimistic.";
  else if (r.protocol == "split")
    note += " The threshold was chosen on split '" + r.threshold_chosen_on + "'.";
  else
    note += " The threshold was given.";
  j["note"] = note;
  return j;
}

std::vector<std::string> cam_gallery_write(const CamEvalResult& r, const std::string& dir) {
  fs::create_directories(dir);
  std::vector<std::string> files;
  for (size_t i = 0; i < r.gallery.size(); ++i) {
    const CamGalleryItem& g = r.gallery[i];
    cv::Mat unit = image_read_unit(g.path, {});
    // Shown with the larger side in [256, 768] px.
    const int side = std::max(unit.cols, unit.rows);
    const double f = side > 768 ? 768.0 / side : side < 256 ? 256.0 / side : 1.0;
    const cv::Mat map = cam_to_mat(g.map);
    cv::Mat shown = unit;
    if (f < 1.0) cv::resize(unit, shown, cv::Size(), f, f, cv::INTER_AREA);
    if (f > 1.0) {
      cv::resize(unit, shown, cv::Size(), f, f, cv::INTER_CUBIC);
      cv::min(cv::max(shown, 0.0), 1.0, shown);
    }
    cv::Mat left = unit_to_bgr(shown), right = cam_overlay(shown, map);
    // The outline of the map above the model's threshold, at the shown size.
    cv::Mat big;
    cv::resize(map, big, shown.size(), 0, 0, cv::INTER_NEAREST);
    cv::Mat on = big > static_cast<float>(r.model.threshold);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(on, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
    cv::drawContours(right, contours, -1, cv::Scalar(255, 255, 255), 1);
    for (const Box& b : g.boxes) {
      draw_box(left, b.x * f, b.y * f, b.w * f, b.h * f);
      draw_box(right, b.x * f, b.y * f, b.w * f, b.h * f);
    }
    cv::Mat both;
    cv::hconcat(left, right, both);
    char prefix[32];
    std::snprintf(prefix, sizeof prefix, "%02zu_", i);
    const std::string file = (fs::path(dir) / (prefix + safe_name(fs::path(g.path).stem().string()) +
                                               "_" + safe_name(g.cls) + ".png"))
                                 .string();
    image_write_png(file, both);
    files.push_back(file);
  }
  return files;
}

void cam_eval_write(const CamEvalResult& r, const std::string& dir) {
  fs::create_directories(dir);
  write_file_atomic((fs::path(dir) / "metrics.json").string(), cam_eval_json(r).dump(2) + "\n");
  std::string csv =
      "path,line,label,class,x,y,w,h,mask_x0,mask_y0,mask_x1,mask_y1,score,iou,iou_uniform,"
      "iou_centre,pointing,energy\n";
  // Box coordinates: whole numbers as such, others as the shortest exact decimal.
  auto coord = [](float v) {
    return v == std::floor(v) && std::abs(v) < 1e9f ? std::to_string(static_cast<int64_t>(v))
                                                    : format_double_exact(v);
  };
  for (const CamBox& b : r.boxes) {
    csv += csv_field(b.path) + "," + std::to_string(b.line) + "," + csv_field(b.box.label) + "," +
           csv_field(b.cls) + "," + coord(b.box.x) + "," + coord(b.box.y) + "," + coord(b.box.w) +
           "," + coord(b.box.h) + "," + std::to_string(b.rect.x0) + "," +
           std::to_string(b.rect.y0) + "," + std::to_string(b.rect.x1) + "," +
           std::to_string(b.rect.y1) + "," + format_double_exact(b.score) + "," +
           format_double_exact(b.iou) + "," + format_double_exact(b.iou_uniform) + "," +
           format_double_exact(b.iou_centre) + "," + format_double_exact(b.pointing) + "," +
           format_double_exact(b.energy) + "\n";
  }
  write_file_atomic((fs::path(dir) / "boxes.csv").string(), csv);
  cam_gallery_write(r, (fs::path(dir) / "gallery").string());
}

std::string cam_eval_table(const CamEvalResult& r) {
  std::string out;
  char buf[256];
  auto row = [&](const std::string& name, const LocalisationScores& s) {
    std::snprintf(buf, sizeof buf, "%-26s %6lld %7.2f %7.2f %7.2f %7.2f %8.2f %7.2f\n",
                  name.c_str(), static_cast<long long>(s.boxes), 100 * s.miou, 100 * s.ap25,
                  100 * s.ap50, 100 * s.map, 100 * s.pointing, 100 * s.energy);
    out += buf;
  };
  std::snprintf(buf, sizeof buf, "Grad-CAM localisation on split '%s' (%%), threshold %.2f ",
                r.split.c_str(), r.model.threshold);
  out += buf;
  if (r.protocol == "paper")
    out += "searched on the evaluated split itself (EVA-X's protocol: optimistic)\n";
  else if (r.protocol == "split")
    out += "chosen on split '" + r.threshold_chosen_on + "' (" + std::to_string(r.threshold_boxes) +
           " boxes)\n";
  else
    out += "given\n";
  std::snprintf(buf, sizeof buf, "%-26s %6s %7s %7s %7s %7s %8s %7s\n", "class", "boxes", "mIoU",
                "AP25", "AP50", "mAP", "pointing", "energy");
  out += buf;
  for (const auto& [name, s] : r.model.report.per_class) row(name, s);
  row("overall", r.model.report.overall);
  std::snprintf(buf, sizeof buf, "chance, uniform (t %.2f)", r.uniform.threshold);
  row(buf, r.uniform.report.overall);
  std::snprintf(buf, sizeof buf, "chance, centred (t %.2f)", r.centre.threshold);
  row(buf, r.centre.report.overall);
  const LocalisationScores& m = r.model.report.overall;
  std::snprintf(buf, sizeof buf,
                "pointing game: the map's maximum in the box for %.2f%% of boxes vs %.2f%% for a "
                "maximum placed at random; one-sided p = %.2g\n",
                100 * m.pointing, 100 * r.uniform.report.overall.pointing, m.pointing_p);
  out += buf;
  return out;
}

std::string cam_eval_headline(const CamEvalResult& r) {
  std::vector<std::string> names;
  for (const auto& [name, s] : r.model.report.per_class) names.push_back(name);
  const LocalisationScores& m = r.model.report.overall;
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "Grad-CAM localisation of %s on %s (%lld boxes): mAP %.2f%% (mIoU %.2f%%) vs "
                "chance %.2f%% (mIoU %.2f%%, centred map) and %.2f%% (mIoU %.2f%%, uniform map); "
                "pointing game %.2f%% vs %.2f%% / %.2f%% (p = %.2g), energy in box %.2f%% vs %.2f%% / "
                "%.2f%%; threshold %.2f ",
                join_with(names, "/").c_str(), r.split.c_str(), static_cast<long long>(m.boxes),
                100 * m.map, 100 * m.miou, 100 * r.centre.report.overall.map,
                100 * r.centre.report.overall.miou, 100 * r.uniform.report.overall.map,
                100 * r.uniform.report.overall.miou, 100 * m.pointing,
                100 * r.centre.report.overall.pointing, 100 * r.uniform.report.overall.pointing,
                m.pointing_p,
                100 * m.energy, 100 * r.centre.report.overall.energy,
                100 * r.uniform.report.overall.energy, r.model.threshold);
  std::string out = buf;
  if (r.protocol == "paper") out += "searched on the evaluated split (EVA-X's protocol)";
  else if (r.protocol == "split") out += "chosen on " + r.threshold_chosen_on;
  else out += "given";
  return out;
}

}  // namespace evax
