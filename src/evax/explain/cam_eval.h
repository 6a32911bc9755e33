// Localisation evaluation of a finetuned classifier's Grad-CAM on a manifest's boxes (EVA-X's
// grad_cam/get_cams.py protocol, evax_finetune.md §4): the map of each box's class, thresholded,
// against the box; mIoU, AP25, AP50 and mAP per class and overall, next to chance baselines (a
// uniform and a centred map) scored the same way. Backs `evax cam-eval` and the demo.
//
// The threshold is the candidate 0.01 … 0.60 with the best overall mAP on a separate split
// (default: chosen on val, applied to test); protocol "paper" searches it on the evaluated split
// itself, as EVA-X did (optimistic), and "fixed" takes the given one. EVA-X's full recipe:
//   CamEvalOptions().protocol("paper").box_scale("1024")
//       .input(CamInputOptions().resize("bilinear").mean(0.5056).std(0.252))
//
// Example:
//   CamEvalResult r = cam_evaluate(classifier, manifest_load("synth/classification.csv"), {});
//   cam_eval_write(r, "runs/x/cam_eval");   // metrics.json, boxes.csv, gallery/
//   std::cout << cam_eval_table(r);
//   log_info(cam_eval_headline(r));  // "... mAP 12.50% (mIoU 9.10%) vs chance 3.12% ..."
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evax/data/manifest.h"
#include "evax/explain/cam.h"
#include "evax/explain/localisation.h"

namespace evax {

/// What cam_evaluate does.
struct CamEvalOptions {
  /// The evaluated split.
  TORCH_ARG(std::string, split) = "test";
  /// "split": threshold searched on `threshold_split`, applied to `split`; "paper": searched on
  /// `split` itself (EVA-X's protocol); "fixed": `threshold`.
  TORCH_ARG(std::string, protocol) = "split";
  /// Split the threshold is searched on (protocol "split").
  TORCH_ARG(std::string, threshold_split) = "val";
  /// The threshold of protocol "fixed" (EVA-X's visualisation default: 0.4).
  TORCH_ARG(double, threshold) = 0.4;
  /// Box coordinates to the map: "image" (from the image's stored size) or "1024" (EVA-X).
  TORCH_ARG(std::string, box_scale) = "image";
  /// Image → model input.
  TORCH_ARG(CamInputOptions, input) = {};
  /// Method and target layers.
  TORCH_ARG(GradCamOptions, cam) = {};
  /// Images per forward/backward pass.
  TORCH_ARG(int64_t, batch_size) = 16;
  /// Maps kept for the gallery: the first this many (image, class) pairs of the evaluated split.
  TORCH_ARG(int64_t, gallery) = 8;
};

/// One box of the evaluated split.
struct CamBox {
  std::string path;         ///< the image
  int64_t line = 0;         ///< its manifest line
  std::string cls;          ///< the class explained (the checkpoint's name for the box label)
  Box box;                  ///< as the manifest gives it (label as written)
  BoxRect rect;             ///< its mask on the map
  double score = 0;         ///< the class probability
  double iou = 0;           ///< IoU of the model's map at the model's threshold
  double iou_uniform = 0;   ///< IoU of the uniform baseline at its threshold
  double iou_centre = 0;    ///< IoU of the centred baseline at its threshold
  double pointing = 0;      ///< the model's pointing-game hit (BoxPointing::hit)
  double energy = 0;        ///< the share of the model's map mass inside the box
};

/// A map kept for the gallery.
struct CamGalleryItem {
  std::string path, cls;
  std::vector<Box> boxes;   ///< the image's boxes of that class
  torch::Tensor map;        ///< (S, S) on the CPU
};

/// Scores of one kind of map.
struct CamScored {
  double threshold = 0;          ///< the one applied
  LocalisationScores chosen_on;  ///< overall scores where the threshold was chosen
  LocalisationReport report;     ///< on the evaluated split
};

/// What cam_evaluate found.
struct CamEvalResult {
  std::string split, protocol;
  std::string threshold_chosen_on;  ///< a split name, or "given" (protocol fixed)
  int64_t threshold_boxes = 0;      ///< boxes the threshold was chosen on
  CamScored model, uniform, centre;
  std::vector<CamBox> boxes;
  std::map<std::string, int64_t> skipped;  ///< box labels with no class in the checkpoint: count
  std::vector<CamGalleryItem> gallery;
  nlohmann::ordered_json settings;  ///< method, layers, input size, resize, mean/std, box scale
};

/// Grad-CAM localisation of `manifest`'s boxes (each (image, class) pair mapped once). DataError
/// when the evaluated split (or the threshold split, protocol "split") has no box of the
/// checkpoint's classes; ConfigError for bad options.
CamEvalResult cam_evaluate(const LoadedClassifier& c, const Manifest& manifest,
                           const CamEvalOptions& o);

/// metrics.json: "split", "protocol", "threshold", "threshold_chosen_on", "threshold_boxes",
/// "overall" and "per_class" ({miou, ap25, ap50, map, boxes, pointing, energy}, fractions), "baselines" ({uniform,
/// centre}: the same keys), "skipped_boxes", "settings" and a "note".
nlohmann::ordered_json cam_eval_json(const CamEvalResult& r);

/// Writes metrics.json, boxes.csv (one row per box) and the gallery into `dir` (created).
void cam_eval_write(const CamEvalResult& r, const std::string& dir);

/// One PNG per gallery item into `dir` (created): the image with its boxes drawn (green) beside
/// the CAM overlay with the boxes and the outline of the map above the model's threshold
/// (white). Returns the files written.
std::vector<std::string> cam_gallery_write(const CamEvalResult& r, const std::string& dir);

/// The result as a printed table (percentages, as EVA-X reports them).
std::string cam_eval_table(const CamEvalResult& r);

/// One line for a log: "Grad-CAM localisation of <classes> on test (4 boxes): mAP 12.50% (mIoU
/// 9.10%) vs chance 3.12% (centred map) and 0.00% (uniform map); threshold 0.23 chosen on val".
std::string cam_eval_headline(const CamEvalResult& r);

}  // namespace evax
