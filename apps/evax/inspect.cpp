// evax inspect: what a checkpoint holds, without loading it into a model.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "evax/io/weight_file.h"
#include "evax/models/weights.h"

namespace evax::app {

int cmd_inspect(const Args& args) {
  std::string path;
  bool all = false;
  ArgParser p("inspect",
              "Show a checkpoint's format, top-level keys, tensors (name, shape, dtype), the\n"
              "detected key naming and the model it fits. Reads .pt/.pth/.ckpt and .safetensors.");
  p.positional("CKPT", &path, "checkpoint file").required();
  p.flag("--all", &all, "list every tensor (default: the first 40 and the last 5)");
  if (!p.parse(args)) return 0;

  WeightFileContents c = weight_file_read(path);
  std::cout << "file:    " << path << "\nformat:  " << c.format << "\n";
  std::cout << "top level (" << c.entries.size() << "):\n";
  for (const auto& e : c.entries) std::cout << "  " << e.key << ": " << e.description << "\n";
  for (const auto& kv : c.metadata) std::cout << "  metadata " << kv.first << " = " << kv.second << "\n";
  std::string key;
  int64_t skipped = 0;
  TensorMap sd = weight_file_state_dict(c, &key, &skipped);
  const WeightNaming naming = detect_naming(sd);
  std::vector<std::string> notes;
  TensorMap timm = map_to_timm(sd, naming, nullptr, &notes, /*keep_mim=*/true);
  const std::string arch = guess_architecture(timm);
  int64_t params = 0;
  for (const auto& kv : sd) params += kv.second.numel();
  std::cout << "weights: " << (key.empty() ? "<top level>" : "'" + key + "'") << ", " << sd.size()
            << " tensors, " << params << " values" << (skipped ? ", " : "")
            << (skipped ? std::to_string(skipped) + " non-tensor entries skipped" : "") << "\n";
  std::cout << "naming:  " << weight_naming_name(naming) << "\n";
  std::cout << "model:   " << (arch.empty() ? "unknown" : arch) << "\n";
  std::cout << "tensors:\n";
  for (size_t i = 0; i < sd.size(); ++i) {
    if (!all && sd.size() > 45 && i == 40) {
      std::cout << "  … " << sd.size() - 45 << " more (--all lists them)\n";
      i = sd.size() - 5;
    }
    const auto& t = sd[i].second;
    std::cout << "  " << sd[i].first << "  " << t.sizes() << "  " << c10::toString(t.scalar_type())
              << "\n";
  }
  return 0;
}

}  // namespace evax::app
