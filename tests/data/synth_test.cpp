#include "evax/data/synth.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <opencv2/imgproc.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/image.h"
#include "skip.h"
#include "test_util.h"

using Catch::Matchers::Contains;

namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A PNG evax synth wrote, decoded as cv::imread(IMREAD_UNCHANGED) did.
cv::Mat read_png(const std::string& path) {
  return evax::image_decode(evax::read_file(path), path);
}

// Minimal CSV reader (quoted fields, no embedded newlines).
std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(slurp(path));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> row(1);
    bool quoted = false;
    for (size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        row.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = !quoted;
      } else if (c == ',' && !quoted) {
        row.emplace_back();
      } else {
        row.back() += c;
      }
    }
    rows.push_back(row);
  }
  return rows;
}

// Relative path -> content of every file under `root`.
std::map<std::string, std::string> tree(const std::string& root) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file())
      files[fs::relative(e.path(), root).string()] = slurp(e.path().string());
  return files;
}

evax::SynthOptions small_options(const std::string& out, size_t n, int size) {
  evax::SynthOptions o;
  o.out_dir = out;
  o.n = n;
  o.size = size;
  o.seed = 11;
  return o;
}

double mean_in(const cv::Mat& img, const cv::Mat& mask) { return cv::mean(img, mask)[0]; }

bool have_dcmdump() { return std::system("command -v dcmdump >/dev/null 2>&1") == 0; }

}  // namespace

TEST_CASE("synth: options are validated with the option and value in the message") {
  const auto bad = [](auto change, const char* what, const char* value) {
    evax::SynthOptions o;
    change(o);
    CHECK_THROWS_AS(evax::synth_validate(o), evax::ConfigError);
    CHECK_THROWS_WITH(evax::synth_validate(o), Contains(what) && Contains(value));
  };
  bad([](evax::SynthOptions& o) { o.n = 0; }, "n must", "0");
  bad([](evax::SynthOptions& o) { o.size = 100; }, "size", "100");
  bad([](evax::SynthOptions& o) { o.size = 48; }, "size", "48");
  bad([](evax::SynthOptions& o) { o.threads = -2; }, "threads", "-2");
  bad([](evax::SynthOptions& o) { o.val_fraction = 0.2; }, "must be 1", "1.1");
  bad([](evax::SynthOptions& o) { o.train_fraction = -0.1; }, "train_fraction", "-0.1");
  bad([](evax::SynthOptions& o) { o.prevalence[evax::kNodule] = 1.5; }, "Nodule", "1.5");
  bad([](evax::SynthOptions& o) { o.prevalence[evax::kEffusion] = -0.25; }, "Effusion", "-0.25");
  bad([](evax::SynthOptions& o) { o.write_png = o.write_dicom = false; }, "write_png", "false");
  evax::SynthOptions ok;
  CHECK_NOTHROW(evax::synth_validate(ok));
  CHECK_THROWS_AS(evax::synth_generate([] {
                    evax::SynthOptions o;
                    o.size = 72;
                    return o;
                  }()),
                  evax::ConfigError);
  CHECK_THROWS_AS(evax::synth_render(ok, ok.n), evax::ConfigError);
}

TEST_CASE("synth: output is byte-identical for a seed, whatever the thread count") {
  evax::test::TempDir tmp("synth_det");
  evax::SynthOptions o = small_options(tmp / "a", 23, 64);
  o.threads = 1;
  evax::synth_generate(o);
  o.out_dir = tmp / "b";
  o.threads = 3;
  size_t last = 0, calls = 0;
  const evax::SynthSummary sum = evax::synth_generate(o, [&](size_t done, size_t total) {
    CHECK(done == last + 1);
    CHECK(total == 23);
    last = done;
    ++calls;
  });
  CHECK(calls == 23);
  CHECK(sum.images == 23);
  const auto a = tree(tmp / "a"), b = tree(tmp / "b");
  CHECK(a.size() == 23 * 6 + 8);  // png, dcm, 4 masks per image; 7 manifests + synth.json
  REQUIRE(a.size() == b.size());
  for (const auto& [name, content] : a) {
    INFO(name);
    REQUIRE(b.count(name) == 1);
    CHECK(content == b.at(name));
  }
  o.out_dir = tmp / "c";
  o.seed = 12;
  evax::synth_generate(o);
  const auto c = tree(tmp / "c");
  CHECK(c.at("png/synth_000000.png") != a.at("png/synth_000000.png"));
  CHECK(c.at("dicom/synth_000000.dcm") != a.at("dicom/synth_000000.dcm"));
}

TEST_CASE("synth: written files equal synth_render and follow the manifest format") {
  evax::test::TempDir tmp("synth_files");
  const evax::SynthOptions o = small_options(tmp.str(), 40, 64);
  const evax::SynthSummary sum = evax::synth_generate(o);
  CHECK(sum.images == 40);
  CHECK(sum.seconds >= 0.0);

  const auto cls = read_csv(tmp / "classification.csv");
  const auto dcm = read_csv(tmp / "classification_dicom.csv");
  const std::vector<std::string> header = {
      "path",   "split",        "patient_id",    "view",       "Cardiomegaly", "Effusion",
      "Nodule", "Pneumothorax", "Consolidation", "No Finding", "boxes"};
  REQUIRE(cls.size() == 41);
  REQUIRE(dcm.size() == 41);
  CHECK(cls[0] == header);
  CHECK(dcm[0] == header);
  for (const char* seg : {"lungs", "pneumothorax", "consolidation"}) {
    const auto rows = read_csv(tmp / (std::string("segmentation_") + seg + ".csv"));
    REQUIRE(rows.size() == 41);
    CHECK(rows[0] == std::vector<std::string>{"path", "split", "patient_id", "view", "mask"});
    CHECK(rows[5][4] == std::string("masks/") + seg + "/synth_000004.png");
    CHECK(fs::exists(tmp / rows[5][4]));
  }
  const auto pre = read_csv(tmp / "pretrain.csv");
  REQUIRE(pre.size() == 41);
  CHECK(pre[0] == std::vector<std::string>{"path", "split", "patient_id", "view"});

  std::array<size_t, evax::kSynthFindings> positives{};
  for (size_t i = 0; i < 40; ++i) {
    INFO("image " << i);
    const auto& row = cls[i + 1];
    const evax::SynthSample smp = evax::synth_render(o, i);
    CHECK(row[0] == "png/" + smp.id + ".png");
    CHECK(dcm[i + 1][0] == "dicom/" + smp.id + ".dcm");
    CHECK(std::equal(row.begin() + 1, row.end(), dcm[i + 1].begin() + 1));
    CHECK(pre[i + 1][0] == row[0]);
    CHECK(row[1] == evax::synth_split_name(smp.split));
    CHECK(row[2] == smp.patient_id);
    CHECK(row[3] == smp.view);
    for (int f = 0; f < evax::kSynthFindings; ++f) {
      CHECK(row[4 + f] == (smp.labels[f] ? "1" : "0"));
      positives[f] += smp.labels[f];
    }
    CHECK(row[9] == (smp.no_finding() ? "1" : "0"));
    if (smp.labels[evax::kNodule]) {
      const cv::Rect& b = smp.nodule_box;
      CHECK(row[10] == "Nodule:" + std::to_string(b.x) + "," + std::to_string(b.y) + "," +
                           std::to_string(b.width) + "," + std::to_string(b.height));
    } else {
      CHECK(row[10].empty());
    }
    const cv::Mat png = read_png(tmp / row[0]);
    REQUIRE(png.type() == CV_8U);
    CHECK(cv::countNonZero(png != evax::synth_to_png8(smp.image)) == 0);
    const cv::Mat lungs = read_png(tmp / ("masks/lungs/" + smp.id + ".png"));
    CHECK(cv::countNonZero(lungs != smp.lungs) == 0);
    const cv::Mat ptx = read_png(tmp / ("masks/pneumothorax/" + smp.id + ".png"));
    CHECK(cv::countNonZero(ptx != smp.pneumothorax) == 0);
  }
  CHECK(positives == sum.positives);
  const std::string json = slurp(tmp / "synth.json");
  CHECK_THAT(json, Contains("\"n\": 40") && Contains("\"seed\": 11") && Contains("\"findings\""));
}

TEST_CASE("synth: splits are by patient with the requested fractions") {
  evax::test::TempDir tmp("synth_split");
  evax::SynthOptions o = small_options(tmp.str(), 300, 64);
  o.write_dicom = false;
  const evax::SynthSummary sum = evax::synth_generate(o);
  CHECK_FALSE(fs::exists(tmp / "classification_dicom.csv"));
  const auto rows = read_csv(tmp / "classification.csv");
  REQUIRE(rows.size() == 301);
  std::map<std::string, std::set<std::string>> splits;
  std::map<std::string, int> images;
  std::map<std::string, size_t> split_images;
  std::string prev;
  for (size_t i = 1; i < rows.size(); ++i) {
    splits[rows[i][2]].insert(rows[i][1]);
    ++images[rows[i][2]];
    ++split_images[rows[i][1]];
    CHECK(rows[i][2] >= prev);  // a patient's images are consecutive
    prev = rows[i][2];
  }
  CHECK(splits.size() == sum.patients);
  for (const auto& [patient, s] : splits) {
    INFO(patient);
    CHECK(s.size() == 1);
    CHECK(images[patient] >= 1);
    CHECK(images[patient] <= 3);
  }
  const double np = static_cast<double>(sum.patients);
  CHECK(sum.split_patients[0] == static_cast<size_t>(std::llround(0.7 * np)));
  CHECK(sum.split_patients[0] + sum.split_patients[1] ==
        static_cast<size_t>(std::llround(0.8 * np)));
  CHECK(split_images["train"] == sum.split_images[0]);
  CHECK(split_images["val"] == sum.split_images[1]);
  CHECK(split_images["test"] == sum.split_images[2]);
  CHECK(sum.split_images[0] + sum.split_images[1] + sum.split_images[2] == 300);
}

TEST_CASE("synth: labels agree with masks, boxes and ground truth") {
  evax::SynthOptions o;
  o.n = 240;
  o.size = 128;
  o.seed = 5;
  std::array<int, evax::kSynthFindings> positives{};
  int nodule_brighter = 0;
  double nodule_contrast = 0.0;
  double ratio_big = 0.0, ratio_normal = 0.0;
  int n_big = 0, n_normal = 0;
  for (size_t i = 0; i < o.n; ++i) {
    INFO("image " << i);
    const evax::SynthSample s = evax::synth_render(o, i);
    REQUIRE(s.image.type() == CV_32F);
    REQUIRE(s.image.rows == 128);
    double lo = 0, hi = 0;
    cv::minMaxLoc(s.image, &lo, &hi);
    CHECK(lo >= 0.0);
    CHECK(hi <= 1.0);
    for (const cv::Mat* m : {&s.lungs, &s.heart, &s.pneumothorax, &s.consolidation}) {
      REQUIRE(m->type() == CV_8U);
      CHECK(cv::countNonZero((*m != 0) & (*m != 255)) == 0);
    }
    CHECK(cv::countNonZero(s.lungs) > 128 * 128 / 10);
    CHECK(cv::countNonZero(s.lungs & s.heart) == 0);
    CHECK(s.labels[evax::kPneumothorax] == (cv::countNonZero(s.pneumothorax) > 0));
    CHECK(s.labels[evax::kConsolidation] == (cv::countNonZero(s.consolidation) > 0));
    CHECK(cv::countNonZero(s.pneumothorax & ~s.lungs) == 0);
    CHECK(cv::countNonZero(s.consolidation & ~s.lungs) == 0);
    CHECK(s.labels[evax::kEffusion] == (s.params.effusion_sides != 0));
    CHECK(s.labels[evax::kNodule] == !s.nodule_box.empty());
    for (int f = 0; f < evax::kSynthFindings; ++f) positives[f] += s.labels[f];

    if (s.labels[evax::kNodule]) {
      const cv::Rect& b = s.nodule_box;
      CHECK(b.x >= 0);
      CHECK(b.y >= 0);
      CHECK(b.x + b.width <= 128);
      CHECK(b.y + b.height <= 128);
      const double r = s.params.nodule_radius;
      CHECK(r >= 0.015 * 128 - 1e-9);
      CHECK(r <= 0.04 * 128 + 1e-9);
      CHECK(std::abs(b.width - 2 * r) <= 0.5 + 1e-9);  // boxes stay clear of the border
      CHECK(std::abs(b.height - 2 * r) <= 0.5 + 1e-9);
      CHECK(std::abs(b.x + 0.5 * b.width - (s.params.nodule_center.x + 0.5)) <= 0.75);
      const cv::Point2d c = s.params.nodule_center;
      cv::Mat disc = cv::Mat::zeros(128, 128, CV_8U), ring = disc.clone();
      cv::circle(ring, cv::Point(cvRound(c.x), cvRound(c.y)), cvRound(2 * r + 2), 255, -1);
      cv::circle(ring, cv::Point(cvRound(c.x), cvRound(c.y)), cvRound(r + 2), 0, -1);
      cv::circle(disc, cv::Point(cvRound(c.x), cvRound(c.y)), std::max(1, cvRound(0.7 * r)), 255,
                 -1);
      const double diff = mean_in(s.image, disc) - mean_in(s.image, ring & s.lungs);
      nodule_contrast += diff;
      nodule_brighter += diff > 0;
    }
    const cv::Rect hb = cv::boundingRect(s.heart), lb = cv::boundingRect(s.lungs);
    const double measured = static_cast<double>(hb.width) / lb.width;
    if (s.labels[evax::kCardiomegaly]) {
      CHECK(s.params.ctr > 0.55);
      ratio_big += measured;
      ++n_big;
    } else {
      CHECK(s.params.ctr <= 0.5);
      ratio_normal += measured;
      ++n_normal;
    }
    CHECK(s.params.ctr == Approx(s.params.heart_width_px / s.params.thorax_width_px));
  }
  // Every finding occurs, near its prevalence (Cardiomegaly is per patient: wider spread).
  for (int f = 0; f < evax::kSynthFindings; ++f) {
    INFO(evax::synth_finding_name(f));
    CHECK(std::abs(positives[f] / 240.0 - o.prevalence[f]) <
          (f == evax::kCardiomegaly ? 0.1 : 0.07));
  }
  REQUIRE(positives[evax::kNodule] > 0);
  CHECK(nodule_contrast / positives[evax::kNodule] > 0.02);
  CHECK(nodule_brighter >= 0.8 * positives[evax::kNodule]);
  REQUIRE(n_big > 0);
  REQUIRE(n_normal > 0);
  CHECK(ratio_big / n_big > ratio_normal / n_normal + 0.07);
}

TEST_CASE("synth: prevalences 0 and 1 switch findings off and on") {
  evax::SynthOptions o;
  o.n = 30;
  o.size = 64;
  o.prevalence = {0, 0, 0, 0, 0};
  for (size_t i = 0; i < o.n; ++i) CHECK(evax::synth_render(o, i).no_finding());
  o.prevalence = {1, 1, 1, 1, 1};
  int all = 0;
  for (size_t i = 0; i < o.n; ++i) {
    const evax::SynthSample s = evax::synth_render(o, i);
    all += std::all_of(s.labels.begin(), s.labels.end(), [](bool b) { return b; });
  }
  CHECK(all >= 27);
}

TEST_CASE("synth: DICOM files decode to the PNG under the documented value rule") {
  evax::test::TempDir tmp("synth_dicom");
  const evax::SynthOptions o = small_options(tmp.str(), 48, 64);
  evax::synth_generate(o);
  std::set<int> bits;
  int mono1 = 0, rescaled = 0;
  for (size_t i = 0; i < o.n; ++i) {
    const std::string id = evax::synth_render(o, i).id;
    INFO(id);
    DcmFileFormat file;
    REQUIRE(file.loadFile((tmp / ("dicom/" + id + ".dcm")).c_str()).good());
    DcmDataset* ds = file.getDataset();
    Uint16 rows = 0, cols = 0, stored_bits = 0;
    REQUIRE(ds->findAndGetUint16(DCM_Rows, rows).good());
    REQUIRE(ds->findAndGetUint16(DCM_Columns, cols).good());
    REQUIRE(ds->findAndGetUint16(DCM_BitsStored, stored_bits).good());
    OFString photometric;
    REQUIRE(ds->findAndGetOFString(DCM_PhotometricInterpretation, photometric).good());
    Float64 slope = 1.0, intercept = 0.0;  // DCMTK zeroes the value when a tag is missing
    const bool has_rescale = ds->tagExists(DCM_RescaleSlope);
    if (has_rescale) {
      REQUIRE(ds->findAndGetFloat64(DCM_RescaleSlope, slope).good());
      REQUIRE(ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).good());
    }
    const Uint16* data = nullptr;
    unsigned long count = 0;
    REQUIRE(ds->findAndGetUint16Array(DCM_PixelData, data, &count).good());
    REQUIRE(count == static_cast<unsigned long>(rows) * cols);
    bits.insert(stored_bits);
    mono1 += photometric == "MONOCHROME1";
    rescaled += has_rescale && !(slope == 1.0 && intercept == 0.0);

    // Reader side of the rule: modality LUT, scale by the stored range, invert MONOCHROME1.
    const double m = std::pow(2.0, stored_bits) - 1.0;
    const double lo = intercept, hi = slope * m + intercept;
    const cv::Mat png = read_png(tmp / ("png/" + id + ".png"));
    REQUIRE(png.rows == rows);
    double err = 0.0;
    for (unsigned long p = 0; p < count; ++p) {
      double y = (slope * data[p] + intercept - lo) / (hi - lo);
      if (photometric == "MONOCHROME1") y = 1.0 - y;
      err += std::abs(y - png.data[p] / 255.0);
    }
    CHECK(err / count < 0.01);
  }
  CHECK(bits == std::set<int>{12, 14, 16});
  CHECK(mono1 > 0);
  CHECK(mono1 < 48 / 2);
  CHECK(rescaled > 0);
  CHECK(rescaled < 48 / 2);
}

TEST_CASE("synth: the value rule round-trips within quantisation") {
  cv::Mat img(1, 5, CV_32F);
  const float vals[5] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f};
  for (int i = 0; i < 5; ++i) img.at<float>(0, i) = vals[i];
  evax::SynthDicomVariant v;
  v.bits_stored = 12;
  v.monochrome1 = true;
  v.has_rescale = true;
  v.rescale_slope = 2.0;
  v.rescale_intercept = -1024;
  const std::vector<uint16_t> stored = evax::synth_to_stored(img, v);
  CHECK(stored[0] == 4095);
  CHECK(stored[4] == 0);
  const cv::Mat png = evax::synth_to_png8(img);
  for (int i = 0; i < 5; ++i) {
    CHECK(evax::synth_display_value(stored[i], v) == Approx(vals[i]).margin(0.5 / 4095 + 1e-9));
    CHECK(std::abs(png.at<uint8_t>(0, i) / 255.0 - vals[i]) <= 0.5 / 255 + 1e-9);
  }
}

TEST_CASE("synth: dcmdump reads generated files without warnings") {
  if (!have_dcmdump()) EVAX_SKIP("dcmdump is not on PATH (Debian package dcmtk)");
  evax::test::TempDir tmp("synth_dump");
  evax::synth_generate(small_options(tmp.str(), 8, 64));
  for (size_t i = 0; i < 8; ++i) {
    const std::string f = tmp / ("dicom/synth_00000" + std::to_string(i) + ".dcm");
    INFO(f);
    const std::string cmd = "dcmdump '" + f + "' >/dev/null 2>'" + (tmp / "err.txt") + "'";
    CHECK(std::system(cmd.c_str()) == 0);
    CHECK(slurp(tmp / "err.txt").empty());
  }
}

TEST_CASE("synth: an unwritable output folder throws DataError naming it") {
  evax::test::TempDir tmp("synth_bad");
  { std::ofstream(tmp / "file") << "x"; }
  const evax::SynthOptions o = small_options(tmp / "file/out", 2, 64);
  CHECK_THROWS_AS(evax::synth_generate(o), evax::DataError);
  CHECK_THROWS_WITH(evax::synth_generate(o), Contains(tmp / "file/out"));
}

TEST_CASE("synth: the finding map has one bit per finding, on that finding's pixels") {
  evax::SynthOptions o;
  o.n = 60;
  o.size = 128;
  o.seed = 9;
  for (size_t i = 0; i < o.n; ++i) {
    INFO("image " << i);
    const evax::SynthSample s = evax::synth_render(o, i);
    const cv::Mat map = evax::synth_finding_map(s);
    REQUIRE(map.type() == CV_8U);
    const auto bit = [&](int f) { return (map & (1 << f)) != 0; };
    CHECK(cv::countNonZero(bit(evax::kPneumothorax) != (s.pneumothorax != 0)) == 0);
    CHECK(cv::countNonZero(bit(evax::kConsolidation) != (s.consolidation != 0)) == 0);
    CHECK(cv::countNonZero(bit(evax::kEffusion) != (s.effusion != 0)) == 0);
    if (s.labels[evax::kCardiomegaly])
      CHECK(cv::countNonZero(bit(evax::kCardiomegaly) != (s.heart != 0)) == 0);
    else
      CHECK(cv::countNonZero(bit(evax::kCardiomegaly)) == 0);
    // A finding's bit is set somewhere exactly when its label is.
    for (int f = 0; f < evax::kSynthFindings; ++f) {
      INFO(evax::synth_finding_name(f));
      CHECK((cv::countNonZero(bit(f)) > 0) == s.labels[f]);
    }
    if (s.labels[evax::kNodule]) {
      // The disc lies in the nodule's box (one pixel of rounding).
      const cv::Rect b = s.nodule_box;
      const cv::Rect grown(b.x - 1, b.y - 1, b.width + 2, b.height + 2);
      CHECK(cv::countNonZero(bit(evax::kNodule)) == cv::countNonZero(bit(evax::kNodule)(grown & cv::Rect(0, 0, 128, 128))));
    }
  }
}

TEST_CASE("synth: conspicuity enlarges the findings and leaves everything else as published") {
  evax::SynthOptions plain;
  plain.n = 80;
  plain.size = 128;
  plain.seed = 4;
  evax::SynthOptions loud = plain;
  loud.conspicuity = 3.0;
  double area[2][evax::kSynthFindings] = {};
  int normal_identical = 0, normal = 0;
  for (size_t i = 0; i < plain.n; ++i) {
    const evax::SynthSample a = evax::synth_render(plain, i), b = evax::synth_render(loud, i);
    const cv::Mat ma = evax::synth_finding_map(a), mb = evax::synth_finding_map(b);
    for (int f = 0; f < evax::kSynthFindings; ++f) {
      area[0][f] += cv::countNonZero((ma & (1 << f)) != 0);
      area[1][f] += cv::countNonZero((mb & (1 << f)) != 0);
    }
    CHECK(a.labels[evax::kCardiomegaly] == b.labels[evax::kCardiomegaly]);
    if (a.no_finding() && b.no_finding()) {
      ++normal;
      normal_identical += cv::countNonZero(a.image != b.image) == 0;
    }
  }
  // Images without findings do not change at all (the findings draw from their own streams).
  REQUIRE(normal > 5);
  CHECK(normal_identical == normal);
  for (int f : {evax::kEffusion, evax::kNodule, evax::kPneumothorax, evax::kConsolidation}) {
    INFO(evax::synth_finding_name(f) << ": " << area[0][f] << " → " << area[1][f] << " pixels");
    CHECK(area[1][f] > 1.5 * area[0][f]);
  }
  evax::SynthOptions bad = plain;
  bad.conspicuity = 0.5;
  CHECK_THROWS_WITH(evax::synth_validate(bad), Contains("conspicuity"));
}
