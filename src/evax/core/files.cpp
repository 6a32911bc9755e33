#include "evax/core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "evax/core/error.h"

namespace fs = std::filesystem;

namespace evax {

std::string read_file(const std::string& path) {
  // One read into a buffer of the file's size: training images go through here, and growing a
  // string stream costs as much as decoding a small PNG.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) raise<DataError>("cannot read '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    const std::string why = S_ISDIR(st.st_mode) ? "it is a directory" : std::strerror(errno);
    ::close(fd);
    raise<DataError>("cannot read '", path, "': ", why);
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t off = 0;
  for (;;) {
    if (off == out.size()) out.resize(out.size() + 65536);  // a pipe, or the file grew
    const ssize_t n = ::read(fd, out.data() + off, out.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      raise<DataError>("cannot read '", path, "': ", std::strerror(err));
    }
    if (n == 0) break;
    off += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(off);
  return out;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const fs::path target(path);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) raise<DataError>("cannot write '", tmp, "': ", std::strerror(errno));
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      raise<DataError>("cannot write '", tmp, "': ", std::strerror(err));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    raise<DataError>("cannot flush '", tmp, "': ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    raise<DataError>("cannot rename '", tmp, "' to '", path, "': ", std::strerror(err));
  }
  // Persist the rename itself.
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string run_dir_resolve(const std::string& requested, const std::string& config_name) {
  std::string dir = requested;
  if (dir.empty()) {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    dir = "runs/" + (config_name.empty() ? std::string("run") : config_name) + "-" + stamp;
  }
  return dir;
}

std::string make_run_dir(const std::string& requested, const std::string& config_name) {
  const std::string dir = run_dir_resolve(requested, config_name);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) raise<DataError>("cannot create run directory '", dir, "': ", ec.message());
  return dir;
}

}  // namespace evax
