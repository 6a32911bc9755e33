#include "evax/data/transforms.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/data/preprocess.h"
#include "reference_util.h"
#include "skip.h"

using evax::CropBox;
using evax::Range;
using evax::Rng;

namespace {

// A smooth grey test image with an asymmetric bright blob (so flips and crops are visible).
torch::Tensor test_image(int64_t h, int64_t w) {
  auto y = torch::linspace(0, 1, h).view({h, 1}).expand({h, w});
  auto x = torch::linspace(0, 1, w).view({1, w}).expand({h, w});
  auto img = 0.3 + 0.2 * torch::sin(7 * x + 3 * y) + 0.1 * torch::cos(11 * x * y);
  img = img + 0.4 * torch::exp(-((x - 0.25).pow(2) + (y - 0.3).pow(2)) / 0.01);
  return img.clamp(0, 1).unsqueeze(0).to(torch::kFloat32).contiguous();
}

bool same_box(const CropBox& a, const CropBox& b) {
  return a.top == b.top && a.left == b.left && a.height == b.height && a.width == b.width;
}

torch::Tensor to_float255(const torch::Tensor& u8) { return u8.to(torch::kFloat32); }

}  // namespace

TEST_CASE("transforms: random_resized_crop_box stays inside and is deterministic", "[transforms]") {
  for (auto [h, w] : {std::pair<int64_t, int64_t>{224, 224}, {100, 400}, {37, 5}, {1, 1}}) {
    Rng rng(5, {static_cast<uint64_t>(h), static_cast<uint64_t>(w)});
    for (int k = 0; k < 2000; ++k) {
      const CropBox b = evax::random_resized_crop_box(rng, h, w);
      REQUIRE(b.height > 0);
      REQUIRE(b.width > 0);
      REQUIRE(b.top >= 0);
      REQUIRE(b.left >= 0);
      REQUIRE(b.top + b.height <= h);
      REQUIRE(b.left + b.width <= w);
    }
  }
  Rng a(9, {1, 2}), b(9, {1, 2});
  for (int k = 0; k < 100; ++k)
    REQUIRE(same_box(evax::random_resized_crop_box(a, 256, 320),
                     evax::random_resized_crop_box(b, 256, 320)));
  // Fallback when nothing fits: the whole image with its aspect clamped into the ratio, centred
  // (torchvision: h = 100, w = round(100 · 4/3) = 133, j = (400 - 133) // 2).
  Rng r(1);
  const CropBox f = evax::random_resized_crop_box(r, 100, 400, {1.0, 1.0}, {1.0, 1.0});
  CHECK(same_box(f, CropBox{0, 150, 100, 100}));
  const CropBox f2 = evax::random_resized_crop_box(r, 100, 400, {1.0, 1.0}, {0.75, 4.0 / 3.0});
  CHECK(same_box(f2, CropBox{0, 133, 100, 133}));
  const CropBox f3 = evax::random_resized_crop_box(r, 400, 100, {1.0, 1.0}, {0.75, 4.0 / 3.0});
  CHECK(same_box(f3, CropBox{133, 0, 133, 100}));
}

TEST_CASE("transforms: crop box statistics match torchvision", "[transforms][python]") {
  if (evax::test::pil_reference().empty())
    EVAX_SKIP("EVAX_PYTHON not configured: no torchvision reference");
  for (const char* name : {"wide", "mim", "fallback"}) {
    CAPTURE(name);
    const auto p = evax::test::ref(std::string("rrc/") + name + "/params");
    const auto s = evax::test::ref(std::string("rrc/") + name + "/stats");
    const auto pa = p.accessor<double, 1>();
    const auto sa = s.accessor<double, 1>();
    const int64_t h = static_cast<int64_t>(pa[0]), w = static_cast<int64_t>(pa[1]);
    const int n = static_cast<int>(pa[6]);
    Rng rng(2024, {static_cast<uint64_t>(h)});
    double sum[4] = {}, sq[4] = {};
    for (int k = 0; k < n; ++k) {
      const CropBox b = evax::random_resized_crop_box(rng, h, w, {pa[2], pa[3]}, {pa[4], pa[5]});
      const double v[4] = {double(b.top), double(b.left), double(b.height), double(b.width)};
      for (int i = 0; i < 4; ++i) sum[i] += v[i], sq[i] += v[i] * v[i];
    }
    for (int i = 0; i < 4; ++i) {
      const double mean = sum[i] / n, sd = std::sqrt(std::max(0.0, sq[i] / n - mean * mean));
      // Two independent estimates of the same mean: their difference has standard error
      // sd · sqrt(2 / n); 5 of those is a false alarm rate below 1e-6.
      const double tol = 5.0 * std::max(sd, sa[4 + i]) * std::sqrt(2.0 / n) + 1e-9;
      INFO("field " << i << ": mean " << mean << " vs torchvision " << sa[i] << ", sd " << sd
                    << " vs " << sa[4 + i]);
      CHECK(std::abs(mean - sa[i]) <= tol);
      CHECK(std::abs(sd - sa[4 + i]) <= 0.05 * sa[4 + i] + 0.5);
    }
  }
}

TEST_CASE("transforms: bicubic resize is close to PIL", "[transforms][python]") {
  if (evax::test::pil_reference().empty())
    EVAX_SKIP("EVAX_PYTHON not configured: no PIL reference");
  for (const char* name : {"down", "up", "odd"}) {
    CAPTURE(name);
    const auto in = evax::test::ref(std::string("resize/") + name + "/in");
    const auto want = to_float255(evax::test::ref(std::string("resize/") + name + "/out"));
    const auto x = to_float255(in).div(255.0).unsqueeze(0);
    for (bool q : {false, true}) {
      const auto got = evax::resize_bicubic_pil(x, want.size(0), want.size(1), q)
                           .squeeze(0)
                           .mul(255.0)
                           .round();
      const auto diff = (got - want).abs();
      const double max = diff.max().item<double>(), mean = diff.mean().item<double>();
      std::printf("PIL bicubic %s %ldx%ld -> %ldx%ld%s: max %.0f, mean %.4f (8-bit units)\n", name,
                  long(in.size(0)), long(in.size(1)), long(want.size(0)), long(want.size(1)),
                  q ? " (8-bit passes)" : "", max, mean);
      CHECK(max <= 2.0);
      CHECK(mean < 0.5);
    }
  }
}

TEST_CASE("transforms: eval_transform matches timm's eval transform", "[transforms][python]") {
  if (evax::test::pil_reference().empty())
    EVAX_SKIP("EVAX_PYTHON not configured: no timm reference");
  // timm 1.0 create_transform(S, is_training=False, crop_pct=P, interpolation='bicubic'):
  // Resize(floor(S / P)) (shorter side; longer side int(short · long / short)), CenterCrop(S)
  // (offsets rounded half to even), on odd image sizes where floor and round differ (P = 0.9,
  // 0.95) and the centring offsets are halves (235 - 224, 385 - 224).
  int cases = 0;
  for (const auto& [key, params] : evax::test::pil_reference()) {
    const std::string suffix = "/params";
    if (key.rfind("eval/", 0) != 0 || key.size() < suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string name = key.substr(0, key.size() - suffix.size());
    CAPTURE(name);
    ++cases;
    const auto p = params.accessor<double, 1>();
    const int64_t h = static_cast<int64_t>(p[0]), w = static_cast<int64_t>(p[1]);
    const int64_t size = static_cast<int64_t>(p[2]);
    const double crop_pct = p[3], mean = p[4], std = p[5];
    const auto resized = evax::test::ref(name + "/resized");
    const auto box = evax::test::ref(name + "/box");
    const auto want = evax::test::ref(name + "/out");
    const int64_t rh = resized[0].item<int64_t>(), rw = resized[1].item<int64_t>();
    const int64_t top = box[0].item<int64_t>(), left = box[1].item<int64_t>();

    const auto in = evax::test::ref("eval/" + std::to_string(h) + "x" + std::to_string(w) + "/in");
    REQUIRE(in.sizes() == torch::IntArrayRef({h, w}));
    const auto x = to_float255(in).div(255.0).contiguous();
    const cv::Mat unit = cv::Mat(int(h), int(w), CV_32FC1, x.data_ptr<float>()).clone();
    const auto got = evax::eval_transform(unit, size, crop_pct, mean, std);
    REQUIRE(got.sizes() == torch::IntArrayRef({3, size, size}));
    CHECK(torch::equal(got[0], got[1]));
    CHECK(torch::equal(got[0], got[2]));

    // The same resize and crop box as timm: timm's intermediate size from resize_shorter, and
    // eval_transform's output is exactly that image cut at timm's box.
    const auto mine =
        evax::resize_shorter(x.unsqueeze(0), std::min(rh, rw), evax::Interp::kBicubic);
    CHECK(mine.sizes() == torch::IntArrayRef({1, rh, rw}));
    const auto cut = mine[0].slice(0, top, top + size).slice(1, left, left + size);
    const auto unit_out = got[0] * std + mean;
    CHECK((unit_out - cut).abs().max().item<double>() < 1e-5);

    // Pixels: timm resizes in 8 bits, evax in float (as in "bicubic resize is close to PIL").
    const auto got8 = unit_out.mul(255.0).round();
    const auto want8 = (want * std + mean).mul(255.0).round();
    const auto diff = (got8 - want8).abs();
    const double max = diff.max().item<double>(), mean_diff = diff.mean().item<double>();
    std::printf("timm eval %ldx%ld S=%ld crop_pct=%.3f: resize to %ldx%ld, box (%ld, %ld); "
                "max %.0f, mean %.4f (8-bit units)\n",
                long(h), long(w), long(size), crop_pct, long(rh), long(rw), long(top), long(left),
                max, mean_diff);
    CHECK(max <= 2.0);
    CHECK(mean_diff < 0.5);
  }
  CHECK(cases == 15);
}

TEST_CASE("transforms: flip, centre crop, resize_shorter, normalise", "[transforms]") {
  const auto img = test_image(20, 30);
  const auto f = evax::hflip(img);
  CHECK(torch::equal(f.select(2, 0), img.select(2, 29)));
  CHECK(torch::equal(evax::hflip(f), img));

  // torchvision: top = round((20 - 15) / 2) = round(2.5) = 2 (half to even), left = 5.
  const auto c = evax::center_crop(img, 15, 20);
  CHECK(c.sizes() == torch::IntArrayRef({1, 15, 20}));
  CHECK(torch::equal(c, img.slice(1, 2, 17).slice(2, 5, 25)));
  CHECK_THROWS_AS(evax::center_crop(img, 21, 10), evax::DataError);

  const auto r = evax::resize_shorter(img, 10);
  CHECK(r.sizes() == torch::IntArrayRef({1, 10, 15}));
  CHECK(evax::resize_shorter(test_image(30, 20), 16).sizes() == torch::IntArrayRef({1, 24, 16}));

  const auto n = evax::normalize(img, evax::kEvaxMean, evax::kEvaxStd);
  REQUIRE(n.sizes() == torch::IntArrayRef({3, 20, 30}));
  CHECK(torch::allclose(n[0], (img[0] - 0.49185243) / 0.28509309));
  CHECK(torch::equal(n[0], n[2]));

  const auto q = evax::quantize8(img);
  CHECK(torch::allclose(q * 255, (q * 255).round(), 0, 1e-4));
  CHECK((q - img).abs().max().item<double>() <= 0.5 / 255 + 1e-6);
}

TEST_CASE("transforms: MIM two views show the same region", "[transforms]") {
  const auto img = test_image(256, 300);
  evax::TwoViewOptions o;
  o.teacher_size = 112;  // different sizes make the check meaningful
  int flipped = 0;
  for (uint64_t i = 0; i < 24; ++i) {
    Rng rng(7, {0, i});
    const evax::TwoViews v = evax::two_view_crop(img, rng, o);
    REQUIRE(v.student.sizes() == torch::IntArrayRef({3, 224, 224}));
    REQUIRE(v.teacher.sizes() == torch::IntArrayRef({3, 112, 112}));
    flipped += v.flipped;
    // Un-normalise each with its own statistics, then bring the student to the teacher's size.
    const auto s = v.student[0].unsqueeze(0) * evax::kEvaxStd + evax::kEvaxMean;
    const auto t = v.teacher[0].unsqueeze(0) * evax::kTeacherStd + evax::kTeacherMean;
    CHECK(s.min().item<double>() >= -1e-5);
    CHECK(t.max().item<double>() <= 1 + 1e-5);
    const double same = (evax::resize_bicubic_pil(s, 112, 112) - t).abs().mean().item<double>();
    CHECK(same < 0.01);
    // The flip really is a mirror of the box's crop (and not of some other region).
    auto direct = evax::resized_crop(img, v.box, 112, 112);
    if (v.flipped) direct = evax::hflip(direct);
    CHECK((direct - t).abs().max().item<double>() < 1e-5);
    if (v.flipped) CHECK((evax::hflip(direct) - t).abs().mean().item<double>() > 0.005);
    // Determinism: the same Rng stream gives the same views.
    Rng again(7, {0, i});
    const evax::TwoViews w = evax::two_view_crop(img, again, o);
    CHECK(torch::equal(v.student, w.student));
    CHECK(torch::equal(v.teacher, w.teacher));
  }
  CHECK(flipped > 4);  // Binomial(24, 0.5): outside 5..19 with probability < 0.002
  CHECK(flipped < 20);
}

TEST_CASE("transforms: classification train transform", "[transforms]") {
  const auto img = test_image(300, 280);
  evax::ClassifyAugmentOptions o;
  Rng a(3, {1, 4}), b(3, {1, 4}), c(3, {1, 5});
  const auto x = evax::classify_train_transform(img, a, o);
  REQUIRE(x.sizes() == torch::IntArrayRef({3, 224, 224}));
  CHECK(torch::equal(x, evax::classify_train_transform(img, b, o)));
  CHECK(!torch::equal(x, evax::classify_train_transform(img, c, o)));
  const auto unit = x[0] * evax::kEvaxStd + evax::kEvaxMean;
  CHECK(unit.min().item<double>() >= -1e-5);
  CHECK(unit.max().item<double>() <= 1 + 1e-5);
  // RandAugment works on the 8-bit grid.
  CHECK(torch::allclose(unit * 255, (unit * 255).round(), 0, 1e-3));
}

TEST_CASE("transforms: segmentation joint transforms keep image and mask aligned",
          "[transforms]") {
  // The image is the mask drawn in grey, so any misalignment shows up as disagreement.
  auto mask = torch::zeros({1, 120, 160}, torch::kUInt8);
  mask.slice(1, 20, 70).slice(2, 10, 60).fill_(1);
  mask.slice(1, 80, 110).slice(2, 100, 155).fill_(1);
  const evax::SegPair in{mask.to(torch::kFloat32) * 0.8 + 0.1, mask};
  const auto agree = [](const evax::SegPair& p) {
    return ((p.image > 0.5).to(torch::kUInt8) == p.mask).to(torch::kFloat32).mean().item<double>();
  };

  const auto r = evax::joint_resize(in, 64, 64);
  CHECK(r.mask.sizes() == torch::IntArrayRef({1, 64, 64}));
  CHECK(r.mask.scalar_type() == torch::kUInt8);
  CHECK(agree(r) > 0.97);
  CHECK(agree(evax::joint_hflip(r)) == agree(r));
  Rng rng(4);
  for (int k = 0; k < 10; ++k) {
    const CropBox box = evax::random_resized_crop_box(rng, 120, 160);
    const auto c = evax::joint_resized_crop(in, box, 96, 96);
    CHECK(agree(c) > 0.95);
    CHECK(torch::all((c.mask == 0) | (c.mask == 1)).item<bool>());
  }

  evax::SegAugmentOptions o;
  o.size = 64;
  o.photometric = false;
  Rng t1(8, {0, 1});
  auto out = evax::segment_train_transform(in, t1, o);
  REQUIRE(out.image.sizes() == torch::IntArrayRef({3, 64, 64}));
  out.image = out.image.narrow(0, 0, 1) * evax::kEvaxStd + evax::kEvaxMean;
  CHECK(agree(out) > 0.97);
}

namespace {

// A smooth random grey image in [0, 1]: 14 Gaussian bumps of either sign (sigma 5-18 px) at
// seeded random places, rescaled to [0, 1]. Thresholding it gives blobs with smooth boundaries.
torch::Tensor blob_image(int64_t h, int64_t w, uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto u = torch::rand({14, 4}, g, torch::kFloat64);
  auto y = torch::arange(h, torch::kFloat64).view({h, 1});
  auto x = torch::arange(w, torch::kFloat64).view({1, w});
  auto img = torch::zeros({h, w}, torch::kFloat64);
  for (int64_t k = 0; k < u.size(0); ++k) {
    const double cy = u[k][0].item<double>() * h, cx = u[k][1].item<double>() * w;
    const double sigma = 5 + 13 * u[k][2].item<double>();
    const double sign = u[k][3].item<double>() < 0.3 ? -1 : 1;
    img += sign * torch::exp(-((y - cy).pow(2) + (x - cx).pow(2)) / (2 * sigma * sigma));
  }
  img = (img - img.min()) / (img.max() - img.min());
  return img.unsqueeze(0).to(torch::kFloat32).contiguous();
}

// The pair (image, image > t) with t the image's 60th percentile (about 40 % foreground).
evax::SegPair blob_pair(int64_t h, int64_t w, uint64_t seed, double* threshold) {
  const auto img = blob_image(h, w, seed);
  const auto flat = std::get<0>(img.flatten().sort());
  *threshold = flat[static_cast<int64_t>(0.6 * static_cast<double>(flat.numel()))].item<double>() +
               1e-7;  // just above a pixel value: no pixel equals the threshold
  return {img, (img > *threshold).to(torch::kUInt8)};
}

// (H, W) bool: the source mask holds one class within ±ry rows and ±rx columns of the pixel.
torch::Tensor one_class_near(const torch::Tensor& mask, int64_t ry, int64_t rx) {
  const auto m = mask.to(torch::kFloat32).view({1, 1, mask.size(1), mask.size(2)});
  namespace F = torch::nn::functional;
  const auto pool = [&](const torch::Tensor& t) {
    const auto o = F::MaxPool2dFuncOptions({2 * ry + 1, 2 * rx + 1}).stride(1).padding({ry, rx});
    return F::max_pool2d(t, o);
  };
  return (pool(m) == -pool(-m)).view({mask.size(1), mask.size(2)});
}

// For every pixel of an oh × ow resample of `box` of the source, `src_map` at the source pixel
// nearest-neighbour reads for it (top + floor(d · h / oh), the torch / cv2 rule).
torch::Tensor at_nearest_source(const torch::Tensor& src_map, const CropBox& box, int64_t oh,
                                int64_t ow) {
  const auto idx = [](int64_t start, int64_t in, int64_t out) {
    auto d = torch::arange(out, torch::kFloat64) * (static_cast<double>(in) / out);
    return (d.floor().clamp_max(in - 1) + start).to(torch::kInt64);
  };
  return src_map.index_select(0, idx(box.top, box.height, oh))
      .index_select(1, idx(box.left, box.width, ow));
}

// Pixels where thresholding the transformed image disagrees with the transformed mask although
// the source mask is a single class within `support` source pixels of where the mask was read.
// Why that must be 0: a bilinear output is a convex combination of source pixels within about
// 1 + s/2 source pixels (s = source / output size) of the nearest-neighbour tap; when they are all
// on one side of t, so is the output. Resampling may only disagree in the band along the mask's
// boundary. A shifted or unflipped mask breaks this far from any boundary.
int64_t misaligned(const evax::SegPair& out, double t, const evax::SegPair& src,
                   const CropBox& box, int64_t support_y, int64_t support_x, bool flipped = false) {
  const int64_t oh = out.mask.size(1), ow = out.mask.size(2);
  auto safe = at_nearest_source(one_class_near(src.mask, support_y, support_x), box, oh, ow);
  if (flipped) safe = safe.flip({1});
  const auto thr = (out.image[0] > t).to(torch::kUInt8);
  return ((thr != out.mask[0]) & safe).sum().item<int64_t>();
}

// Disagreeing pixels, anywhere.
int64_t disagreeing(const evax::SegPair& out, double t) {
  return ((out.image[0] > t).to(torch::kUInt8) != out.mask[0]).sum().item<int64_t>();
}

// Support radius in source pixels: bilinear taps lie within ceil(s / 2) + 1 of the nearest tap;
// one more for float rounding of the tap index.
int64_t bilinear_support(int64_t in, int64_t out) {
  return static_cast<int64_t>(std::ceil(0.5 * static_cast<double>(in) / out)) + 2;
}

}  // namespace

TEST_CASE("transforms: joint transforms keep a thresholded blob mask aligned", "[transforms]") {
  const int64_t h = 120, w = 160;
  double t = 0;
  const auto src = blob_pair(h, w, 11, &t);
  const double fg = src.mask.to(torch::kFloat32).mean().item<double>();
  REQUIRE(fg > 0.3);
  REQUIRE(fg < 0.5);
  const CropBox whole{0, 0, h, w};

  // Flip: pixel-exact.
  const auto f = evax::joint_hflip(src);
  CHECK(disagreeing(f, t) == 0);
  CHECK(torch::equal(f.mask, src.mask.flip({2})));

  // Resizes down, up and to odd sizes: exact away from the boundary band; the band is thin.
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{64, 64}, {200, 250}, {97, 53}, {120, 160}}) {
    INFO("resize to " << oh << "x" << ow);
    const auto r = evax::joint_resize(src, oh, ow);
    REQUIRE(r.mask.sizes() == torch::IntArrayRef({1, oh, ow}));
    CHECK(misaligned(r, t, src, whole, bilinear_support(h, oh), bilinear_support(w, ow)) == 0);
    CHECK(disagreeing(r, t) < oh * ow / 20);
    // Negative control: the same check on a mask shifted by 3 pixels fails.
    evax::SegPair shifted{r.image, r.mask.roll({3}, {2})};
    CHECK(misaligned(shifted, t, src, whole, bilinear_support(h, oh), bilinear_support(w, ow)) > 0);
    // ... and so does an unflipped mask under a flipped image.
    evax::SegPair half{r.image.flip({2}), r.mask};
    CHECK(misaligned(half, t, src, whole, bilinear_support(h, oh), bilinear_support(w, ow)) > 0);
  }
  const auto rr = evax::joint_resize(src, 64, 64);
  CHECK(misaligned(evax::joint_hflip(rr), t, src, whole, bilinear_support(h, 64),
                   bilinear_support(w, 64), /*flipped=*/true) == 0);

  // Resized crops: bilinear with the bilinear support; the default PIL bicubic (antialiased,
  // radius 2 · max(s, 1) source pixels) is not a convex combination, but on this smooth image its
  // overshoot is far below the image's change over the support, so the same rule holds with the
  // bicubic radius.
  Rng rng(4);
  for (int k = 0; k < 12; ++k) {
    const CropBox box = evax::random_resized_crop_box(rng, h, w);
    INFO("box " << box.top << "," << box.left << " " << box.height << "x" << box.width);
    const auto bl = evax::joint_resized_crop(src, box, 96, 80, evax::Interp::kBilinear);
    CHECK(misaligned(bl, t, src, box, bilinear_support(box.height, 96),
                     bilinear_support(box.width, 80)) == 0);
    const auto bc = evax::joint_resized_crop(src, box, 96, 80);
    const auto cubic = [](int64_t in, int64_t out) {
      return static_cast<int64_t>(std::ceil(2 * std::max(1.0, static_cast<double>(in) / out))) + 2;
    };
    CHECK(misaligned(bc, t, src, box, cubic(box.height, 96), cubic(box.width, 80)) == 0);
    CHECK(torch::all((bc.mask == 0) | (bc.mask == 1)).item<bool>());
  }

  // Keep-ratio resize (mmseg Lung test pipeline): 120x160 with bounds (100, 100) → s = 100/160,
  // 75 x 100.
  const auto kr = evax::joint_resize_keep_ratio(src, 100, 100);
  REQUIRE(kr.mask.sizes() == torch::IntArrayRef({1, 75, 100}));
  CHECK(misaligned(kr, t, src, whole, bilinear_support(h, 75), bilinear_support(w, 100)) == 0);
  CHECK(torch::equal(evax::resize_keep_ratio(src.image, 100, 100), kr.image));

  // The training pipeline without photometric distortion: undo the normalisation and threshold.
  // The mask equals the plain resized mask or its mirror, which says whether it flipped.
  evax::SegAugmentOptions o;
  o.size = 64;
  o.photometric = false;
  const auto plain = evax::joint_resize(src, 64, 64);
  int flips = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    Rng rs(seed, {7});
    auto out = evax::segment_train_transform(src, rs, o);
    REQUIRE(out.image.sizes() == torch::IntArrayRef({3, 64, 64}));
    out.image = out.image.narrow(0, 0, 1) * evax::kEvaxStd + evax::kEvaxMean;
    const bool flipped = !torch::equal(out.mask, plain.mask);
    if (flipped) REQUIRE(torch::equal(out.mask, plain.mask.flip({2})));
    flips += flipped;
    // Undoing the normalisation rounds in float32; that only moves values near t, which lie in
    // the boundary band the check leaves out.
    CHECK(misaligned(out, t, src, whole, bilinear_support(h, 64), bilinear_support(w, 64),
                     flipped) == 0);
  }
  CHECK(flips > 0);
  CHECK(flips < 8);
}

TEST_CASE("transforms: keep-ratio sizes follow mmcv's rescale rule", "[transforms]") {
  // mmcv.rescale_size: s = min(max_long / long_edge, max_short / short_edge),
  // (w, h) → (int(w·s + 0.5), int(h·s + 0.5)). Sizes are (height, width).
  const auto size = [](int64_t h, int64_t w, int64_t a, int64_t b) {
    const auto s = evax::keep_ratio_size(h, w, a, b);
    return std::pair<int64_t, int64_t>{s.height, s.width};
  };
  using P = std::pair<int64_t, int64_t>;
  // 1024x800, (512, 512): s = min(512/1024, 512/800) = 0.5 → 512, 400.
  CHECK(size(1024, 800, 512, 512) == P{512, 400});
  // 1024x513: s = 0.5, w = int(256.5 + 0.5) = 257 (half up; Python's round would give 256).
  CHECK(size(1024, 513, 512, 512) == P{512, 257});
  // Upscaling 100x60: s = min(512/100, 512/60) = 5.12 → 512, int(307.2 + 0.5) = 307.
  CHECK(size(100, 60, 512, 512) == P{512, 307});
  // mmseg's (1333, 800) on 300x1000: s = min(1333/1000, 800/300) = 1.333 → int(399.9 + 0.5) =
  // 400, int(1333 + 0.5) = 1333; the bounds' order does not matter.
  CHECK(size(300, 1000, 1333, 800) == P{400, 1333});
  CHECK(size(300, 1000, 800, 1333) == P{400, 1333});
  // 333x517, (512, 512): s = 512/517, h = int(333 · 512/517 + 0.5) = int(329.78 + 0.5) = 330.
  CHECK(size(333, 517, 512, 512) == P{330, 512});
  // 2000x3000: s = 512/3000, h = int(341.33 + 0.5) = 341.
  CHECK(size(2000, 3000, 512, 512) == P{341, 512});
  // The short bound binds: 600x700, (1000, 400): s = min(1000/700, 400/600) = 2/3 → 400,
  // int(466.67 + 0.5) = 467.
  CHECK(size(600, 700, 1000, 400) == P{400, 467});
  // 7x2000: s = 0.256, h = int(1.792 + 0.5) = 2; 1x2000 would become 0 rows.
  CHECK(size(7, 2000, 512, 512) == P{2, 512});
  CHECK_THROWS_AS(evax::keep_ratio_size(1, 2000, 512, 512), evax::DataError);
  CHECK_THROWS_AS(evax::keep_ratio_size(0, 20, 512, 512), evax::DataError);
  // The image resize follows the rule; masks stay nearest-neighbour class ids.
  const auto img = test_image(100, 60);
  CHECK(evax::resize_keep_ratio(img, 50, 50).sizes() == torch::IntArrayRef({1, 50, 30}));
  const evax::SegPair p{img, (img > 0.5).to(torch::kUInt8)};
  const auto kr = evax::joint_resize_keep_ratio(p, 512, 512);
  CHECK(kr.mask.sizes() == torch::IntArrayRef({1, 512, 307}));
  CHECK(kr.mask.scalar_type() == torch::kUInt8);
  CHECK(torch::all((kr.mask == 0) | (kr.mask == 1)).item<bool>());
}

TEST_CASE("transforms: photometric distortion", "[transforms]") {
  const auto img = evax::quantize8(test_image(40, 50));
  evax::PhotometricOptions off;
  off.p = 0.0;
  Rng r0(1);
  CHECK(torch::allclose(evax::photometric_distortion(img, r0, off), img, 0, 1e-6));

  evax::PhotometricOptions on;
  on.p = 1.0;
  on.contrast = {1.0, 1.0};
  bool brighter = false, darker = false;
  for (uint64_t i = 0; i < 20; ++i) {
    Rng rng(2, {i});
    const auto out = evax::photometric_distortion(img, rng, on);
    CHECK(out.min().item<double>() >= 0.0);
    CHECK(out.max().item<double>() <= 1.0);
    CHECK(torch::allclose(out * 255, (out * 255).round(), 0, 1e-3));  // stays on the 8-bit grid
    // Away from the clipping ends the shift is uniform, within the truncation step.
    const auto mid = (img > 0.2) & (img < 0.8);
    const auto d = ((out - img) * 255).masked_select(mid);
    CHECK((d.max() - d.min()).item<double>() <= 1.0 + 1e-3);
    CHECK(d.abs().max().item<double>() <= 33.0);
    brighter |= d.mean().item<double>() > 1, darker |= d.mean().item<double>() < -1;
  }
  CHECK(brighter);
  CHECK(darker);
}

TEST_CASE("transforms: config decoders", "[transforms]") {
  auto cfg = evax::Config::parse(
      "aug:\n  student_size: 192\n  scale: [0.3, 0.9]\n  flip_p: 0\n"
      "cls:\n  size: 160\n  rand_augment: rand-m9-mstd0.5-inc1\n"
      "bad:\n  scale: [0.9, 0.3]\n",
      "test");
  const auto two = evax::two_view_options_from_config(cfg.view("aug"));
  CHECK(two.student_size == 192);
  CHECK(two.teacher_size == 224);
  CHECK(two.scale.lo == 0.3);
  CHECK(two.flip_p == 0.0);
  const auto cls = evax::classify_augment_options_from_config(cfg.view("cls"));
  CHECK(cls.size == 160);
  CHECK(cls.rand_augment_options.magnitude == 9.0);
  CHECK_THROWS_AS(evax::two_view_options_from_config(cfg.view("bad")), evax::ConfigError);
}
