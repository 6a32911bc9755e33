// Internal: a Comm over one of c10d's own process groups (ProcessGroupNCCL, ProcessGroupGloo).
// The backends differ only in how the c10d::Backend is built; the collectives are the same.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "evax/distributed/comm.h"

namespace evax {

class BackendComm : public Comm {
 public:
  /// `device`: where the backend wants its tensors (CPU for gloo, cuda:<local_rank> for nccl).
  BackendComm(std::string name, at::Device device, int rank, int world_size,
              c10::intrusive_ptr<c10d::Backend> backend);
  ~BackendComm() override;

  std::string backend_name() const override { return name_; }
  at::Device device() const override { return device_; }
  void all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) override;
  void broadcast(std::vector<at::Tensor>& tensors, int root) override;
  void barrier() override;
  at::Tensor all_gather(const at::Tensor& t) override;

 private:
  template <class F>
  void run(const char* what, F&& f);
  template <class F>
  void for_each_tensor(std::vector<at::Tensor>& tensors, const char* what, F&& f);

  std::string name_;
  at::Device device_;
  c10::intrusive_ptr<c10d::Backend> backend_;
};

}  // namespace evax
