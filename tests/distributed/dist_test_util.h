// Helpers for the distributed tests: ranks as threads of one process.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "evax/distributed/env.h"

namespace evax::test {

/// Runs fn(rank) on `world` threads and rethrows the first rank's exception on this thread.
/// (Catch2's assertions are not thread-safe: ranks record results, the caller checks them.)
inline void run_ranks(int world, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

/// A TCP port that is free at the time of the call.
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof(a);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

/// Rank r of a `world`-rank job on this machine with its store at 127.0.0.1:port.
inline DistEnv local_env(int r, int world, int port) {
  DistEnv e;
  e.rank = r;
  e.world_size = world;
  e.local_rank = r;
  e.local_world_size = world;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  e.source = "test";
  return e;
}

}  // namespace evax::test
