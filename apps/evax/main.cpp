// evax: one binary, one subcommand per file. Maps every error to one line and an exit code.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "commands.h"
#include <c10/util/Exception.h>

#include "evax/core/error.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const evax::app::Args&);
};

const Command kCommands[] = {
    {"convert", "convert a checkpoint to safetensors (timm or EVA-02 naming)",
     evax::app::cmd_convert},
    {"decode", "decode a DICOM/PNG/JPEG to the float image evax sees", evax::app::cmd_decode},
    {"demo", "run the main job on the embedded synthetic default", evax::app::cmd_demo},
    {"embed", "extract token and pooled features (timm forward_features / forward_head)",
     evax::app::cmd_embed},
    {"inspect", "show what a checkpoint holds (keys, tensors, naming, model)",
     evax::app::cmd_inspect},
    {"launch", "start N local ranks of a command (distributed training)", evax::app::cmd_launch},
    {"manifest", "build a manifest CSV from a dataset's official files, or merge manifests",
     evax::app::cmd_manifest},
    {"pretrain", "EVA-X masked image modeling pretraining (MIM) with a frozen teacher",
     evax::app::cmd_pretrain},
    {"synth", "generate synthetic chest X-rays (DICOM, PNG, masks, manifests)",
     evax::app::cmd_synth},
};

void print_help() {
  std::cout << "usage: evax <command> [options]\n\nEVA-X chest X-ray foundation models in C++.\n\n"
               "commands:\n";
  for (const auto& c : kCommands) {
    std::string name = c.name;
    std::cout << "  " << name << std::string(12 - name.size(), ' ') << c.summary << "\n";
  }
  std::cout << "\n`evax <command> --help` shows a command's options.\n"
               "exit codes: 0 ok, 1 internal error, 2 usage or config error, 3 data error\n";
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
    std::cerr << "evax: error: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  } catch (const c10::Error& e) {
    // A LibTorch check we did not anticipate: a bug on our side, shown without the backtrace.
    std::string msg = e.what_without_backtrace();
    std::cerr << "evax: internal error: " << msg.substr(0, msg.find('\n')) << "\n";
    return static_cast<int>(evax::ExitCode::kInternal);
  } catch (const std::bad_alloc&) {
    std::cerr << "evax: error: out of memory\n";
    return static_cast<int>(evax::ExitCode::kInternal);
  } catch (const std::exception& e) {
    // Anything not typed by evax is a bug: keep the message to its first line.
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    std::cerr << "evax: internal error: " << msg << "\n";
    return static_cast<int>(evax::ExitCode::kInternal);
  }
}
