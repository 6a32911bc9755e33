// evax convert: any supported checkpoint to safetensors, in timm or EVA-02 (evax) naming.
#include "commands.h"
#include "evax/core/log.h"
#include "evax/io/safetensors.h"
#include "evax/io/weight_file.h"
#include "evax/models/weights.h"

namespace evax::app {

int cmd_convert(const Args& args) {
  std::string in, out, naming_s = "timm", dtype = "keep";
  ArgParser p("convert",
              "Convert a checkpoint (.pt/.pth/.ckpt/.safetensors; EVA-02, timm or MGCA naming) to a\n"
              "safetensors file of its model weights. timm naming loads into timm's Eva /\n"
              "VisionTransformer with load_state_dict(strict=True) (MIM files: mask_token and\n"
              "lm_head dropped, final norm → fc_norm); evax naming keeps the MIM head.");
  p.positional("IN", &in, "input checkpoint").required();
  p.positional("OUT", &out, "output .safetensors").required();
  p.option("--naming", &naming_s, "timm|evax", "key naming of the output");
  p.option("--dtype", &dtype, "keep|fp32|fp16|bf16", "floating-point type of the output");
  if (!p.parse(args)) return 0;
  if (naming_s != "timm" && naming_s != "evax")
    raise<UsageError>("evax convert: --naming must be timm or evax, got '", naming_s, "'");
  at::ScalarType st = at::kFloat;
  if (dtype == "fp32") st = at::kFloat;
  else if (dtype == "fp16") st = at::kHalf;
  else if (dtype == "bf16") st = at::kBFloat16;
  else if (dtype != "keep")
    raise<UsageError>("evax convert: --dtype must be keep, fp32, fp16 or bf16, got '", dtype, "'");

  WeightFileContents c = weight_file_read(in);
  std::string key;
  TensorMap sd = weight_file_state_dict(c, &key);
  const WeightNaming naming = detect_naming(sd);
  std::vector<std::string> notes;
  // timm naming targets timm's Eva classifier (MIM head dropped, final norm → fc_norm, as
  // eva_x.py loads it); evax naming keeps everything, MIM head included.
  const bool keep_mim = naming_s == "evax";
  TensorMap timm = map_to_timm(sd, naming, nullptr, &notes, keep_mim);
  TensorMap result = keep_mim ? map_timm_to_eva02(timm) : timm;
  if (dtype != "keep") result = tensors_to(result, st);
  std::map<std::string, std::string> meta{{"format", "pt"},
                                          {"evax_naming", naming_s},
                                          {"evax_source_naming", weight_naming_name(naming)}};
  const std::string arch = guess_architecture(timm);
  if (!arch.empty()) meta["evax_model"] = arch;
  safetensors_save(out, result, meta);
  log_info("read ", in, " (", c.format, ", weights under ", key.empty() ? "<top level>" : key,
           ", ", weight_naming_name(naming), " naming)");
  for (const auto& n : notes) log_info("  ", n);
  log_info("wrote ", result.size(), " tensors to ", out, " (", naming_s, " naming",
           arch.empty() ? "" : ", " + arch, ")");
  return 0;
}

}  // namespace evax::app
