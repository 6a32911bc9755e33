// The classification finetuning task (EVA-X §2 of evax_finetune.md): a registered ViT with a
// linear head, initialised from MIM, pretraining-run, finetuned or no weights, trained with EVA-X's
// layer decay on a manifest (or class-per-folder tree), evaluated by per-class ROC AUC / accuracy.
// Plugs into the shared trainer; also predicts a split for `evax evaluate`.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "evax/classify/model.h"
#include "evax/core/config.h"
#include "evax/data/loader.h"
#include "evax/data/manifest.h"
#include "evax/data/transforms.h"
#include "evax/eval/metrics.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/trainer.h"

namespace evax {

class Comm;

/// How a label the manifest marks uncertain (-1, CheXpert) becomes a target.
struct UncertainOptions {
  /// Policy of every class not listed in `ones`: "zeros" (U-Zeros), "ones" (U-Ones), "ignore"
  /// (masked out of the loss like a missing label) or "error" (a DataError names the row).
  std::string policy = "error";
  /// Classes that take U-Ones whatever `policy` says (CheXpert: Atelectasis, Edema).
  std::vector<std::string> ones;
  /// EVA-X's use_smooth_label: an uncertain target becomes one value per class drawn once from
  /// the run's seed, U(0.7, 0.8) for U-Ones classes and U(0.2, 0.3) for U-Zeros ones.
  bool smooth = false;
};

/// Everything a finetuning run needs besides the optimizer and the loop.
struct ClassifyOptions {
  ClassifierOptions model;     ///< architecture, classes, input size, drop path
  /// Initial weights: a released EVA-X MIM .pt, an evax pretraining or finetuning checkpoint (a
  /// `model.safetensors`, a checkpoint directory, or a run directory: its best/, else its
  /// newest checkpoint), an EVA-X *_ft.pth, any timm-named file; "" = scratch.
  std::string init;
  std::string mode = "full";   ///< "full" finetuning or "linear" probing (frozen backbone)
  double layer_decay = 0.55;   ///< EVA-X runs (train.py default 0.75)
  bool multiclass = false;     ///< cross-entropy over one-hot labels (COVIDx) instead of BCE
  double smoothing = 0.0;      ///< label smoothing of the loss
  std::string manifest;        ///< manifest CSV (or use `folders`)
  /// Class-per-folder trees by split ("train", "val", "test" → root), instead of a manifest.
  std::map<std::string, std::string> folders;
  /// Label columns in output order ([] = every label column of the manifest / folder classes).
  std::vector<std::string> classes;
  std::string train_split = "train";  ///< rows trained on
  std::string eval_split = "val";     ///< rows of the evaluation hook (model selection)
  std::string test_split = "test";    ///< rows `evax evaluate` scores by default
  bool missing_as_zero = false;  ///< a missing label (empty cell) is 0 (EVA-X) instead of masked
  UncertainOptions uncertain;
  /// Training images: "augment" (RandomResizedCrop, flip, RandAugment: EVA-X CXR14) or
  /// "resize_crop" (the evaluation transform: EVA-X CheXpert and COVIDx train unaugmented).
  std::string train_transform = "augment";
  ClassifyAugmentOptions augment;  ///< settings of "augment" (size = model img_size)
  /// Evaluation transform: Resize(int(size / crop_pct), shorter side, PIL bicubic) then
  /// CenterCrop(size) (timm: 0.875 at 224, 1.0 at 480).
  double crop_pct = 0.875;
  double mean = kEvaxMean;  ///< normalisation mean (EVA-X: Merged520k statistics)
  double std = kEvaxStd;    ///< normalisation std
  LoaderOptions loader;     ///< training batch (per rank), workers, seed, data_pct, epoch_length
  int64_t eval_batch_size = 64;  ///< evaluation batch per rank
  /// Multi-class scores the evaluation ranks (AUC, predictions.csv): "softmax" probabilities, or
  /// "sigmoid" of each logit as EVA-X's evaluation does for COVIDx too (accuracy is the same).
  std::string auc_scores = "softmax";
  std::string device = "auto";
  bool bf16 = true;       ///< bf16 autocast on CUDA
  bool bf16_cpu = false;  ///< bf16 autocast on CPU too
};

/// EVA-X finetuning's optimizer defaults: torch AdamW (betas 0.9/0.999, eps 1e-8), lr 1e-3 (not
/// batch-scaled), min_lr 1e-6, no gradient clipping [eva-x code].
AdamWOptions classify_optimizer_defaults();
/// EVA-X's model selection: the evaluation's mAUC, higher is better.
EvalHookOptions classify_eval_defaults();

/// Reads model:, finetune:, data:, loss:, eval.split / eval.test_split / eval.batch_size /
/// eval.auc_scores, seed and
/// device from a finetuning config (the trainer reads the rest of eval:).
ClassifyOptions classify_options_from_config(Config& cfg);

/// What a checkpoint's meta.json "task" records for a classifier: enough to predict without the
/// config.
struct ClassifierSpec {
  std::string model;
  int64_t depth = 0;
  int64_t img_size = 224;
  std::vector<std::string> classes;
  bool multiclass = false;
  double crop_pct = 0.875, mean = kEvaxMean, std = kEvaxStd;
  nlohmann::json to_json() const;
  /// DataError naming `origin` when a field is missing.
  static ClassifierSpec from_json(const nlohmann::json& j, const std::string& origin);
};



class ClassifyTask : public Task {
 public:
  /// `rank`/`world` shard the data, `comm` (null: one process) gathers evaluations, `local_rank`
  /// picks the GPU. Loads the manifest, builds and initialises the model; in linear mode also
  /// computes the frozen features of the training rows once.
  ClassifyTask(const ClassifyOptions& o, int rank, int world, Comm* comm, int local_rank = 0);
  ~ClassifyTask() override;

  std::vector<NamedParam> trainable() override;
  ParamGroups param_groups(double weight_decay) override;
  int64_t micro_batches_per_epoch() override;
  void start_epoch(int64_t epoch, int64_t skip) override;
  MicroStep forward_micro() override;
  /// The step on given inputs: images (B, 3, S, S) (linear mode: features (B, D)), targets and
  /// label mask (B, K) as the loader makes them.
  MicroStep forward_batch(const torch::Tensor& images, const torch::Tensor& labels,
                          const torch::Tensor& label_mask);
  /// Weights in timm `Eva(global_pool='avg')` / `VisionTransformer` naming.
  TensorMap model_state() override;
  void load_model_state(const TensorMap& state) override;
  nlohmann::json run_identity() override;
  nlohmann::json checkpoint_meta() override { return spec().to_json(); }
  bool has_evaluation() override { return true; }
  /// On eval_split: "mauc", "auc/<class>", "loss", multi-class also "accuracy".
  std::map<std::string, double> evaluate(int64_t epoch) override;

  /// Scores (sigmoid for multi-label; multi-class: eval.auc_scores) and labels of every row of
  /// `split`, each image once, in manifest order (collective over ranks).
  ScoredLabels predict_split(const std::string& split);
  /// Rows of a split (0 for an unknown or empty one).
  int64_t rows_in(const std::string& split) const {
    auto it = splits_.find(split);
    return it == splits_.end() ? 0 : it->second.size();
  }
  ClassifierSpec spec() const;
  VisionTransformer& model() { return model_; }
  const std::vector<std::string>& classes() const { return classes_; }

 private:
  struct Rows;
  Sample load_train(int64_t index, Rng& rng) const;
  torch::Tensor eval_image(const std::string& path) const;
  std::pair<torch::Tensor, torch::Tensor> targets(const ManifestRow& row, bool for_metrics) const;
  torch::Tensor run_model(const torch::Tensor& x);
  /// Logits (or, in linear mode with `features`, pooled features) of rows, gathered across ranks.
  std::pair<torch::Tensor, std::vector<int64_t>> infer(const Manifest& rows, bool features);
  /// The evaluation's scores of `logits`: sigmoid, or softmax for multi-class unless
  /// auc_scores is "sigmoid".
  torch::Tensor scores_of(const torch::Tensor& logits) const;
  bool autocast_on() const { return opts_.bf16 && (device_.is_cuda() || opts_.bf16_cpu); }
  bool linear() const { return opts_.mode == "linear"; }

  ClassifyOptions opts_;
  int rank_, world_;
  Comm* comm_;
  torch::Device device_;
  std::vector<std::string> classes_;
  std::vector<bool> uncertain_ones_;
  std::vector<float> smooth_value_;  ///< per class: the smoothed target of an uncertain label
  Manifest train_, eval_;
  std::map<std::string, Manifest> splits_;  ///< every split, for predict_split
  VisionTransformer model_{nullptr};
  torch::Tensor train_features_;  ///< linear mode: (N, D) frozen features of train_
  torch::Tensor eval_features_;   ///< linear mode: frozen features of eval_ (on first use)
  std::unique_ptr<Loader> loader_;
};

}  // namespace evax
