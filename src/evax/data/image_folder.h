// A folder-per-class dataset as an in-memory manifest (torchvision's ImageFolder convention), so a
// classifier can be finetuned on one's own images without writing a manifest:
//   root/<class>/**/*.png|jpg|jpeg|dcm
// Classes are the sub-folders of root sorted by name (byte order, like torchvision's sorted());
// images are found recursively in each class folder, ordered like torchvision (by folder path,
// then file name). Hidden files and folders (name starting with '.') and other extensions are
// ignored. Labels are one-hot over the classes (the multi-class manifest format, as COVIDx).
//
// Example:
//   Manifest train = image_folder_manifest("/data/mine/train");
//   Manifest test = image_folder_manifest("/data/mine/test", ImageFolderOptions().split("test"));
#pragma once

#include <torch/arg.h>

#include <string>
#include <vector>

#include "evax/data/manifest.h"

namespace evax {

/// Options of image_folder_manifest.
struct ImageFolderOptions {
  /// Split of every row: "train", "val" or "test" (ConfigError otherwise).
  TORCH_ARG(std::string, split) = "train";
  /// Accepted file-name endings, lower case, matched case-insensitively.
  TORCH_ARG(std::vector<std::string>, extensions) =
      std::vector<std::string>{".png", ".jpg", ".jpeg", ".dcm"};
};

/// The manifest of a class-per-folder tree. Rows: absolute path, the options' split, patient_id =
/// the path relative to root (a folder tree knows no patients: each image is its own), one-hot
/// labels; label_names = the class names; `file` = root. An empty class folder is kept (its index
/// stays) with a warning. DataError naming root when it is not a directory, has no class folder,
/// or holds no image at all.
Manifest image_folder_manifest(const std::string& root, const ImageFolderOptions& options = {});

}  // namespace evax
