// Synthetic chest radiographs (`evax synth`): phantom PA/AP chest X-rays with known labels,
// masks and boxes, so that every evax pipeline can be trained and tested without a real dataset.
//
// Each image is rendered from its own random stream, seeded by (seed, image index); the anatomy
// shared by the 1-3 images of a patient comes from (seed, patient index). Output is therefore
// byte-identical for a given seed whatever the number of threads.
//
// Value rule shared by the PNG and the DICOM of an image. Let y in [0,1] be the rendered display
// value (denser = brighter), B = BitsStored (12, 14 or 16) and M = 2^B - 1:
//   PNG (8-bit):   p = round(255 * y)
//   DICOM stored:  q = round(M * y);  s = q for MONOCHROME2,  s = M - q for MONOCHROME1
//   modality:      v = slope * s + intercept   (slope 1, intercept 0 without a modality LUT;
//                                              slope > 0 always)
// A reader recovers y as  y' = (v - intercept) / (slope * M), then y' = 1 - y' for MONOCHROME1,
// i.e. the modality value scaled to [0,1] over the range of the stored bits. |y' - p/255| is at
// most 0.5/255 + 0.5/M. synth_display_value() implements this reader rule.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace evax {

/// Findings rendered by the generator, in label-column order.
enum SynthFinding : int {
  kCardiomegaly = 0,
  kEffusion = 1,
  kNodule = 2,
  kPneumothorax = 3,
  kConsolidation = 4,
};
inline constexpr int kSynthFindings = 5;

/// Label column name of a finding ("Cardiomegaly", ...).
const char* synth_finding_name(int finding);

/// Dataset split of a patient.
enum class SynthSplit : int { kTrain = 0, kVal = 1, kTest = 2 };

/// "train", "val" or "test".
const char* synth_split_name(SynthSplit split);

/// What `evax synth` generates. Plain members; synth_validate() checks them.
struct SynthOptions {
  std::string out_dir = "synth";  ///< output folder, created when missing
  size_t n = 2000;                ///< number of images (>= 1)
  int size = 256;                 ///< image side in pixels: a multiple of 16, >= 64
  uint64_t seed = 0;              ///< same seed => byte-identical output
  int threads = 0;                ///< worker threads; 0 = hardware concurrency
  double train_fraction = 0.7;    ///< share of patients in the train split
  double val_fraction = 0.1;      ///< share of patients in the val split
  double test_fraction = 0.2;     ///< share of patients in the test split (the three sum to 1)
  /// Probability of each finding per image, SynthFinding order (Cardiomegaly is drawn per patient).
  std::array<double, kSynthFindings> prevalence = {0.2, 0.2, 0.15, 0.12, 0.15};
  /// Findings larger and denser by this factor (>= 1; effusion height, nodule size and density,
  /// pneumothorax rim and darkness, consolidation size and density): the demo trains tiny models
  /// in minutes on what real radiographs show subtly. 1 = the published rendering.
  double conspicuity = 1.0;
  bool write_dicom = true;  ///< write dicom/<id>.dcm and classification_dicom.csv
  bool write_png = true;    ///< write png/<id>.png
};

/// Throws evax::ConfigError naming the first bad option and its value.
void synth_validate(const SynthOptions& options);

/// DICOM encoding of one image (see the value rule at the top of this file).
struct SynthDicomVariant {
  int bits_stored = 16;            ///< 12, 14 or 16
  bool monochrome1 = false;        ///< stored values inverted
  bool has_rescale = false;        ///< RescaleSlope/Intercept written (never 1/0 then)
  double rescale_slope = 1.0;      ///< > 0
  double rescale_intercept = 0.0;  ///< modality value = slope * stored + intercept
  bool has_window = false;         ///< WindowCenter/Width written (full stored range)
};

/// Ground truth of one rendered image, for tests and analysis.
struct SynthParams {
  double ctr = 0.0;              ///< cardiothoracic ratio: heart width / internal thorax width
  double heart_width_px = 0.0;   ///< widest horizontal extent of the heart, before rotation
  double thorax_width_px = 0.0;  ///< widest internal thorax width (lung to lung), before rotation
  int effusion_sides = 0;        ///< bit 0: image-left lung (patient right), bit 1: image-right
  int pneumothorax_side = -1;    ///< 0 image-left lung, 1 image-right lung, -1 none
  int consolidation_side = -1;   ///< 0 image-left lung, 1 image-right lung, -1 none
  cv::Point2d nodule_center;     ///< pixels in the final image
  double nodule_radius = 0.0;    ///< pixels; 0 without a nodule
  double rotation_deg = 0.0;     ///< applied rotation about the image centre
  cv::Point2d shift_px;          ///< applied translation
  double noise_sigma = 0.0;      ///< additive noise, display units
  double blur_sigma = 0.0;       ///< detector blur, pixels
};

/// One rendered image with everything written for it.
struct SynthSample {
  size_t index = 0;                           ///< image index in [0, n)
  std::string id;                             ///< "synth_000123"
  size_t patient = 0;                         ///< patient index
  std::string patient_id;                     ///< "P00045"
  int visit = 0;                              ///< 0-based image number within the patient
  SynthSplit split = SynthSplit::kTrain;      ///< split of the patient
  std::string view;                           ///< "PA" or "AP"
  std::string sex;                            ///< "F" or "M" (DICOM PatientSex)
  int age = 0;                                ///< years (DICOM PatientAge)
  std::array<bool, kSynthFindings> labels{};  ///< SynthFinding order
  cv::Rect nodule_box;  ///< pixel-edge box of the nodule disc; empty without one
  cv::Mat image;        ///< CV_32F display values y in [0,1], denser = brighter
  /// CV_8U 0/255 air-filled lung fields, pneumothorax included, heart and effusion excluded.
  cv::Mat lungs;
  cv::Mat heart;            ///< CV_8U 0/255 heart shadow (not written to disk)
  cv::Mat pneumothorax;     ///< CV_8U 0/255, empty mask (all 0) when absent
  cv::Mat consolidation;    ///< CV_8U 0/255, all 0 when absent
  cv::Mat effusion;         ///< CV_8U 0/255 pleural fluid inside the lung fields, all 0 when absent
  SynthDicomVariant dicom;  ///< how the DICOM file encodes `image`
  SynthParams params;       ///< ground-truth geometry

  bool no_finding() const;  ///< true when no label is set
};

/// Where each finding is, as one CV_8U bit mask (written as masks/findings/<id>.png): bit k
/// (value 1 << k, SynthFinding order) is set on the pixels of finding k: the heart shadow when
/// enlarged (Cardiomegaly), the pleural fluid, the nodule disc, the pneumothorax rim and the
/// consolidation. Dense targets for the demo's teacher.
cv::Mat synth_finding_map(const SynthSample& sample);

/// Renders image `index` exactly as synth_generate() writes it. Costs O(n) for the patient plan.
SynthSample synth_render(const SynthOptions& options, size_t index);

/// 8-bit display rendering: round(255 * y), CV_8U.
cv::Mat synth_to_png8(const cv::Mat& image);

/// DICOM stored values of `image` under `variant` (row-major).
std::vector<uint16_t> synth_to_stored(const cv::Mat& image, const SynthDicomVariant& variant);

/// The reader rule: display value in [0,1] of stored value `stored` under `variant`.
double synth_display_value(uint16_t stored, const SynthDicomVariant& variant);

/// Counts of one synth_generate() run.
struct SynthSummary {
  size_t images = 0;                               ///< images written
  size_t patients = 0;                             ///< distinct patients
  std::array<size_t, kSynthFindings> positives{};  ///< images with each finding
  size_t no_finding = 0;                           ///< images without any finding
  std::array<size_t, 3> split_images{};            ///< images per SynthSplit
  std::array<size_t, 3> split_patients{};          ///< patients per SynthSplit
  double seconds = 0.0;                            ///< wall time
};

/// Progress callback: images done so far and the total. Called from worker threads, one call at
/// a time, with `done` increasing.
using SynthProgress = std::function<void(size_t done, size_t total)>;

/// Renders and writes the whole dataset under options.out_dir:
///   png/<id>.png, dicom/<id>.dcm, masks/{lungs,pneumothorax,consolidation}/<id>.png,
///   classification.csv, classification_dicom.csv, pretrain.csv, segmentation_lungs.csv,
///   segmentation_pneumothorax.csv, segmentation_consolidation.csv and synth.json
/// (manifest format: data_manifests/README.md; paths relative to out_dir). Manifests other than
/// classification_dicom.csv point at the PNGs, or at the DICOMs when write_png is false. Masks are
/// written for every image (all 0 when absent). synth.json holds the options and counts only (no
/// paths, thread count or times), so the whole tree is byte-identical for a seed. Existing files
/// are overwritten; manifests are written atomically once every image is done.
/// Throws ConfigError for bad options and DataError when a file cannot be written.
SynthSummary synth_generate(const SynthOptions& options, const SynthProgress& progress = {});

}  // namespace evax
