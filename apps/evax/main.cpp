// evax: one binary, one subcommand per file. Maps every error to one line and an exit code.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "commands.h"
#include <c10/util/Exception.h>

#include "evax/core/error.h"
#include "evax/train/preempt.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const evax::app::Args&);
};

const Command kCommands[] = {
    {"cam", "Grad-CAM heat maps of a finetuned classifier (images, DICOMs, pixel tensors)",
     evax::app::cmd_cam},
    {"cam-eval", "Grad-CAM localisation of a manifest's boxes (mIoU, AP25, AP50, mAP vs chance)",
     evax::app::cmd_cam_eval},
    {"compare", "runs' headline test metrics next to the paper's numbers, and their config diffs",
     evax::app::cmd_compare},
    {"config", "the configuration reference (every key, type, default), or a config's values",
     evax::app::cmd_config},
    {"convert", "convert a checkpoint to safetensors (timm or EVA-02 naming)",
     evax::app::cmd_convert},
    {"decode", "decode a DICOM/PNG/JPEG to the float image evax sees", evax::app::cmd_decode},
    {"demo", "run the main job on the embedded synthetic default", evax::app::cmd_demo},
    {"embed", "extract token and pooled features (timm forward_features / forward_head)",
     evax::app::cmd_embed},
    {"evaluate", "score a finetuned classifier on a split (metrics.json, table, ROC, predictions)",
     evax::app::cmd_evaluate},
    {"finetune", "EVA-X classification finetuning or linear probing, then the test split scored",
     evax::app::cmd_finetune},
    {"inspect", "show what a checkpoint holds (keys, tensors, naming, model)",
     evax::app::cmd_inspect},
    {"launch", "start N local ranks of a command (distributed training)", evax::app::cmd_launch},
    {"manifest", "build a manifest CSV from a dataset's official files, or merge manifests",
     evax::app::cmd_manifest},
    {"metrics", "classification metrics (AUC, rates, accuracy, confusion) of prediction CSVs",
     evax::app::cmd_metrics},
    {"predict", "per-image class probabilities from a finetuned checkpoint (no config needed)",
     evax::app::cmd_predict},
    {"pretrain", "EVA-X masked image modeling pretraining (MIM) with a frozen teacher",
     evax::app::cmd_pretrain},
    {"report", "write a run directory's self-contained report.html (metrics, curves, images)",
     evax::app::cmd_report},
    {"segment", "UperNet segmentation on an EVA-X backbone, then the test split scored",
     evax::app::cmd_segment},
    {"synth", "generate synthetic chest X-rays (DICOM, PNG, masks, manifests)",
     evax::app::cmd_synth},
    {"teacher", "train a dense MIM teacher from bit masks (when no pretrained teacher exists)",
     evax::app::cmd_teacher},
};

void print_help() {
  std::cout << "usage: evax <command> [options]\n\nEVA-X chest X-ray foundation models in C++.\n\n"
               "commands:\n";
  for (const auto& c : kCommands) {
    std::string name = c.name;
    std::cout << "  " << name << std::string(12 - name.size(), ' ') << c.summary << "\n";
  }
  std::cout << "\n`evax <command> --help` shows a command's options.\n"
               "exit codes: 0 ok, 1 internal error, 2 usage or config error, 3 data error,\n"
               "  4 distributed peer failure (a rank died, timed out or was unreachable),\n"
               "  5 out of memory (GPU or host),\n"
               "  6 preempted: SIGTERM or SIGUSR1 stopped training after a checkpoint\n"
               "    (continue with --resume auto)\n";
}

// What to change when memory runs out.
constexpr const char* kOomAdvice =
    "; lower the batch size (data.loader.batch_size, per rank; --batch-size), the image size "
    "(data.views.student_size/teacher_size; --image-size) or loader workers, or use bf16 "
    "(bf16: true)";

// LibTorch's out-of-memory errors: the CUDA caching allocator throws c10::OutOfMemoryError, the
// CPU allocator and CUDA calls outside the allocator a plain c10::Error. Returns the useful part
// of the message ("" when `e` is not about memory).
std::string out_of_memory(const c10::Error& e) {
  std::string msg = e.what_without_backtrace();
  msg = msg.substr(0, msg.find('\n'));
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) {
    // "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79 GiB of
    // which 1.2 GiB is free. Process ... (allocator statistics and hints)": keep the first three.
    const auto free = msg.find(" is free.");
    if (free != std::string::npos) msg = msg.substr(0, free + 9);
    return "out of GPU memory: " + msg;
  }
  if (msg.find("DefaultCPUAllocator: can't allocate memory") != std::string::npos) {
    // "... you tried to allocate 36028797018963968 bytes. Error code 12 (...)"
    const std::string tried = "you tried to allocate ";
    const auto at = msg.find(tried);
    std::string what = "host memory";
    if (at != std::string::npos) {
      double bytes = std::atof(msg.c_str() + at + tried.size());
      const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
      int u = 0;
      while (bytes >= 1024 && u < 6) bytes /= 1024, ++u;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.1f %s", bytes, units[u]);
      what += std::string(" (tried to allocate ") + buf + ")";
    }
    return "out of " + what;
  }
  if (msg.find("CUDA error: out of memory") != std::string::npos ||
      msg.find("CUBLAS_STATUS_ALLOC_FAILED") != std::string::npos)
    return "out of GPU memory: " + msg;
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help();
    return args.empty() ? 2 : 0;
  }
  const std::string name = args[0];
  args.erase(args.begin());
  try {
    for (const auto& c : kCommands)
      if (name == c.name) return c.run(args);
    std::cerr << "evax: error: unknown command '" << name << "' (see `evax --help`)\n";
    return static_cast<int>(evax::ExitCode::kUsage);
  } catch (const evax::Error& e) {
    // A preemption is a requested stop, not an error.
    const bool preempted = e.exit_code() == evax::ExitCode::kPreempted;
    std::cerr << (preempted ? "evax: " : "evax: error: ") << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  } catch (const c10::Error& e) {
    const std::string oom = out_of_memory(e);
    if (!oom.empty()) {
      std::cerr << "evax: error: " << oom << kOomAdvice << "\n";
      return static_cast<int>(evax::ExitCode::kOutOfMemory);
    }
    if (dynamic_cast<const c10::DistError*>(&e) != nullptr) {
      // A c10d failure evax did not wrap in its DistError: still a peer or network problem.
      std::string msg = e.what_without_backtrace();
      std::cerr << "evax: error: distributed: " << msg.substr(0, msg.find('\n')) << "\n";
      return static_cast<int>(evax::ExitCode::kDist);
    }
    // A LibTorch check we did not anticipate: a bug on our side, shown without the backtrace.
    std::string msg = e.what_without_backtrace();
    std::cerr << "evax: internal error: " << msg.substr(0, msg.find('\n')) << "\n";
    return static_cast<int>(evax::ExitCode::kInternal);
  } catch (const std::bad_alloc&) {
    std::cerr << "evax: error: out of host memory" << kOomAdvice << "\n";
    return static_cast<int>(evax::ExitCode::kOutOfMemory);
  } catch (const std::exception& e) {
    // Anything not typed by evax is a bug: keep the message to its first line.
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    std::cerr << "evax: internal error: " << msg << "\n";
    return static_cast<int>(evax::ExitCode::kInternal);
  }
}
