// evax decode: one image file to safetensors, as the data pipeline sees it.
#include <ATen/ATen.h>

#include <map>
#include <sstream>

#include "commands.h"
#include "evax/core/log.h"
#include "evax/io/dicom.h"
#include "evax/io/image.h"
#include "evax/io/safetensors.h"

namespace evax::app {
namespace {

at::Tensor to_tensor(const cv::Mat& m) {
  EVAX_ASSERT(m.type() == CV_32F && m.isContinuous());
  return at::from_blob(const_cast<float*>(m.ptr<float>()), {m.rows, m.cols}, at::kFloat).clone();
}

// Shortest round-trip text of a double, for the metadata.
std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

}  // namespace

int cmd_decode(const Args& args) {
  std::string in, out;
  bool voi = false;
  int64_t frame = 0;
  ArgParser p("decode",
              "Decode an image as evax's data pipeline does and save it as safetensors.\n"
              "DICOM: `image` = values after the Modality LUT, MONOCHROME1 inverted (brighter =\n"
              "denser), `unit` = the [0,1] mapping (modality range of the stored bits, or the VOI\n"
              "window/LUT with --voi), metadata = photometric, transfer syntax, rescale, bits.\n"
              "PNG/JPEG: `unit` only (gray luminance / 255 or / 65535).");
  p.positional("IN", &in, "input image (.dcm or DICM magic, .png, .jpg)").required();
  p.option("--out", &out, "OUT", "output .safetensors").required();
  p.flag("--voi", &voi, "map to [0,1] through the file's VOI LUT or window when present");
  p.option("--frame", &frame, "N", "frame of a multi-frame DICOM (0-based)");
  if (!p.parse(args)) return 0;
  if (frame < 0 || frame > 1000000)
    raise<UsageError>("evax decode: --frame must be in [0, 1000000], got ", frame);

  ImageReadOptions o;
  o.dicom.apply_voi = voi;
  o.dicom.frame = static_cast<int>(frame);
  std::map<std::string, std::string> meta{{"source", in}, {"voi", voi ? "1" : "0"}};
  TensorMap tensors;
  if (is_dicom_path(in)) {
    const DicomPixels d = dicom_read(in, o.dicom);
    const cv::Mat unit = dicom_to_unit(d, voi);
    tensors = {{"image", to_tensor(d.image)}, {"unit", to_tensor(unit)}};
    meta["format"] = "dicom";
    meta["photometric"] = d.photometric;
    meta["transfer_syntax"] = d.transfer_syntax_uid;
    meta["transfer_syntax_name"] = d.transfer_syntax_name;
    meta["rescale_slope"] = num(d.slope);
    meta["rescale_intercept"] = num(d.intercept);
    meta["modality_lut"] = d.has_modality_lut ? "1" : "0";
    meta["bits_allocated"] = std::to_string(d.bits_allocated);
    meta["bits_stored"] = std::to_string(d.bits_stored);
    meta["high_bit"] = std::to_string(d.high_bit);
    meta["signed"] = d.is_signed ? "1" : "0";
    meta["frames"] = std::to_string(d.frames);
    meta["frame"] = std::to_string(d.frame);
    meta["range_lo"] = num(d.lo);
    meta["range_hi"] = num(d.hi);
    if (d.has_window) {
      meta["window_center"] = num(d.window_center);
      meta["window_width"] = num(d.window_width);
      meta["voi_function"] = d.voi_function;
    }
    log_info("decoded ", in, ": ", d.rows, "x", d.cols, " ", d.photometric, ", ",
             d.transfer_syntax_name, ", values [", d.lo, ", ", d.hi, "]");
  } else {
    tensors = {{"unit", to_tensor(image_read_unit(in, o))}};
    meta["format"] = "image";
    log_info("decoded ", in, ": ", tensors[0].second.size(0), "x", tensors[0].second.size(1));
  }
  safetensors_save(out, tensors, meta);
  log_info("wrote ", out);
  return 0;
}

}  // namespace evax::app
