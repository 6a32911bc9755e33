#include "evax/data/synth_config.h"

#include <cmath>

namespace evax {

SynthOptions synth_options_from_config(const ConfigView& v, SynthOptions o) {
  int64_t n = v.get<int64_t>("n", static_cast<int64_t>(o.n), "number of images to generate");
  v.check("n", n >= 1, "must be >= 1");
  o.n = static_cast<size_t>(n);
  o.size = v.get<int>("size", o.size, "image side in pixels");
  v.check("size", o.size >= 64 && o.size % 16 == 0, "must be a multiple of 16 and >= 64");
  int64_t seed = v.get<int64_t>("seed", static_cast<int64_t>(o.seed),
                                "random seed; the same seed gives byte-identical output");
  v.check("seed", seed >= 0, "must be >= 0");
  o.seed = static_cast<uint64_t>(seed);
  o.threads = v.get<int>("threads", o.threads, "worker threads (the output does not depend on it)");
  v.check("threads", o.threads >= 0, "must be >= 0 (0 = all cores)");
  o.train_fraction =
      v.get<double>("splits.train", o.train_fraction, "share of patients in the train split");
  o.val_fraction =
      v.get<double>("splits.val", o.val_fraction, "share of patients in the val split");
  o.test_fraction =
      v.get<double>("splits.test", o.test_fraction, "share of patients in the test split");
  for (const auto& [s, f] : {std::pair<const char*, double>{"train", o.train_fraction},
                              {"val", o.val_fraction},
                              {"test", o.test_fraction}})
    v.check(std::string("splits.") + s, f >= 0 && f <= 1, "must be in [0, 1]");
  const double sum = o.train_fraction + o.val_fraction + o.test_fraction;
  v.check("splits", std::abs(sum - 1.0) < 1e-9, "train + val + test must sum to 1");
  for (int f = 0; f < kSynthFindings; ++f) {
    const std::string key = std::string("prevalence.") + synth_finding_name(f);
    o.prevalence[f] = v.get<double>(key, o.prevalence[f],
                                    f == kCardiomegaly
                                        ? "probability that a patient has this finding (drawn once "
                                          "per patient, shared by their images)"
                                        : "probability that an image shows this finding");
    v.check(key, o.prevalence[f] >= 0 && o.prevalence[f] <= 1, "must be in [0, 1]");
  }
  o.conspicuity = v.get<double>(
      "conspicuity", o.conspicuity,
      "findings larger and denser by this factor, so that tiny demo models learn them in minutes");
  v.check("conspicuity", o.conspicuity >= 1 && o.conspicuity <= 4, "must be in [1, 4] (1 = subtle, as published)");
  o.write_dicom = v.get<bool>("write_dicom", o.write_dicom,
                              "write dicom/<id>.dcm (16-bit) and classification_dicom.csv");
  o.write_png = v.get<bool>("write_png", o.write_png, "write png/<id>.png (8-bit)");
  v.check("write_png", o.write_png || o.write_dicom, "write_png and write_dicom cannot both be false");
  return o;
}

}  // namespace evax
