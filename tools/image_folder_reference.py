"""torchvision.datasets.ImageFolder's classes and samples for tests/data/image_folder_test.cpp.
evax's rules are given to it explicitly: extensions png/jpg/jpeg/dcm, hidden files and folders
ignored (torchvision would keep them), empty classes allowed.
Usage: image_folder_reference.py ROOT OUT; OUT gets 'class<TAB>index' then 'sample<TAB>rel<TAB>index'."""
import os
import sys

from torchvision.datasets import ImageFolder

EXTS = (".png", ".jpg", ".jpeg", ".dcm")


class Folder(ImageFolder):
    def find_classes(self, directory):
        classes = sorted(e.name for e in os.scandir(directory)
                         if e.is_dir() and not e.name.startswith("."))
        return classes, {c: i for i, c in enumerate(classes)}


def main():
    root, out = sys.argv[1], sys.argv[2]

    def valid(path):
        rel = os.path.relpath(path, root)
        if any(part.startswith(".") for part in rel.split(os.sep)):
            return False
        return path.lower().endswith(EXTS)

    ds = Folder(root, is_valid_file=valid, allow_empty=True)
    with open(out, "w") as f:
        for c, i in ds.class_to_idx.items():
            f.write(f"class\t{c}\t{i}\n")
        for p, i in ds.samples:
            f.write(f"sample\t{os.path.relpath(p, root)}\t{i}\n")


if __name__ == "__main__":
    main()
