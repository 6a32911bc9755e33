#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/io/tensorboard.h"
#include "evax/train/run_checkpoint.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;

namespace {
TensorMap model_of(float v) { return {{"w", torch::full({4}, v)}}; }
}  // namespace

TEST_CASE("checkpoints round-trip and keep the last K") {
  test::TempDir tmp("ckpt");
  for (int s = 1; s <= 4; ++s)
    run_checkpoint_save(tmp.str(), s * 10, model_of(s), {{"opt", torch::ones({2})}},
                        {{"epoch", s}}, 2);
  int n = 0;
  for (auto& e : fs::directory_iterator(tmp.str())) (void)e, ++n;
  CHECK(n == 2);
  auto latest = run_checkpoint_find_latest(tmp.str());
  REQUIRE(latest);
  CHECK(fs::path(*latest).filename() == "step-00000040");
  auto st = run_checkpoint_load(*latest);
  CHECK(torch::equal(*find(st.model, "w"), torch::full({4}, 4.0f)));
  CHECK(st.meta["epoch"] == 4);
  CHECK(st.meta["step"] == 40);
}

TEST_CASE("a damaged or half-written newest checkpoint never replaces the last good one") {
  test::TempDir tmp("ckpt2");
  run_checkpoint_save(tmp.str(), 1, model_of(1), {}, {}, 5);
  const std::string good = run_checkpoint_save(tmp.str(), 2, model_of(2), {}, {}, 5);
  // An interrupted write leaves only a temporary folder: ignored.
  fs::create_directories(tmp / ".tmp-step-00000003-1");
  std::ofstream(tmp / ".tmp-step-00000003-1/model.safetensors") << "partial";
  CHECK(*run_checkpoint_find_latest(tmp.str()) == good);
  // A newer directory with a truncated file fails its checksum and is skipped.
  const std::string bad = run_checkpoint_save(tmp.str(), 3, model_of(3), {}, {}, 5);
  fs::resize_file(bad + "/model.safetensors", 20);
  CHECK(*run_checkpoint_find_latest(tmp.str()) == good);
  CHECK_THROWS_AS(run_checkpoint_load(bad), DataError);
  // So does one without meta.json.
  fs::remove(good + "/meta.json");
  CHECK(fs::path(*run_checkpoint_find_latest(tmp.str())).filename() == "step-00000001");
}

TEST_CASE("CRC-32C matches the standard check value") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
}

TEST_CASE("TensorBoard scalars round-trip through the event file") {
  test::TempDir tmp("tb");
  std::string path;
  {
    TensorBoardWriter w(tmp / "tb");
    w.scalar("train/loss", 0.5, 1);
    w.scalar("train/loss", 0.25, 2);
    w.scalar("train/lr", 1e-3, 2);
    w.flush();
    path = w.path();
  }
  auto s = tensorboard_read_scalars(path);
  REQUIRE(s.size() == 3);
  CHECK(s[0].tag == "train/loss");
  CHECK(s[0].step == 1);
  CHECK(s[1].value == Approx(0.25));
  CHECK(s[2].tag == "train/lr");
  CHECK(s[2].value == Approx(1e-3));
  // A flipped byte is detected by the CRC.
  std::string bytes = read_file(path);
  bytes[bytes.size() - 6] ^= 0x40;
  write_file_atomic(tmp / "bad", bytes);
  CHECK_THROWS_AS(tensorboard_read_scalars(tmp / "bad"), DataError);
}

TEST_CASE("TensorBoard itself opens the event files") {
  const std::string py = EVAX_PYTHON;
  if (py.empty()) FAIL("EVAX_PYTHON not configured");
  test::TempDir tmp("tb_py");
  std::string path;
  {
    TensorBoardWriter w(tmp / "tb");
    for (int s = 1; s <= 3; ++s) w.scalar("train/loss", 1.0 / s, s);
    path = w.path();
  }
  std::ofstream(tmp / "read.py")
      << "import sys\n"
         "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
         "ea = EventAccumulator(sys.argv[1]); ea.Reload()\n"
         "ev = ea.Scalars('train/loss')\n"
         "ok = [e.step for e in ev] == [1, 2, 3] and abs(ev[2].value - 1/3) < 1e-6\n"
         "sys.exit(0 if ok else 1)\n";
  const std::string cmd = py + " '" + (tmp / "read.py") + "' '" + path + "'";
  CHECK(std::system(cmd.c_str()) == 0);
}
