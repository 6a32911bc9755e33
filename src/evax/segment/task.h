// The segmentation task (EVA-X §3 of evax_finetune.md): UperNet on an EVA-X backbone, initialised
// from any EVA-X checkpoint evax reads (or a whole segmentation checkpoint), trained on a manifest
// with masks through the shared trainer with mmseg's layer decay, evaluated by IoU / Dice at the
// original image resolution. Also predicts a split for `evax evaluate` and images for `evax predict`.
#pragma once

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "evax/core/config.h"
#include "evax/data/loader.h"
#include "evax/data/manifest.h"
#include "evax/data/transforms.h"
#include "evax/eval/seg_metrics.h"
#include "evax/segment/inference.h"
#include "evax/segment/losses.h"
#include "evax/segment/upernet.h"
#include "evax/train/trainer.h"

namespace evax {

class Comm;

/// What a segmentation checkpoint's meta.json "task" records: enough to rebuild the model and
/// preprocess an image without the config.
struct SegmenterSpec {
  std::string model;                 ///< registered name, e.g. upernet_eva_x_small_patch16
  UperNetOptions net;                ///< the architecture as built (depth, widths, classes ...)
  std::vector<std::string> classes;  ///< class names, background first
  double mean = kEvaxMean, std = kEvaxStd;
  bool keep_ratio = false;           ///< test resize keeps the aspect ratio (mmseg keep_ratio)
  SegInferenceOptions inference;     ///< whole / slide, threshold
  nlohmann::json to_json() const;
  /// DataError naming `origin` when the description is missing or incomplete.
  static SegmenterSpec from_json(const nlohmann::json& j, const std::string& origin);
};

/// Everything a segmentation run needs besides the optimizer and the loop.
struct SegmentOptions {
  std::string model = "upernet_eva_x_small_patch16";  ///< registered UperNet name
  UperNetOptions net;     ///< architecture (from `model`, then the config's model: keys)
  /// Initial weights: the backbone from any EVA-X checkpoint evax reads (released MIM .pt, evax
  /// pretraining or finetuning run/checkpoint, timm file), or a whole segmentation model (an evax
  /// segment run/checkpoint, an mmseg checkpoint of this architecture: loaded strictly). "" =
  /// scratch.
  std::string init;
  double layer_decay = 0.85;  ///< mmseg LayerDecayOptimizerConstructor rate over backbone ids
  std::string manifest;       ///< manifest CSV with a mask column
  std::vector<std::string> classes = {"background", "foreground"};  ///< names, background first
  /// How mask PNG values become class ids: "binary" (> 0 is class 1: 0/255 and 0/1 masks) or "ids"
  /// (the stored values, 255 = ignore).
  std::string mask_values = "binary";
  std::string train_split = "train";  ///< rows trained on
  std::string eval_split = "val";     ///< rows of the evaluation hook (model selection)
  std::string test_split = "test";    ///< rows scored after training / by `evax evaluate`
  int64_t overlays = 8;               ///< scored splits' overlays: the worst and best by Dice
  SegAugmentOptions augment;          ///< training pipeline (size = the model's img_size)
  bool keep_ratio = false;            ///< test resize: mmseg keep_ratio (EVA-X Lung) or stretch
  SegInferenceOptions inference;      ///< whole / slide inference and the threshold
  SegLossOptions loss;                ///< Dice term
  double aux_weight = 0.4;            ///< weight of the auxiliary FCN head's loss (when present)
  LoaderOptions loader;               ///< training batch (per rank), workers, seed
  std::string device = "auto";
  /// Pyramid and heads in NHWC: "true", "false", or "auto" (on CUDA).
  std::string channels_last = "auto";
  bool bf16 = true;       ///< bf16 autocast on CUDA
  bool bf16_cpu = false;  ///< bf16 autocast on CPU too
};

/// EVA-X segmentation's optimizer: AdamW lr 6e-5, betas 0.9/0.999, eps 1e-8, weight decay 0.05,
/// min_lr 0, no clipping [eva-x code].
AdamWOptions segment_optimizer_defaults();
/// Model selection by mDice (background included, EVA-X's table), higher is better.
EvalHookOptions segment_eval_defaults();

/// Reads model:, segment:, data:, loss:, the task's keys of eval:, seed and device.
SegmentOptions segment_options_from_config(Config& cfg);

/// mmseg's LayerDecayOptimizerConstructor (EVA's mmcv_custom): layer id 0 for
/// backbone.{cls_token, mask_token, pos_embed, patch_embed.*}, i + 1 for backbone.blocks.i.*,
/// depth + 1 for everything else; lr scale rate^(depth + 1 − id).
double upernet_layer_decay_scale(const std::string& name, int64_t depth, double rate);
/// Its weight-decay rule: no decay for 1-D parameters and names ending in ".bias" (pos_embed and
/// cls_token are decayed: the rule's bare names never match the "backbone." prefix).
bool upernet_no_weight_decay(const std::string& name, const torch::Tensor& p);

/// Per-image foreground Dice (one per class >= 1; NaN where the class is in neither the
/// prediction nor the label).
struct SegImageScore {
  std::string id;            ///< the manifest's path
  std::vector<double> dice;
};

/// Predictions of one image at its original resolution.
struct SegPrediction {
  torch::Tensor classes;  ///< (H, W) uint8 class ids
  torch::Tensor probs;    ///< (K, H, W) float: sigmoid of the foreground (K = 1) or softmax
};

class SegmentTask : public Task {
 public:
  /// `rank`/`world` shard the data, `comm` (null: one process) reduces evaluations and
  /// synchronises BatchNorm, `local_rank` picks the GPU.
  SegmentTask(const SegmentOptions& o, int rank, int world, Comm* comm, int local_rank = 0);
  ~SegmentTask() override;

  std::vector<NamedParam> trainable() override;
  ParamGroups param_groups(double weight_decay) override;
  std::vector<torch::Tensor> buffers() override;
  int64_t micro_batches_per_epoch() override;
  void start_epoch(int64_t epoch, int64_t skip) override;
  MicroStep forward_micro() override;
  /// The step on given inputs: images (B, 3, S, S), masks (B, 1, S, S) or (B, S, S) class ids.
  MicroStep forward_batch(const torch::Tensor& images, const torch::Tensor& masks);
  /// Weights (and BatchNorm statistics) in mmseg naming.
  TensorMap model_state() override;
  void load_model_state(const TensorMap& state) override;
  nlohmann::json run_identity() override;
  nlohmann::json checkpoint_meta() override { return spec().to_json(); }
  bool has_evaluation() override { return true; }
  /// On eval_split: "mDice", "mIoU" (background included), "mDice_fg", "mIoU_fg", "aAcc",
  /// "dice/<class>", "iou/<class>".
  std::map<std::string, double> evaluate(int64_t epoch) override;

  /// Metrics of every row of `split` (collective over ranks; each image once); `per_image`, when
  /// given, receives every image's foreground Dice in manifest order.
  SegMetricsResult evaluate_split(const std::string& split,
                                  std::vector<SegImageScore>* per_image = nullptr);
  /// One image of `split` (manifest order) predicted again: its [0, 1] grey image (CV_32F), its
  /// label (H, W) uint8 class ids and the prediction, all at the original resolution.
  struct RowPrediction {
    std::string path;
    cv::Mat unit;
    torch::Tensor label;
    SegPrediction pred;
  };
  RowPrediction predict_row(const std::string& split, int64_t index);
  const SegmentOptions& options() const { return opts_; }
  int64_t rows_in(const std::string& split) const;
  SegmenterSpec spec() const;
  UperNet& model() { return model_; }

 private:
  Sample load_train(int64_t index, Rng& rng) const;
  /// Class ids (H, W) uint8 of a row's mask file, validated against the classes.
  torch::Tensor read_mask(const ManifestRow& row) const;
  bool autocast_on() const { return opts_.bf16 && (device_.is_cuda() || opts_.bf16_cpu); }

  SegmentOptions opts_;
  int rank_, world_;
  Comm* comm_;
  torch::Device device_;
  Manifest train_, eval_;
  std::map<std::string, Manifest> splits_;
  UperNet model_{nullptr};
  std::unique_ptr<Loader> loader_;
};

/// Prediction of one image with a segmentation model and its spec: test resize, normalisation,
/// whole/slide inference, logits resized to the original size, threshold or argmax.
SegPrediction segment_predict_image(UperNetImpl& model, const SegmenterSpec& spec,
                                    const cv::Mat& unit, const torch::Device& device,
                                    bool autocast = false);

}  // namespace evax
