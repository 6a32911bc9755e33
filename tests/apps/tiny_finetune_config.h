// The tiny finetuning run the bf16 and GPU step tests share: EVA-X-Ti with 2 blocks at 64 px on
// a 72-image synthetic set, 5 findings, batch 8, one epoch logged every step.
#pragma once

#include <string>

#include "test_util.h"

namespace evax::test {

/// Writes `<tmp>/cfg.yaml` (over configs/classify/base.yaml) with `threads` intra-op threads and
/// returns its path.
inline std::string tiny_finetune_config(const TempDir& tmp, int threads) {
  const std::string data =
      synth_dataset("classify_synth", "--n 72 --size 64 --seed 5 --no-dicom --threads 1");
  return write_config_file(
      tmp / "cfg.yaml",
      {{"model", "model: {name: eva_x_tiny_patch16, depth: 2, drop_path: 0.0}\n"},
       {"data", "data:\n"
                "  manifest: " + data + "/classification.csv\n"
                "  classes: [Cardiomegaly, Effusion, Nodule, Pneumothorax, Consolidation]\n"
                "  img_size: 64\n"
                "  crop_pct: 1.0\n"
                "  loader: {batch_size: 8, workers: 1}\n"},
       {"optimizer", "optimizer: {lr: 1.0e-3}\n"},
       {"train", "train: {epochs: 1, warmup_epochs: 0, schedule: fixed, log_every: 1}\n"},
       {"eval", "eval: {split: val, every: 100, metric: mauc, batch_size: 16}\n"},
       {"seed", "seed: 3\n"},
       {"threads", "threads: " + std::to_string(threads) + "\n"}},
      "", "_base_: " + source_path("configs/classify/base.yaml") + "\n");
}

}  // namespace evax::test
