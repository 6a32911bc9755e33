// Lr schedules against a Python reference (tools/lr_schedule_reference.py: EVA-X's
// adjust_learning_rate for cosine/fixed, mmcv's PolyLrUpdaterHook + linear warmup for poly), per
// optimizer step, and the `train:` schedule keys.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "evax/core/config.h"
#include "evax/core/error.h"
#include "evax/train/optim.h"
#include "evax/train/schedule.h"
#include "evax/train/trainer.h"
#include "skip.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;

namespace {

// The reference values, regenerated when the script is newer than the file.
nlohmann::json reference() {
  const std::string script = test::source_path("tools/lr_schedule_reference.py");
  const std::string out = std::string(EVAX_BINARY_DIR) + "/fixtures/train/lr_schedule_reference.json";
  std::error_code ec;
  if (!fs::exists(out) || fs::last_write_time(script) > fs::last_write_time(out, ec)) {
    fs::create_directories(fs::path(out).parent_path());
    const std::string cmd = "\"" + std::string(EVAX_PYTHON) + "\" \"" + script + "\" --out \"" + out + "\"";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }
  std::ifstream f(out);
  return nlohmann::json::parse(f);
}

ScheduleKind kind_of(const std::string& s) {
  for (auto k : {ScheduleKind::kEva02Cosine, ScheduleKind::kCosine, ScheduleKind::kFixed,
                 ScheduleKind::kPoly})
    if (schedule_kind_name(k) == s) return k;
  throw std::runtime_error("unknown schedule " + s);
}

ScheduleOptions decode(const std::string& yaml, int64_t epochs) {
  Config c = Config::parse(yaml, "t.yaml");
  ScheduleOptions o = schedule_options_from_config(c.view("train"), epochs);
  c.reject_unknown();
  return o;
}

}  // namespace

TEST_CASE("schedules equal EVA-X adjust_learning_rate and mmseg poly per step") {
  if (std::string(EVAX_PYTHON).empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  const nlohmann::json ref = reference();
  REQUIRE(ref.at("cases").size() >= 9);
  double worst = 0;
  for (const auto& c : ref.at("cases")) {
    ScheduleOptions o;
    o.kind(kind_of(c.at("schedule").get<std::string>()));
    if (c.contains("warmup_epochs")) o.warmup_epochs(c.at("warmup_epochs").get<double>());
    if (c.contains("warmup_steps")) o.warmup_steps(c.at("warmup_steps").get<int64_t>());
    if (c.contains("warmup_ratio")) o.warmup_ratio(c.at("warmup_ratio").get<double>());
    if (c.contains("power")) o.power(c.at("power").get<double>());
    if (c.contains("by_epoch")) o.by_epoch(c.at("by_epoch").get<bool>());
    const LrSchedule s(o, c.at("lr").get<double>(), c.at("min_lr").get<double>(),
                       c.at("epochs").get<int64_t>(), c.at("micro").get<int64_t>(),
                       c.at("accum").get<int64_t>());
    const auto& pts = c.at("points");
    REQUIRE(static_cast<int64_t>(pts.size()) == s.total_steps());
    double diff = 0;
    for (const auto& p : pts) {
      const double ours = s.at(p[0].get<int64_t>(), p[1].get<int64_t>(), p[2].get<int64_t>());
      diff = std::max(diff, std::abs(ours - p[3].get<double>()));
    }
    INFO(c.at("schedule").get<std::string>() << " epochs " << c.at("epochs") << " micro "
                                             << c.at("micro") << ": max abs diff " << diff);
    CHECK(diff <= 1e-12);
    worst = std::max(worst, diff);
  }
  std::cout << "schedule reference: max abs diff over all cases " << worst << "\n";
}

TEST_CASE("eva02_cosine is the pretraining schedule: cosine_schedule over steps") {
  const LrSchedule s(ScheduleOptions().warmup_epochs(0.5), 1.5e-3, 1e-5, 4, 10, 2);
  CHECK(s.total_steps() == 20);
  CHECK(s.warmup_steps() == 3);  // llround(0.5 × 5)
  for (int64_t step = 0; step < 20; ++step)
    CHECK(s.at(step, step / 5, (step % 5) * 2) == cosine_schedule(1.5e-3, 1e-5, step, 20, 3));
}

TEST_CASE("schedule keys of train: decode, old keys keep working, misuse is refused") {
  ScheduleOptions d = decode("train: {warmup_epochs: 1}\n", 10);
  CHECK(d.kind() == ScheduleKind::kEva02Cosine);
  CHECK(d.warmup_epochs() == 1.0);
  ScheduleOptions f = decode("train: {schedule: fixed, warmup_epochs: 5}\n", 45);
  CHECK(f.kind() == ScheduleKind::kFixed);
  ScheduleOptions p =
      decode("train: {schedule: poly, power: 0.9, by_epoch: true, warmup_steps: 10, "
             "warmup_ratio: 1.0e-6}\n", 10);
  CHECK(p.kind() == ScheduleKind::kPoly);
  CHECK(p.power() == 0.9);
  CHECK(p.by_epoch());
  CHECK(p.warmup_steps() == 10);
  CHECK(p.warmup_ratio() == 1e-6);
  CHECK_THROWS_AS(decode("train: {schedule: step}\n", 10), ConfigError);
  CHECK_THROWS_AS(decode("train: {schedule: cosine, power: 2}\n", 10), ConfigError);
  CHECK_THROWS_AS(decode("train: {schedule: poly, warmup_steps: 3, warmup_epochs: 1}\n", 10),
                  ConfigError);
  CHECK_THROWS_AS(decode("train: {warmup_epochs: 11}\n", 10), ConfigError);
  // The trainer's decoder reads them from the same section; unknown keys stay refused.
  Config c = Config::parse("train: {epochs: 3, schedule: cosine, warmup_epochs: 1, bogus: 1}\n", "t.yaml");
  TrainerOptions t = trainer_options_from_config(c.view("train"));
  CHECK(t.schedule().kind() == ScheduleKind::kCosine);
  CHECK(t.schedule().warmup_epochs() == 1.0);
  CHECK_THROWS_AS(c.reject_unknown(), ConfigError);
}
