#include "evax/data/synth.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <thread>

#include "evax/core/csv.h"
#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/dicom_write.h"
#include "evax/io/image.h"

namespace evax {

namespace {

constexpr double kPi = 3.14159265358979323846;

// ---- Random numbers. Own generators: std:: distributions differ between standard libraries and
// cv::RNG is shared state, both would break byte-identical output.

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Seed of one independent stream: (run seed, stream kind, index).
uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t s = seed;
  uint64_t h = splitmix64(s);
  s = h ^ (stream * 0xd1b54a32d192ed03ULL);
  h = splitmix64(s);
  s = h ^ index;
  return splitmix64(s);
}

// xoshiro256** with uniform and Box-Muller normal draws.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& w : s_) w = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // (0, 1]: log stays finite
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * kPi * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * kPi * u2);
  }
  int below(int n) { return std::min(n - 1, static_cast<int>(uniform() * n)); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// Stream kinds: each decision has its own stream so that changing one option (a prevalence)
// leaves everything else in the image unchanged.
enum Stream : uint64_t {
  kPlanStream = 1,
  kPatientStream,
  kPatientLabelStream,
  kVesselStream,
  kImageStream,
  kFindingStream,
  kNoiseStream,
  kDicomStream,
  kTextureStream,
  kFindingGeomStream = 100,  // + finding
};

double sq(double x) { return x * x; }
double clamp01(double x) { return std::min(1.0, std::max(0.0, x)); }
double smoothstep(double a, double b, double x) {
  const double t = clamp01((x - a) / (b - a));
  return t * t * (3.0 - 2.0 * t);
}

// ---- Patient plan: image -> patient, visit; patient -> split.

struct Plan {
  std::vector<uint32_t> patient;  // per image
  std::vector<uint8_t> visit;     // per image
  std::vector<SynthSplit> split;  // per patient
};

Plan make_plan(const SynthOptions& o) {
  Plan plan;
  plan.patient.reserve(o.n);
  plan.visit.reserve(o.n);
  std::vector<uint64_t> keys;
  for (uint32_t p = 0; plan.patient.size() < o.n; ++p) {
    Rng r(stream_seed(o.seed, kPlanStream, p));
    const double u = r.uniform();
    const int count = u < 0.5 ? 1 : (u < 0.8 ? 2 : 3);
    keys.push_back(r.next());
    for (int v = 0; v < count && plan.patient.size() < o.n; ++v) {
      plan.patient.push_back(p);
      plan.visit.push_back(static_cast<uint8_t>(v));
    }
  }
  // Exact split sizes: patients ranked by a random key, cut at the cumulative fractions.
  const size_t np = keys.size();
  std::vector<size_t> order(np);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return keys[a] != keys[b] ? keys[a] < keys[b] : a < b; });
  const auto cut = [&](double f) {
    return std::min(np, static_cast<size_t>(std::llround(f * static_cast<double>(np))));
  };
  const size_t b1 = cut(o.train_fraction);
  const size_t b2 = std::max(b1, cut(o.train_fraction + o.val_fraction));
  plan.split.resize(np);
  for (size_t rank = 0; rank < np; ++rank)
    plan.split[order[rank]] =
        rank < b1 ? SynthSplit::kTrain : (rank < b2 ? SynthSplit::kVal : SynthSplit::kTest);
  return plan;
}

// ---- Anatomy, in units of the image side; u = x/S grows to the image right (patient left),
// v = y/S grows downwards. Lung 0 is on the image left (patient right), lung 1 on the image right.

struct LungGeom {
  double d_med;   // medial edge, distance from the midline at mid height
  double d_lat;   // lateral edge (inner chest wall)
  double v_top;   // apex
  double v_cp;    // costophrenic angle
  double dome_h;  // height of the diaphragm dome above the costophrenic angle
  double sexp;    // superellipse exponent of the upper lung (2 round .. 3 boxy)
};

struct Anatomy {
  double cx;
  double body_hw, neck_hw, shoulder_v;
  LungGeom lung[2];
  bool cardiomegaly;
  double ctr, heart_rfrac, heart_peak_l, heart_peak_r;
  double spine_hw, vert_period, vert_phase, trachea_hw, carina_v, knob_v, knob_r;
  double rib_v0, rib_dv, rib_alpha, rib_beta, rib_half, ant_slope;
  double clav_v_med, clav_v_lat, clav_d_lat, clav_half;
  double tissue, air, bone, vessel_amp, hilum_v;
  bool gastric;
  double gastric_du, gastric_r;
  double breast_amp, breast_du, breast_dv;  // soft-tissue shadows over the lung bases (F)
  char sex;
  int age;
};

int side_sign(int k) { return k == 0 ? -1 : 1; }

Anatomy sample_patient(const SynthOptions& o, uint32_t p) {
  Rng r(stream_seed(o.seed, kPatientStream, p));
  Anatomy a{};
  a.cx = 0.5 + 0.008 * r.normal();
  a.body_hw = r.uniform(0.43, 0.49);
  a.neck_hw = r.uniform(0.08, 0.11);
  a.shoulder_v = r.uniform(0.05, 0.11);
  const double v_top = r.uniform(0.12, 0.17);
  const double v_cp = r.uniform(0.71, 0.79);
  const double d_lat = r.uniform(0.33, 0.39);
  const double d_med = r.uniform(0.06, 0.08);
  for (int k = 0; k < 2; ++k) {
    LungGeom& l = a.lung[k];
    l.v_top = v_top + 0.006 * r.normal();
    l.v_cp = v_cp + (k == 1 ? r.uniform(0.005, 0.03) : 0.0);  // left dome sits lower
    l.d_lat = d_lat + 0.006 * r.normal();
    l.d_med = d_med + 0.004 * r.normal();
    l.dome_h = r.uniform(0.06, 0.1);
    l.sexp = r.uniform(1.8, 2.4);
  }
  // Both heart sizes are drawn so the prevalence only picks one, leaving the rest unchanged.
  const double ctr_normal = r.uniform(0.39, 0.49);
  const double ctr_large = r.uniform(0.57, 0.66);
  Rng lr(stream_seed(o.seed, kPatientLabelStream, p));
  a.cardiomegaly = lr.uniform() < o.prevalence[kCardiomegaly];
  a.ctr = a.cardiomegaly ? ctr_large : ctr_normal;
  a.heart_rfrac = r.uniform(0.30, 0.38);
  a.heart_peak_l = r.uniform(0.65, 0.8);
  a.heart_peak_r = r.uniform(0.6, 0.75);
  a.spine_hw = r.uniform(0.033, 0.043);
  a.vert_period = r.uniform(0.055, 0.07);
  a.vert_phase = r.uniform(0.0, 1.0);
  a.trachea_hw = r.uniform(0.014, 0.02);
  a.carina_v = r.uniform(0.33, 0.38);
  a.knob_v = a.carina_v - r.uniform(0.0, 0.03);
  a.knob_r = r.uniform(0.025, 0.035);
  a.rib_dv = (v_cp - v_top) / r.uniform(8.6, 9.6);
  a.rib_v0 = v_top + r.uniform(-0.01, 0.02);
  a.rib_alpha = r.uniform(0.3, 0.45);
  a.rib_beta = r.uniform(1.4, 2.0);
  a.rib_half = r.uniform(0.010, 0.014);
  a.ant_slope = r.uniform(0.3, 0.45);
  a.clav_v_med = r.uniform(0.18, 0.23);
  a.clav_v_lat = a.clav_v_med - r.uniform(0.03, 0.07);
  a.clav_d_lat = r.uniform(0.28, 0.34);
  a.clav_half = r.uniform(0.011, 0.015);
  a.tissue = r.uniform(0.85, 0.95);
  a.air = r.uniform(0.50, 0.60);
  a.bone = r.uniform(0.14, 0.2);
  a.vessel_amp = r.uniform(0.08, 0.12);
  a.hilum_v = r.uniform(0.42, 0.48);
  a.gastric = r.uniform() < 0.6;
  a.gastric_du = r.uniform(0.12, 0.2);
  a.gastric_r = r.uniform(0.02, 0.035);
  a.sex = r.uniform() < 0.5 ? 'F' : 'M';
  a.breast_amp = a.sex == 'F' ? r.uniform(0.0, 0.12) : 0.0;
  a.breast_du = r.uniform(0.18, 0.24);
  a.breast_dv = r.uniform(-0.06, 0.0);
  a.age = 20 + r.below(70);
  return a;
}

// Small differences between the images of one patient: inspiration, positioning.
void jitter_anatomy(Anatomy& a, Rng& r) {
  a.cx += 0.004 * r.normal();
  const double inspiration = 0.01 * r.normal();
  for (auto& l : a.lung) {
    l.v_cp += inspiration;
    l.dome_h *= 1.0 + 0.05 * r.normal();
    l.d_lat *= 1.0 + 0.01 * r.normal();
  }
  a.ctr += 0.006 * r.normal();
  a.ctr = a.cardiomegaly ? std::max(0.565, a.ctr) : std::min(0.495, a.ctr);
  a.tissue *= 1.0 + 0.03 * r.normal();
  a.air *= 1.0 + 0.04 * r.normal();
}

// ---- Drawing helpers. Pixel (x, y) covers u in [x/S, (x+1)/S); its centre is u = (x+0.5)/S.

constexpr int kShift = 4;  // fixed-point bits for OpenCV polygon and line vertices

cv::Point fixed_pt(double x, double y) {
  return {static_cast<int>(std::lround(x * (1 << kShift))),
          static_cast<int>(std::lround(y * (1 << kShift)))};
}

std::vector<cv::Point> to_fixed(const std::vector<cv::Point2d>& uv, double s) {
  std::vector<cv::Point> pts;
  pts.reserve(uv.size());
  for (const auto& p : uv) pts.push_back(fixed_pt(p.x * s - 0.5, p.y * s - 0.5));
  return pts;
}

void fill_polygon(cv::Mat& mask, const std::vector<cv::Point2d>& uv, double s) {
  const std::vector<cv::Point> pts = to_fixed(uv, s);
  const cv::Point* ptr = pts.data();
  const int n = static_cast<int>(pts.size());
  cv::fillPoly(mask, &ptr, &n, 1, cv::Scalar(255), cv::LINE_8, kShift);
}

// Diaphragm dome under a lung, (distance from the midline, v) from the costophrenic angle to the
// medial edge: rises steeply from the angle, flat over the top.
void add_diaphragm(const LungGeom& l, std::vector<cv::Point2d>* dv) {
  constexpr int kDome = 24;
  const double d_cp = l.d_lat - 0.01;
  const double d_end = l.d_med + 0.02;
  for (int i = 1; i <= kDome; ++i) {
    const double t = static_cast<double>(i) / kDome;
    dv->emplace_back(d_cp + t * (d_end - d_cp),
                     l.v_cp - l.dome_h * std::sin(0.5 * kPi * std::min(t / 0.6, 1.0)));
  }
}

// Lung outline in (u, v): rounded apex, lateral wall widening towards the base, diaphragm dome
// rising steeply from a sharp costophrenic angle, straight medial edge.
std::vector<cv::Point2d> lung_outline(const Anatomy& a, int k) {
  const LungGeom& l = a.lung[k];
  const double height = l.v_cp - l.v_top;
  const double d_upper = l.d_med + 0.88 * (l.d_lat - l.d_med);  // lateral edge at mid height
  const double d0 = l.d_med + 0.4 * (d_upper - l.d_med);        // apex sits medially
  const double a_med = d0 - l.d_med, a_lat = d_upper - d0;
  const double v_mid = l.v_top + 0.45 * height;
  const double b = v_mid - l.v_top;
  const double e = 2.0 / l.sexp;
  std::vector<cv::Point2d> dv;
  constexpr int kArc = 48, kWall = 20;
  for (int i = 0; i <= kArc; ++i) {
    const double th = kPi * (1.0 - static_cast<double>(i) / kArc);
    const double c = std::cos(th), sn = std::sin(th);
    const double d = d0 + (c < 0 ? -a_med : a_lat) * std::pow(std::abs(c), e);
    dv.emplace_back(d, v_mid - b * std::pow(std::abs(sn), e));
  }
  for (int i = 1; i <= kWall; ++i) {
    const double t = static_cast<double>(i) / kWall;
    const double bulge = std::sin(0.5 * kPi * std::min(1.0, t / 0.7));
    dv.emplace_back(d_upper + (l.d_lat - d_upper) * bulge - 0.01 * sq(std::max(0.0, t - 0.7) / 0.3),
                    v_mid + t * (l.v_cp - v_mid));
  }
  add_diaphragm(l, &dv);
  const double s = side_sign(k);
  for (auto& p : dv) p.x = a.cx + s * p.x;
  return dv;
}

// Heart: hangs from the mediastinum below the aortic knob; each border bulges out to its widest
// point low in the chest (left ventricle to the image right) and narrows again below the dome.
// The widest horizontal extent is exactly ctr * thorax width, returned in *width.
std::vector<cv::Point2d> heart_outline(const Anatomy& a, double* width) {
  const double thorax = a.lung[0].d_lat + a.lung[1].d_lat;
  *width = a.ctr * thorax;
  const double w_right = a.heart_rfrac * *width, w_left = *width - w_right;
  const double v_top = a.knob_v + 0.04;
  const double v_bot = a.lung[1].v_cp - 0.5 * a.lung[1].dome_h;
  const auto profile = [](double t, double peak, double start) {
    const double g =
        t < peak ? std::sin(0.5 * kPi * t / peak) : 1.0 - 0.5 * sq((t - peak) / (1 - peak));
    return start + (1.0 - start) * g;
  };
  std::vector<cv::Point2d> pts;
  constexpr int kN = 40;
  for (int i = 0; i <= kN; ++i) {  // left border (image right), top to bottom
    const double t = static_cast<double>(i) / kN;
    pts.emplace_back(a.cx + w_left * profile(t, a.heart_peak_l, a.lung[1].d_med / w_left),
                     v_top + t * (v_bot - v_top));
  }
  for (int i = kN; i >= 0; --i) {  // right border (image left), bottom to top
    const double t = static_cast<double>(i) / kN;
    pts.emplace_back(
        a.cx - w_right * profile(t, a.heart_peak_r, std::min(0.9, a.lung[0].d_med / w_right)),
        v_top + t * (v_bot - v_top));
  }
  return pts;
}

// Adds a curved bony band (rib, clavicle) to D. `center(d)` gives its centre row v at distance d
// from the midline on side k; rendered column by column with a brighter cortical rim.
template <class F>
void draw_band(cv::Mat1f& dens, double cx, int k, double d0, double d1, F center, double half,
               double amp, double fade_in, double fade_out) {
  const int size = dens.rows;
  const double s = size, sgn = side_sign(k);
  const double xa = (cx + sgn * d0) * s - 0.5, xb = (cx + sgn * d1) * s - 0.5;
  const int x0 = std::max(0, static_cast<int>(std::floor(std::min(xa, xb))));
  const int x1 = std::min(size - 1, static_cast<int>(std::ceil(std::max(xa, xb))));
  for (int x = x0; x <= x1; ++x) {
    const double d = sgn * ((x + 0.5) / s - cx);
    if (d < d0 || d > d1) continue;
    const double fade = smoothstep(d0, d0 + fade_in, d) * (1.0 - smoothstep(d1 - fade_out, d1, d));
    const double vc = center(d);
    const double slope = (center(d + 1e-3) - center(d - 1e-3)) / 2e-3;
    const double hp = std::max(0.75, half * std::sqrt(1.0 + slope * slope) * s);  // vertical
    const double yc = vc * s - 0.5;
    const int y0 = std::max(0, static_cast<int>(std::floor(yc - hp - 1)));
    const int y1 = std::min(size - 1, static_cast<int>(std::ceil(yc + hp + 1)));
    for (int y = y0; y <= y1; ++y) {
      const double r = std::abs(y - yc) / hp;
      const double cover = clamp01((1.0 - r) * hp + 0.5);
      if (cover <= 0.0) continue;
      const double rim = std::min(r, 1.0);
      dens(y, x) += static_cast<float>(amp * fade * cover * (0.55 + 0.45 * sq(sq(rim))));
    }
  }
}

// Branching vessel tree (lung markings) from a hilum, drawn into V (pixel units).
void draw_vessel(cv::Mat1f& v, Rng& r, cv::Point2d p, double angle, double len, double thick,
                 double val, int depth) {
  const cv::Point2d q(p.x + len * std::cos(angle), p.y + len * std::sin(angle));
  cv::line(v, fixed_pt(p.x, p.y), fixed_pt(q.x, q.y), cv::Scalar(val),
           std::max(1, static_cast<int>(std::lround(thick))), cv::LINE_8, kShift);
  if (depth == 0) return;
  for (int c = 0; c < 2; ++c) {
    const double turn = (c == 0 ? -1.0 : 1.0) * r.uniform(0.2, 0.55);
    draw_vessel(v, r, q, angle + turn + 0.12 * r.normal(), len * r.uniform(0.65, 0.85),
                thick * 0.72, val * 0.85, depth - 1);
  }
}

cv::Mat1f to_float(const cv::Mat& mask8) {
  cv::Mat1f f;
  mask8.convertTo(f, CV_32F, 1.0 / 255.0);
  return f;
}

cv::Mat1f blurred(const cv::Mat1f& m, double sigma) {
  cv::Mat1f out;
  cv::GaussianBlur(m, out, cv::Size(0, 0), sigma, sigma, cv::BORDER_REPLICATE);
  return out;
}

// Smooth random field: coarse normal grid, cubic upsampling.
cv::Mat1f smooth_noise(Rng& r, int size, int cells) {
  cv::Mat1f grid(cells + 3, cells + 3);
  for (int y = 0; y < grid.rows; ++y)
    for (int x = 0; x < grid.cols; ++x) grid(y, x) = static_cast<float>(r.normal());
  cv::Mat1f big;
  cv::resize(grid, big, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
  return big;
}

// Rejection-samples a disc of radius `rad` (pixels) inside `allowed` (CV_8U). False if none.
bool sample_disc(Rng& r, const cv::Mat& allowed, double rad, cv::Point2d* centre) {
  const cv::Rect box = cv::boundingRect(allowed);
  if (box.empty()) return false;
  for (int attempt = 0; attempt < 400; ++attempt) {
    const cv::Point2d c(r.uniform(box.x, box.x + box.width), r.uniform(box.y, box.y + box.height));
    bool inside = true;
    for (int i = 0; i <= 16 && inside; ++i) {
      const double ang = 2.0 * kPi * i / 16;
      const double rr = i == 16 ? 0.0 : rad + 1.5;
      const int x = static_cast<int>(std::lround(c.x + rr * std::cos(ang)));
      const int y = static_cast<int>(std::lround(c.y + rr * std::sin(ang)));
      inside = x >= 0 && y >= 0 && x < allowed.cols && y < allowed.rows &&
               allowed.at<uint8_t>(y, x) != 0;
    }
    if (inside) {
      *centre = c;
      return true;
    }
  }
  return false;
}

std::string format_id(const char* prefix, int width, size_t n) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%0*zu", prefix, width, n);
  return buf;
}

SynthDicomVariant sample_dicom_variant(uint64_t seed, size_t index) {
  Rng r(stream_seed(seed, kDicomStream, index));
  SynthDicomVariant v;
  const int bits[3] = {12, 14, 16};
  v.bits_stored = bits[r.below(3)];
  v.monochrome1 = r.uniform() < 0.25;
  v.has_rescale = r.uniform() < 0.3;
  const double slopes[4] = {0.5, 1.0, 2.0, 0.25};
  const double intercepts[4] = {-1024.0, -512.0, 100.0, 0.0};
  const int si = r.below(4);
  const int ii = r.below(4);
  if (v.has_rescale) {
    v.rescale_slope = slopes[si];
    v.rescale_intercept = intercepts[ii];
    if (v.rescale_slope == 1.0 && v.rescale_intercept == 0.0) v.rescale_intercept = -1024.0;
  }
  v.has_window = r.uniform() < 0.5;
  return v;
}

// Soft-tissue density of the body: neck widening into rounded shoulders, slightly narrower
// waist, thicker in the middle. *coverage gets the body's anti-aliased 0..1 mask.
cv::Mat1f body_density(const Anatomy& a, int size, cv::Mat1f* coverage) {
  const double s = size;
  cv::Mat1f dens(size, size);
  coverage->create(size, size);
  for (int y = 0; y < size; ++y) {
    const double v = (y + 0.5) / s;
    const double hw =
        a.neck_hw +
        (a.body_hw - a.neck_hw) * smoothstep(a.shoulder_v - 0.03, a.shoulder_v + 0.16, v) -
        0.03 * smoothstep(0.6, 1.0, v);
    float* dp = dens.ptr<float>(y);
    float* bp = coverage->ptr<float>(y);
    for (int x = 0; x < size; ++x) {
      const double du = std::abs((x + 0.5) / s - a.cx);
      const double t = std::max(0.0, 1.0 - sq(du / hw));
      bp[x] = static_cast<float>(clamp01((hw - du) * s + 0.5));
      dp[x] = static_cast<float>(a.tissue * (0.3 + 0.7 * std::sqrt(t)) * bp[x]);
    }
  }
  return dens;
}

// Lung markings: a branching vessel tree from each hilum. Seeded per patient, so follow-up
// images show the same markings.
cv::Mat1f draw_vessels(const Anatomy& a, uint64_t seed, uint32_t patient, int size) {
  const double s = size;
  cv::Mat1f vessels = cv::Mat1f::zeros(size, size);
  for (int k = 0; k < 2; ++k) {
    Rng vr(stream_seed(seed, kVesselStream, patient * 2ULL + k));
    const LungGeom& l = a.lung[k];
    const double sgn = side_sign(k);
    const cv::Point2d hilum((a.cx + sgn * (l.d_med + 0.05)) * s - 0.5, a.hilum_v * s - 0.5);
    for (int j = 0; j < 7; ++j) {
      const double th = (-105.0 + 35.0 * j) * kPi / 180.0 + 0.15 * vr.normal();
      const double ang = std::atan2(std::sin(th), sgn * std::cos(th));
      draw_vessel(vessels, vr, hilum, ang, vr.uniform(0.05, 0.07) * s, 0.01 * s, 1.0, 5);
    }
  }
  const double sigma = 0.6 * s / 256.0;
  cv::GaussianBlur(vessels, vessels, cv::Size(0, 0), sigma, sigma, cv::BORDER_REPLICATE);
  return vessels;
}

// Spine: vertebral bodies with a brighter cortical rim and darker disc spaces.
void draw_spine(cv::Mat1f& bones, const Anatomy& a) {
  const int size = bones.rows;
  const double s = size;
  for (int y = 0; y < size; ++y) {
    const double v = (y + 0.5) / s;
    const double disc =
        std::pow(0.5 + 0.5 * std::cos(2 * kPi * (v / a.vert_period + a.vert_phase)), 8);
    for (int x = 0; x < size; ++x) {
      const double du = std::abs((x + 0.5) / s - a.cx);
      const double sp = clamp01((a.spine_hw - du) * s + 0.5);
      if (sp > 0.0) {
        const double rim = std::pow(std::min(1.0, du / a.spine_hw), 4);
        bones(y, x) +=
            static_cast<float>(0.7 * a.bone * sp * (0.8 + 0.4 * rim) * (1.0 - 0.35 * disc));
      }
    }
  }
}

// Ten ribs on side k: bright posterior arcs, each continued by a faint anterior part.
void draw_ribs(cv::Mat1f& bones, const Anatomy& a, int k) {
  const double d_end = a.lung[k].d_lat + 0.04;
  for (int i = 0; i < 10; ++i) {
    const double v0 = a.rib_v0 + i * a.rib_dv;
    const double beta = a.rib_beta * (1.0 + 0.04 * i);
    const auto post = [&](double d) {
      return v0 - a.rib_alpha * (d - 0.03) + beta * sq(d - 0.03);
    };
    draw_band(bones, a.cx, k, 0.035, d_end, post, a.rib_half, a.bone, 0.03, 0.02);
    const double v_lat = post(a.lung[k].d_lat);
    const double dl = a.lung[k].d_lat;
    const auto ant = [&](double d) { return v_lat + a.ant_slope * (dl - d) - 0.3 * sq(dl - d); };
    draw_band(bones, a.cx, k, 0.1, dl + 0.01, ant, a.rib_half * 0.9, 0.35 * a.bone, 0.06, 0.03);
  }
}

void draw_clavicle(cv::Mat1f& bones, const Anatomy& a, int k) {
  const auto clav = [&](double d) {
    const double t = (d - 0.02) / (a.clav_d_lat - 0.02);
    return a.clav_v_med + (a.clav_v_lat - a.clav_v_med) * t + 0.012 * std::sin(2 * kPi * t);
  };
  draw_band(bones, a.cx, k, 0.02, a.clav_d_lat, clav, a.clav_half, 1.2 * a.bone, 0.01, 0.02);
}

// Bone layer. Spine, then per side ribs before clavicle: the order the float densities add up in.
cv::Mat1f draw_bones(const Anatomy& a, int size) {
  cv::Mat1f bones = cv::Mat1f::zeros(size, size);
  draw_spine(bones, a);
  for (int k = 0; k < 2; ++k) {
    draw_ribs(bones, a, k);
    draw_clavicle(bones, a, k);
  }
  return bones;
}

// ---- One image. Steps draw from their own streams, except those given `ir`, the image stream:
// their call order fixes the output bytes.

SynthSample new_sample(const Plan& plan, size_t index) {
  SynthSample out;
  out.index = index;
  out.id = format_id("synth_", 6, index);
  out.patient = plan.patient[index];
  out.patient_id = format_id("P", 5, out.patient);
  out.visit = plan.visit[index];
  out.split = plan.split[out.patient];
  return out;
}

// PA or AP; AP projects the clavicles higher.
std::string sample_view(Anatomy& a, Rng& ir) {
  std::string view = ir.uniform() < 0.8 ? "PA" : "AP";
  if (view == "AP") {
    a.clav_v_med -= 0.03;
    a.clav_v_lat -= 0.03;
  }
  return view;
}

using Findings = std::array<bool, kSynthFindings>;

// One uniform per finding, always drawn, so prevalences act independently; cardiomegaly is the
// patient's.
Findings sample_findings(const SynthOptions& o, size_t index, const Anatomy& a) {
  Findings want{};
  Rng fr(stream_seed(o.seed, kFindingStream, index));
  for (int f = 0; f < kSynthFindings; ++f) want[f] = fr.uniform() < o.prevalence[f];
  want[kCardiomegaly] = a.cardiomegaly;
  return want;
}

Rng finding_rng(const SynthOptions& o, int finding, size_t index) {
  return Rng(stream_seed(o.seed, kFindingGeomStream + static_cast<uint64_t>(finding), index));
}

cv::Mat blank(int size) { return cv::Mat::zeros(size, size, CV_8U); }

// Binary geometry of an image before rotation (CV_8U 0/255).
struct Thorax {
  std::vector<cv::Point2d> outline[2];  // lung outlines in (u, v)
  cv::Mat lung_poly[2];                 // lung fields
  cv::Mat heart;
  cv::Mat medi;           // mediastinum outside the lungs: heart plus aortic knob
  cv::Mat fluid;          // pleural effusion
  cv::Mat lungs_side[2];  // aerated lung per side
  cv::Mat lungs;          // both sides
};

void draw_lungs(const Anatomy& a, int size, Thorax* t) {
  for (int k = 0; k < 2; ++k) {
    t->outline[k] = lung_outline(a, k);
    t->lung_poly[k] = blank(size);
    fill_polygon(t->lung_poly[k], t->outline[k], size);
  }
}

// Heart and mediastinum (the aortic knob sits above the heart on the patient's left); records
// the cardiothoracic ratio.
void draw_heart(const Anatomy& a, int size, Thorax* t, SynthParams* params) {
  const double s = size;
  double heart_w = 0.0;
  t->heart = blank(size);
  fill_polygon(t->heart, heart_outline(a, &heart_w), s);
  t->medi = t->heart.clone();
  cv::circle(t->medi,
             fixed_pt((a.cx + a.lung[1].d_med + 0.02 - a.knob_r) * s - 0.5, a.knob_v * s - 0.5),
             static_cast<int>(std::lround(a.knob_r * s * (1 << kShift))), cv::Scalar(255),
             cv::FILLED, cv::LINE_8, kShift);
  params->ctr = heart_w / (a.lung[0].d_lat + a.lung[1].d_lat);
  params->heart_width_px = heart_w * s;
  params->thorax_width_px = (a.lung[0].d_lat + a.lung[1].d_lat) * s;
}

// Fluid in lung k below `level`, its meniscus climbing `men` up the lateral wall.
void fill_effusion(const Anatomy& a, int k, double level, double men, Thorax* t) {
  const int size = t->fluid.rows;
  const double s = size;
  const LungGeom& l = a.lung[k];
  const int y0 = std::max(0, static_cast<int>((level - men - 0.01) * s));
  for (int y = y0; y < size; ++y) {
    const double v = (y + 0.5) / s;
    const uint8_t* lp = t->lung_poly[k].ptr<uint8_t>(y);
    const uint8_t* mp = t->medi.ptr<uint8_t>(y);
    uint8_t* fp = t->fluid.ptr<uint8_t>(y);
    for (int x = 0; x < size; ++x) {
      if (!lp[x] || mp[x]) continue;
      const double d = side_sign(k) * ((x + 0.5) / s - a.cx);
      const double tl = clamp01((d - l.d_med) / (l.d_lat - l.d_med));
      if (v > level - men * tl * tl) fp[x] = 255;
    }
  }
}

// Effusion: fluid fills the base of one lung (a quarter of the time both).
// `c` (SynthOptions::conspicuity, >= 1) enlarges and darkens the findings below; 1 leaves them
// (and the random streams) exactly as drawn.
void draw_effusion(const Anatomy& a, Rng r, Thorax* t, SynthParams* params, double c) {
  const int first = r.below(2);
  const bool both = r.uniform() < 0.25;
  for (int k = 0; k < 2; ++k) {
    const double h = std::min(0.3, c * r.uniform(0.035, 0.12)), men = r.uniform(0.03, 0.07);
    if (k != first && !both) continue;
    fill_effusion(a, k, a.lung[k].v_cp - h, men, t);
    if (cv::countNonZero(t->fluid & t->lung_poly[k]) > 0) params->effusion_sides |= 1 << k;
  }
}

// Aerated lung: the lung fields less mediastinum and fluid.
void aerate(Thorax* t) {
  for (int k = 0; k < 2; ++k) t->lungs_side[k] = t->lung_poly[k] & ~t->medi & ~t->fluid;
  t->lungs = t->lungs_side[0] | t->lungs_side[1];
}

struct Pneumothorax {
  cv::Mat mask;      // the airy rim
  cv::Mat1f pleura;  // visceral pleural line
  double dark = 0.0, pleura_amp = 0.0;
};

// Pneumothorax: the lung collapses towards its medial base, leaving an airy rim without
// markings along apex and lateral wall, bounded by a thin visceral pleural line.
void draw_pneumothorax(const Anatomy& a, const Thorax& t, Rng r, Pneumothorax* ptx,
                       SynthParams* params, double conspicuity) {
  const double cs = conspicuity;
  const int size = t.lungs.rows;
  const double s = size;
  const int k = r.below(2);
  const double f = std::max(0.35, 1.0 - cs * (1.0 - r.uniform(0.6, 0.85)));
  ptx->dark = cs * r.uniform(0.04, 0.07);
  ptx->pleura_amp = r.uniform(0.5, 0.8);
  const LungGeom& l = a.lung[k];
  const cv::Point2d c(a.cx + side_sign(k) * (l.d_med + 0.15 * (l.d_lat - l.d_med)),
                      l.v_cp - 0.9 * l.dome_h);
  std::vector<cv::Point2d> inner = t.outline[k];
  for (auto& p : inner) p = c + f * (p - c);
  cv::Mat collapsed = blank(size);
  fill_polygon(collapsed, inner, s);
  ptx->mask = t.lungs_side[k] & ~collapsed;
  const std::vector<cv::Point> pts = to_fixed(inner, s);
  cv::polylines(ptx->pleura, pts, true, cv::Scalar(1.0), 1, cv::LINE_8, kShift);
  ptx->pleura.setTo(0.0, ~t.lungs_side[k] | ptx->mask);  // keep the line on the lung side only
  if (cv::countNonZero(ptx->mask) > 0) params->pneumothorax_side = k;
}

struct Consolidation {
  cv::Mat mask;
  cv::Mat1f field;  // blob field; the mask is where it exceeds 0.5
  double amp = 0.0;
};

// 3-7 Gaussian blobs scattered around c (pixels), summed into field.
void blob_field(Rng& r, cv::Point2d c, cv::Mat1f& field, double radius_scale = 1.0) {
  const int size = field.rows;
  const double s = size;
  const int nblob = 3 + r.below(5);
  std::vector<cv::Point3d> blobs;  // x, y, radius (pixels)
  for (int b = 0; b < nblob; ++b) {
    // One draw per statement: argument order is unspecified in C++. This is the order GCC used
    // (right to left), which the published seeds' files were made with.
    const double radius = radius_scale * r.uniform(0.025, 0.06) * s;
    const double dy = r.normal(), dx = r.normal();
    blobs.emplace_back(c.x + 0.04 * s * dx, c.y + 0.04 * s * dy, radius);
  }
  field.setTo(0.0);
  for (const auto& b : blobs) {
    const int x0 = std::max(0, static_cast<int>(b.x - 3 * b.z));
    const int x1 = std::min(size - 1, static_cast<int>(b.x + 3 * b.z));
    const int y0 = std::max(0, static_cast<int>(b.y - 3 * b.z));
    const int y1 = std::min(size - 1, static_cast<int>(b.y + 3 * b.z));
    const double inv = 1.0 / (2.0 * b.z * b.z);
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x)
        field(y, x) += static_cast<float>(std::exp(-(sq(x - b.x) + sq(y - b.y)) * inv));
  }
}

// Consolidation: cluster of blurred blobs with a patchy texture, clipped to one lung (tried on
// alternate sides until one is large enough).
void draw_consolidation(const Thorax& t, const cv::Mat& ptx, Rng r, Consolidation* cons,
                        SynthParams* params, double c) {
  const int size = t.lungs.rows;
  const double s = size;
  const cv::Mat1f patch = smooth_noise(r, size, 12);
  cons->amp = std::min(1.0, c * r.uniform(0.25, 0.45));
  const int k0 = r.below(2);
  for (int attempt = 0; attempt < 8 && cv::countNonZero(cons->mask) == 0; ++attempt) {
    const int k = (k0 + attempt) % 2;
    const cv::Mat allowed = t.lungs_side[k] & ~ptx;
    cv::Point2d centre;
    if (!sample_disc(r, allowed, 0.02 * s, &centre)) continue;
    blob_field(r, centre, cons->field, std::sqrt(c));
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x)
        cons->field(y, x) *= static_cast<float>(0.75 + 0.25 * patch(y, x));
    cons->mask = (cons->field > 0.5) & allowed;
    if (cv::countNonZero(cons->mask) < static_cast<int>(2e-3 * s * s))
      cons->mask.setTo(0);
    else
      params->consolidation_side = k;
  }
}

struct Nodule {
  cv::Point2d c;  // pixels, before rotation
  double r = 0.0, amp = 0.0;  // r = 0: none
};

// Nodule: round opacity fully inside aerated lung; none when it fits nowhere.
Nodule place_nodule(const Thorax& t, const cv::Mat& ptx, Rng r, double c) {
  const double s = t.lungs.rows;
  Nodule n;
  const double rad = c * r.uniform(0.015, 0.04) * s;
  n.amp = std::min(0.5, c * r.uniform(0.09, 0.2));
  if (sample_disc(r, t.lungs & ~ptx, rad, &n.c)) n.r = rad;
  return n;
}

// Anti-aliased layers the density passes read.
struct SoftLayers {
  cv::Mat1f air;    // aerated lung, partial-volume edge
  cv::Mat1f deep;   // thicker air column in the lung's middle
  cv::Mat1f fluid;  // effusion
  cv::Mat1f ptx;    // pneumothorax
};

SoftLayers soften(const Thorax& t, const cv::Mat& ptx, double px) {
  const int size = t.lungs.rows;
  const double s = size;
  SoftLayers l;
  const cv::Mat1f lung_f = to_float(t.lungs);
  l.air = blurred(lung_f, 1.1 * px);
  cv::Mat1f small;
  cv::resize(lung_f, small, cv::Size(size / 4, size / 4), 0, 0, cv::INTER_AREA);
  cv::GaussianBlur(small, small, cv::Size(0, 0), 0.03 * s / 4, 0.03 * s / 4, cv::BORDER_CONSTANT);
  cv::resize(small, l.deep, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
  l.fluid = blurred(to_float(t.fluid), 2.5 * px);
  l.ptx = blurred(to_float(ptx), 0.8 * px);
  return l;
}

// Lung markings: parenchymal texture (per image) and vessel trees (per patient).
struct Markings {
  cv::Mat1f texture, vessels;
  double texture_amp = 0.0;
};

Markings lung_markings(const Anatomy& a, const SynthOptions& o, uint32_t patient, size_t index) {
  Markings m;
  Rng tr(stream_seed(o.seed, kTextureStream, index));
  m.texture = smooth_noise(tr, o.size, 20);
  m.texture_amp = tr.uniform(0.015, 0.03);
  m.vessels = draw_vessels(a, o.seed, patient, o.size);
  return m;
}

// Lung air with its markings, pneumothorax darkening, effusion and heart. One pass summing in
// double: separate float passes would round differently.
void add_lungs(cv::Mat1f& dens, const Anatomy& a, const SoftLayers& l, const Markings& m,
               double ptx_dark, const cv::Mat& heart) {
  for (int y = 0; y < dens.rows; ++y) {
    float* dp = dens.ptr<float>(y);
    for (int x = 0; x < dens.cols; ++x) {
      const double aer = l.air(y, x) * (1.0 - l.fluid(y, x));
      const double no_ptx = 1.0 - l.ptx(y, x);
      double d = dp[x];
      d -= a.air * aer * (0.6 + 0.4 * std::min(1.0f, l.deep(y, x) * 1.4f));
      d += aer * no_ptx * (a.vessel_amp * m.vessels(y, x) + m.texture_amp * m.texture(y, x));
      d -= ptx_dark * l.ptx(y, x);
      d += 0.05 * l.fluid(y, x) * l.air(y, x);
      d += 0.05 * heart.at<uint8_t>(y, x) / 255.0;
      dp[x] = static_cast<float>(d);
    }
  }
}

void add_pleural_line(cv::Mat1f& dens, const Anatomy& a, const Pneumothorax& ptx, double px) {
  if (ptx.pleura_amp > 0.0) dens += ptx.pleura_amp * a.bone * blurred(ptx.pleura, 0.5 * px);
}

void add_consolidation(cv::Mat1f& dens, const Anatomy& a, const Consolidation& c,
                       const cv::Mat1f& air_soft) {
  if (!(c.amp > 0.0)) return;
  for (int y = 0; y < dens.rows; ++y)
    for (int x = 0; x < dens.cols; ++x)
      dens(y, x) += static_cast<float>(c.amp * a.air * smoothstep(0.3, 0.7, c.field(y, x)) *
                                       air_soft(y, x));
}

void add_nodule(cv::Mat1f& dens, const Nodule& n) {
  if (!(n.r > 0.0)) return;
  const int size = dens.rows;
  const int x0 = std::max(0, static_cast<int>(n.c.x - n.r - 2));
  const int x1 = std::min(size - 1, static_cast<int>(n.c.x + n.r + 2));
  const int y0 = std::max(0, static_cast<int>(n.c.y - n.r - 2));
  const int y1 = std::min(size - 1, static_cast<int>(n.c.y + n.r + 2));
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x) {
      const double rho = std::hypot(x - n.c.x, y - n.c.y);
      const double cover = clamp01(n.r - rho + 0.5);
      const double prof = std::sqrt(std::max(0.0, 1.0 - sq(std::min(rho, n.r) / n.r)));
      dens(y, x) += static_cast<float>(n.amp * cover * (0.35 + 0.65 * prof));
    }
}

// Breast shadows: rounded soft-tissue densities over both lung bases.
void add_breasts(cv::Mat1f& dens, const Anatomy& a, const cv::Mat1f& body) {
  if (!(a.breast_amp > 0.0)) return;
  const int size = dens.rows;
  const double s = size;
  for (int k = 0; k < 2; ++k) {
    const double bu = a.cx + side_sign(k) * a.breast_du;
    const double bv = a.lung[k].v_cp + a.breast_dv;
    const int y0 = std::max(0, static_cast<int>((bv - 0.13) * s));
    const int y1 = std::min(size - 1, static_cast<int>((bv + 0.13) * s));
    const int x0 = std::max(0, static_cast<int>((bu - 0.17) * s));
    const int x1 = std::min(size - 1, static_cast<int>((bu + 0.17) * s));
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) {
        const double rr = std::hypot(((x + 0.5) / s - bu) / 0.16, ((y + 0.5) / s - bv) / 0.11);
        if (rr < 1.0)
          dens(y, x) +=
              static_cast<float>(a.breast_amp * body(y, x) * (1.0 - smoothstep(0.75, 1.0, rr)));
      }
  }
}

// Trachea: air column down to the carina.
void add_trachea(cv::Mat1f& dens, const Anatomy& a) {
  const int size = dens.rows;
  const double s = size;
  for (int y = 0; y < size; ++y) {
    const double v = (y + 0.5) / s;
    if (v >= a.carina_v) break;
    const double trach = 1.0 - smoothstep(a.carina_v - 0.04, a.carina_v, v);
    for (int x = 0; x < size; ++x) {
      const double du = std::abs((x + 0.5) / s - a.cx);
      dens(y, x) -= static_cast<float>(0.12 * trach * clamp01((a.trachea_hw - du) * s + 0.5));
    }
  }
}

// Gastric bubble under the left hemidiaphragm (image right), hidden where the lung overlaps.
void add_gastric_bubble(cv::Mat1f& dens, const Anatomy& a, const cv::Mat& left_lung) {
  if (!a.gastric) return;
  const int size = dens.rows;
  const double s = size;
  const double gu = a.cx + a.gastric_du;
  const double gv = a.lung[1].v_cp - a.lung[1].dome_h + 0.03 + a.gastric_r;
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      const double rr = std::hypot(((x + 0.5) / s - gu) / 1.4, (y + 0.5) / s - gv) * s;
      dens(y, x) -= static_cast<float>(0.2 * clamp01(a.gastric_r * s - rr + 0.5) *
                                       (1.0 - left_lung.at<uint8_t>(y, x) / 255.0));
    }
}

// Exposure: attenuation to display brightness with random contrast, gamma and window.
void expose(cv::Mat1f& dens, Rng& ir) {
  const double k_exp = ir.uniform(1.3, 2.0);
  const double gamma = std::exp(0.12 * ir.normal());
  const double lo = ir.uniform(0.0, 0.06), hi = ir.uniform(0.9, 1.0);
  const double norm = 1.0 / (1.0 - std::exp(-k_exp * 1.25));
  for (int y = 0; y < dens.rows; ++y) {
    float* dp = dens.ptr<float>(y);
    for (int x = 0; x < dens.cols; ++x) {
      const double y0 = clamp01((1.0 - std::exp(-k_exp * std::max(0.0f, dp[x]))) * norm);
      dp[x] = static_cast<float>(lo + (hi - lo) * std::pow(y0, gamma));
    }
  }
}

// Patient positioning: rotation about the image centre and a shift.
struct Positioning {
  double rot = 0.0;  // degrees
  cv::Point2d shift;
  cv::Matx23d warp;
};

Positioning sample_positioning(Rng& ir, int size) {
  const double s = size;
  Positioning p;
  const double rot = 2.5 * ir.normal();
  const double dy = ir.normal(), dx = ir.normal();  // one draw each, GCC's former order
  const cv::Point2d shift(0.015 * s * dx, 0.015 * s * dy);
  const double cr = std::cos(rot * kPi / 180.0), sr = std::sin(rot * kPi / 180.0);
  const double ctr_px = 0.5 * s - 0.5;
  p.rot = rot;
  p.shift = shift;
  p.warp = cv::Matx23d(cr, -sr, ctr_px - cr * ctr_px + sr * ctr_px + shift.x,  //
                       sr, cr, ctr_px - sr * ctr_px - cr * ctr_px + shift.y);
  return p;
}

cv::Mat warp_mask(const cv::Mat& m, const cv::Matx23d& warp) {
  cv::Mat w;
  cv::warpAffine(m, w, warp, m.size(), cv::INTER_NEAREST, cv::BORDER_CONSTANT, cv::Scalar(0));
  return w;
}

// Detector blur; returns its sigma.
double detector_blur(cv::Mat1f& img, Rng& ir, double px) {
  const double blur = ir.uniform(0.4, 1.0) * px;
  cv::GaussianBlur(img, img, cv::Size(0, 0), blur, blur, cv::BORDER_REPLICATE);
  return blur;
}

// Signal-dependent detector noise, clipped to [0, 1]; returns its sigma.
double add_noise(cv::Mat1f& img, Rng& ir, Rng nr) {
  const double noise = ir.uniform(0.006, 0.02);
  for (int y = 0; y < img.rows; ++y) {
    float* ip = img.ptr<float>(y);
    for (int x = 0; x < img.cols; ++x) {
      const double val =
          ip[x] + noise * (0.6 + 0.6 * std::sqrt(std::max(0.0f, ip[x]))) * nr.normal();
      ip[x] = static_cast<float>(clamp01(val));
    }
  }
  return noise;
}

// Labels from what the final (warped) masks show.
void set_labels(const Anatomy& a, SynthSample* out) {
  out->labels[kCardiomegaly] = a.cardiomegaly;
  out->labels[kEffusion] = out->params.effusion_sides != 0;
  out->labels[kPneumothorax] = cv::countNonZero(out->pneumothorax) > 0;
  out->labels[kConsolidation] = cv::countNonZero(out->consolidation) > 0;
  if (!out->labels[kPneumothorax]) out->params.pneumothorax_side = -1;
  if (!out->labels[kConsolidation]) out->params.consolidation_side = -1;
}

// The nodule's box and label in the final image.
void set_nodule(const Nodule& n, const cv::Matx23d& warp, int size, SynthSample* out) {
  const cv::Point2d c(warp(0, 0) * n.c.x + warp(0, 1) * n.c.y + warp(0, 2),
                      warp(1, 0) * n.c.x + warp(1, 1) * n.c.y + warp(1, 2));
  // Box in pixel-edge coordinates (pixel j spans [j, j+1)): the disc's extent, rounded.
  const int side = static_cast<int>(std::lround(2.0 * n.r));
  const cv::Rect box(static_cast<int>(std::lround(c.x + 0.5 - n.r)),
                     static_cast<int>(std::lround(c.y + 0.5 - n.r)), side, side);
  out->nodule_box = box & cv::Rect(0, 0, size, size);
  out->labels[kNodule] = !out->nodule_box.empty();
  out->params.nodule_center = c;
  out->params.nodule_radius = n.r;
}

// Renders one image. `plan` gives its patient.
SynthSample render(const SynthOptions& o, const Plan& plan, size_t index) {
  const int size = o.size;
  const double s = size;
  const double px = s / 256.0;  // pixel-sized effects scale with the image
  SynthSample out = new_sample(plan, index);
  const uint32_t patient = plan.patient[index];
  Anatomy a = sample_patient(o, patient);
  out.sex = std::string(1, a.sex);
  out.age = a.age;
  Rng ir(stream_seed(o.seed, kImageStream, index));
  jitter_anatomy(a, ir);
  out.view = sample_view(a, ir);
  const Findings want = sample_findings(o, index, a);

  // Binary geometry, before rotation.
  Thorax t;
  draw_lungs(a, size, &t);
  draw_heart(a, size, &t, &out.params);
  t.fluid = blank(size);
  const double c = o.conspicuity;
  if (want[kEffusion]) draw_effusion(a, finding_rng(o, kEffusion, index), &t, &out.params, c);
  aerate(&t);
  Pneumothorax ptx{blank(size), cv::Mat1f::zeros(size, size)};
  if (want[kPneumothorax])
    draw_pneumothorax(a, t, finding_rng(o, kPneumothorax, index), &ptx, &out.params, c);
  Consolidation cons{blank(size), cv::Mat1f::zeros(size, size)};
  if (want[kConsolidation])
    draw_consolidation(t, ptx.mask, finding_rng(o, kConsolidation, index), &cons, &out.params, c);
  Nodule nodule;
  if (want[kNodule]) nodule = place_nodule(t, ptx.mask, finding_rng(o, kNodule, index), c);

  // Density (attenuation-like, denser = larger).
  cv::Mat1f body;
  cv::Mat1f dens = body_density(a, size, &body);
  const SoftLayers soft = soften(t, ptx.mask, px);
  add_lungs(dens, a, soft, lung_markings(a, o, patient, index), ptx.dark, t.heart);
  add_pleural_line(dens, a, ptx, px);
  add_consolidation(dens, a, cons, soft.air);
  add_nodule(dens, nodule);
  add_breasts(dens, a, body);
  add_trachea(dens, a);
  add_gastric_bubble(dens, a, t.lung_poly[1]);
  const cv::Mat1f bones = draw_bones(a, size);
  dens += bones.mul(body);

  // Exposure, then positioning, detector blur and noise.
  expose(dens, ir);
  const Positioning pos = sample_positioning(ir, size);
  cv::Mat1f img;
  cv::warpAffine(dens, img, pos.warp, dens.size(), cv::INTER_LINEAR, cv::BORDER_REPLICATE);
  out.params.blur_sigma = detector_blur(img, ir, px);
  out.params.noise_sigma = add_noise(img, ir, Rng(stream_seed(o.seed, kNoiseStream, index)));

  out.image = img;
  out.lungs = warp_mask(t.lungs, pos.warp);
  out.heart = warp_mask(t.heart, pos.warp);
  out.pneumothorax = warp_mask(ptx.mask, pos.warp);
  out.consolidation = warp_mask(cons.mask, pos.warp);
  out.effusion = warp_mask(t.fluid & (t.lung_poly[0] | t.lung_poly[1]), pos.warp);
  set_labels(a, &out);
  if (nodule.r > 0.0) set_nodule(nodule, pos.warp, size, &out);
  out.params.rotation_deg = pos.rot;
  out.params.shift_px = pos.shift;
  out.dicom = sample_dicom_variant(o.seed, index);
  return out;
}

// ---- Output.

}  // namespace

cv::Mat synth_finding_map(const SynthSample& smp) {
  cv::Mat map = cv::Mat::zeros(smp.image.size(), CV_8U);
  const auto add = [&](const cv::Mat& mask, int finding) {
    if (mask.empty()) return;
    cv::Mat bit = cv::Mat::zeros(map.size(), CV_8U);
    bit.setTo(1 << finding, mask);
    map |= bit;
  };
  if (smp.labels[kCardiomegaly]) add(smp.heart, kCardiomegaly);
  add(smp.effusion, kEffusion);
  if (smp.labels[kNodule]) {
    cv::Mat disc = cv::Mat::zeros(map.size(), CV_8U);
    const int r = std::max(1, static_cast<int>(std::lround(smp.params.nodule_radius)));
    cv::circle(disc, smp.params.nodule_center, r, cv::Scalar(255), cv::FILLED);
    add(disc, kNodule);
  }
  add(smp.pneumothorax, kPneumothorax);
  add(smp.consolidation, kConsolidation);
  return map;
}

namespace {

// Thousands of files: a plain write at the fastest level (no fsync per file).
void write_png(const std::string& path, const cv::Mat& m) {
  PngWriteOptions o;
  o.atomic = false;
  image_write_png(path, m, o);
}

DicomGray16 dicom_meta(const SynthOptions& o, const SynthSample& smp) {
  DicomGray16 m;
  m.sop_instance_uid = dicom_uid({3, o.seed, smp.index});
  m.study_instance_uid = dicom_uid({1, o.seed, smp.index});
  m.series_instance_uid = dicom_uid({2, o.seed, smp.index});
  m.patient_id = smp.patient_id;
  m.patient_name = "Synth^" + smp.patient_id;
  m.patient_sex = smp.sex;
  char age[32];
  std::snprintf(age, sizeof age, "%03dY", std::min(999, std::max(0, smp.age)));
  m.patient_age = age;
  m.view_position = smp.view;
  char date[32];
  std::snprintf(date, sizeof date, "2020%02d01", smp.visit + 1);  // follow-ups a month apart
  m.study_date = date;
  m.study_id = std::to_string(smp.visit + 1);
  m.rows = smp.image.rows;
  m.columns = smp.image.cols;
  const SynthDicomVariant& v = smp.dicom;
  m.bits_stored = v.bits_stored;
  m.monochrome1 = v.monochrome1;
  m.has_rescale = v.has_rescale;
  m.rescale_slope = v.rescale_slope;
  m.rescale_intercept = v.rescale_intercept;
  if (v.has_window) {
    const double full = static_cast<double>((1u << v.bits_stored) - 1u) * v.rescale_slope;
    m.has_window = true;
    m.window_center = v.rescale_intercept + 0.5 * full;
    m.window_width = full;
  }
  return m;
}

struct Row {
  size_t patient = 0;
  SynthSplit split = SynthSplit::kTrain;
  std::string view;
  std::array<bool, kSynthFindings> labels{};
  cv::Rect nodule_box;
};

std::string json_num(double v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

}  // namespace

const char* synth_finding_name(int finding) {
  static const char* const kNames[kSynthFindings] = {"Cardiomegaly", "Effusion", "Nodule",
                                                     "Pneumothorax", "Consolidation"};
  EVAX_ASSERT(finding >= 0 && finding < kSynthFindings, "finding ", finding);
  return kNames[finding];
}

const char* synth_split_name(SynthSplit split) {
  switch (split) {
    case SynthSplit::kTrain:
      return "train";
    case SynthSplit::kVal:
      return "val";
    case SynthSplit::kTest:
      return "test";
  }
  return "?";
}

bool SynthSample::no_finding() const {
  return std::none_of(labels.begin(), labels.end(), [](bool b) { return b; });
}

void synth_validate(const SynthOptions& o) {
  EVAX_CHECK(ConfigError, o.n >= 1, "synth: n must be >= 1 (got ", o.n, ")");
  EVAX_CHECK(ConfigError, o.size >= 64 && o.size % 16 == 0 && o.size <= 4096,
             "synth: size must be a multiple of 16 in [64, 4096] (got ", o.size, ")");
  EVAX_CHECK(ConfigError, o.threads >= 0, "synth: threads must be >= 0 (got ", o.threads, ")");
  const double fr[3] = {o.train_fraction, o.val_fraction, o.test_fraction};
  const char* names[3] = {"train_fraction", "val_fraction", "test_fraction"};
  for (int i = 0; i < 3; ++i)
    EVAX_CHECK(ConfigError, fr[i] >= 0.0 && fr[i] <= 1.0, "synth: ", names[i],
               " must be in [0, 1] (got ", fr[i], ")");
  EVAX_CHECK(ConfigError, o.conspicuity >= 1.0 && o.conspicuity <= 4.0,
             "synth: conspicuity must be in [1, 4] (got ", o.conspicuity, ")");
  const double sum = fr[0] + fr[1] + fr[2];
  EVAX_CHECK(ConfigError, std::abs(sum - 1.0) < 1e-6,
             "synth: train_fraction + val_fraction + test_fraction must be 1 (got ", sum, ")");
  for (int f = 0; f < kSynthFindings; ++f)
    EVAX_CHECK(ConfigError, o.prevalence[f] >= 0.0 && o.prevalence[f] <= 1.0,
               "synth: prevalence of ", synth_finding_name(f), " must be in [0, 1] (got ",
               o.prevalence[f], ")");
  EVAX_CHECK(ConfigError, o.write_png || o.write_dicom,
             "synth: at least one of write_png and write_dicom must be true (both are false)");
  EVAX_CHECK(ConfigError, !o.out_dir.empty(), "synth: out_dir is empty");
}

SynthSample synth_render(const SynthOptions& options, size_t index) {
  synth_validate(options);
  EVAX_CHECK(ConfigError, index < options.n, "synth: image index ", index,
             " out of range (n = ", options.n, ")");
  return render(options, make_plan(options), index);
}

cv::Mat synth_to_png8(const cv::Mat& image) {
  EVAX_ASSERT(image.type() == CV_32F);
  cv::Mat out(image.size(), CV_8U);
  for (int y = 0; y < image.rows; ++y) {
    const float* ip = image.ptr<float>(y);
    uint8_t* op = out.ptr<uint8_t>(y);
    for (int x = 0; x < image.cols; ++x) op[x] = static_cast<uint8_t>(clamp01(ip[x]) * 255.0 + 0.5);
  }
  return out;
}

std::vector<uint16_t> synth_to_stored(const cv::Mat& image, const SynthDicomVariant& v) {
  EVAX_ASSERT(image.type() == CV_32F);
  const double m = static_cast<double>((1u << v.bits_stored) - 1u);
  const uint32_t top = (1u << v.bits_stored) - 1u;
  std::vector<uint16_t> out;
  out.reserve(image.total());
  for (int y = 0; y < image.rows; ++y) {
    const float* ip = image.ptr<float>(y);
    for (int x = 0; x < image.cols; ++x) {
      const uint32_t q = static_cast<uint32_t>(clamp01(ip[x]) * m + 0.5);
      out.push_back(static_cast<uint16_t>(v.monochrome1 ? top - q : q));
    }
  }
  return out;
}

double synth_display_value(uint16_t stored, const SynthDicomVariant& v) {
  const double m = static_cast<double>((1u << v.bits_stored) - 1u);
  const double modality = v.rescale_slope * stored + v.rescale_intercept;
  const double y = (modality - v.rescale_intercept) / (v.rescale_slope * m);
  return v.monochrome1 ? 1.0 - y : y;
}

SynthSummary synth_generate(const SynthOptions& o, const SynthProgress& progress) {
  namespace fs = std::filesystem;
  synth_validate(o);
  const auto t0 = std::chrono::steady_clock::now();
  const Plan plan = make_plan(o);
  const fs::path root(o.out_dir);
  const char* dirs[] = {"png", "dicom", "masks/lungs", "masks/pneumothorax", "masks/consolidation",
                        "masks/findings"};
  for (const char* d : dirs) {
    if ((std::string(d) == "png" && !o.write_png) || (std::string(d) == "dicom" && !o.write_dicom))
      continue;
    std::error_code ec;
    fs::create_directories(root / d, ec);
    if (ec) raise<DataError>("cannot create folder ", (root / d).string(), ": ", ec.message());
  }

  std::vector<Row> rows(o.n);
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::exception_ptr error;
  size_t done = 0;
  const auto work = [&]() {
    try {
      for (size_t i = next++; i < o.n && !failed; i = next++) {
        SynthSample smp = render(o, plan, i);
        const std::string name = smp.id;
        if (o.write_png)
          write_png((root / "png" / (name + ".png")).string(), synth_to_png8(smp.image));
        if (o.write_dicom)
          write_dicom_gray16((root / "dicom" / (name + ".dcm")).string(), dicom_meta(o, smp),
                             synth_to_stored(smp.image, smp.dicom));
        write_png((root / "masks/lungs" / (name + ".png")).string(), smp.lungs);
        write_png((root / "masks/pneumothorax" / (name + ".png")).string(), smp.pneumothorax);
        write_png((root / "masks/consolidation" / (name + ".png")).string(), smp.consolidation);
        write_png((root / "masks/findings" / (name + ".png")).string(), synth_finding_map(smp));
        Row& r = rows[i];
        r.patient = smp.patient;
        r.split = smp.split;
        r.view = smp.view;
        r.labels = smp.labels;
        r.nodule_box = smp.nodule_box;
        std::lock_guard<std::mutex> lock(mu);
        ++done;
        if (progress) progress(done, o.n);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
      failed = true;
    }
  };
  size_t nthreads = o.threads > 0 ? static_cast<size_t>(o.threads)
                                  : std::max(1u, std::thread::hardware_concurrency());
  nthreads = std::min(nthreads, o.n);
  // OpenCV creates its matrix-expression registry lazily without synchronisation; make it here,
  // before the workers race to do it.
  {
    const cv::Mat one = cv::Mat::ones(1, 1, CV_8U);
    const cv::Mat warm = ~one & one;
  }
  std::vector<std::thread> pool;
  for (size_t t = 1; t < nthreads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);

  // Manifests, in image order.
  SynthSummary sum;
  sum.images = o.n;
  sum.patients = plan.split.size();
  for (SynthSplit sp : plan.split) ++sum.split_patients[static_cast<int>(sp)];
  const std::string ext = o.write_png ? ".png" : ".dcm";
  const std::string img_dir = o.write_png ? "png/" : "dicom/";
  const auto path_of = [&](const std::string& name) { return (root / name).string(); };
  const char* seg_names[3] = {"lungs", "pneumothorax", "consolidation"};
  std::ostringstream cls, cls_dcm, pre, seg[3], fnd;
  std::string label_header;
  for (int f = 0; f < kSynthFindings; ++f) label_header += std::string(",") + synth_finding_name(f);
  label_header += ",No Finding";
  cls << "path,split,patient_id,view" << label_header << ",boxes\n";
  cls_dcm << "path,split,patient_id,view" << label_header << ",boxes\n";
  pre << "path,split,patient_id,view\n";
  for (auto& sg : seg) sg << "path,split,patient_id,view,mask\n";
  fnd << "path,split,patient_id,view,mask\n";
  for (size_t i = 0; i < o.n; ++i) {
    const Row& r = rows[i];
    const std::string id = format_id("synth_", 6, i);
    const std::string common = std::string(",") + synth_split_name(r.split) + "," +
                               format_id("P", 5, r.patient) + "," + r.view;
    std::string labels;
    bool any = false;
    for (int f = 0; f < kSynthFindings; ++f) {
      labels += r.labels[f] ? ",1" : ",0";
      any = any || r.labels[f];
      if (r.labels[f]) ++sum.positives[f];
    }
    labels += any ? ",0" : ",1";
    if (!any) ++sum.no_finding;
    ++sum.split_images[static_cast<int>(r.split)];
    std::string boxes;
    if (r.labels[kNodule]) {
      const cv::Rect& b = r.nodule_box;
      boxes = "Nodule:" + std::to_string(b.x) + "," + std::to_string(b.y) + "," +
              std::to_string(b.width) + "," + std::to_string(b.height);
    }
    cls << img_dir << id << ext << common << labels << "," << csv_field(boxes) << "\n";
    cls_dcm << "dicom/" << id << ".dcm" << common << labels << "," << csv_field(boxes) << "\n";
    pre << img_dir << id << ext << common << "\n";
    for (int k = 0; k < 3; ++k)
      seg[k] << img_dir << id << ext << common << ",masks/" << seg_names[k] << "/" << id
             << ".png\n";
    fnd << img_dir << id << ext << common << ",masks/findings/" << id << ".png\n";
  }
  write_file_atomic(path_of("classification.csv"), cls.str());
  if (o.write_dicom) write_file_atomic(path_of("classification_dicom.csv"), cls_dcm.str());
  write_file_atomic(path_of("pretrain.csv"), pre.str());
  write_file_atomic(path_of("findings.csv"), fnd.str());
  for (int k = 0; k < 3; ++k)
    write_file_atomic(path_of(std::string("segmentation_") + seg_names[k] + ".csv"), seg[k].str());

  // synth.json: options and counts only (no paths, threads or times: output stays identical).
  std::ostringstream j;
  j << "{\n  \"generator\": \"evax synth 1\",\n  \"options\": {\n";
  j << "    \"n\": " << o.n << ",\n    \"size\": " << o.size << ",\n    \"seed\": " << o.seed
    << ",\n";
  j << "    \"train_fraction\": " << json_num(o.train_fraction)
    << ",\n    \"val_fraction\": " << json_num(o.val_fraction)
    << ",\n    \"test_fraction\": " << json_num(o.test_fraction) << ",\n    \"prevalence\": {";
  for (int f = 0; f < kSynthFindings; ++f)
    j << (f ? ", " : "") << "\"" << synth_finding_name(f) << "\": " << json_num(o.prevalence[f]);
  j << "}";
  // Only when set, so the default's synth.json stays as published.
  if (o.conspicuity != 1.0) j << ",\n    \"conspicuity\": " << json_num(o.conspicuity);
  j << ",\n    \"write_dicom\": " << (o.write_dicom ? "true" : "false")
    << ",\n    \"write_png\": " << (o.write_png ? "true" : "false") << "\n  },\n";
  j << "  \"counts\": {\n    \"images\": " << sum.images << ",\n    \"patients\": " << sum.patients
    << ",\n    \"findings\": {";
  for (int f = 0; f < kSynthFindings; ++f)
    j << (f ? ", " : "") << "\"" << synth_finding_name(f) << "\": " << sum.positives[f];
  j << ", \"No Finding\": " << sum.no_finding << "},\n    \"splits\": {";
  for (int sp = 0; sp < 3; ++sp)
    j << (sp ? ", " : "") << "\"" << synth_split_name(static_cast<SynthSplit>(sp))
      << "\": {\"images\": " << sum.split_images[sp] << ", \"patients\": " << sum.split_patients[sp]
      << "}";
  j << "}\n  }\n}\n";
  write_file_atomic(path_of("synth.json"), j.str());

  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace evax
