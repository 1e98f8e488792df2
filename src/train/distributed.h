// Data parallelism over MPI processes: started under mpirun, every process
// computes gradients on its own share of each step's sequences; the gradients
// (and the reported loss) are averaged with an all-reduce, so every process
// takes the same optimizer step. Without MPI (not built with it, or not
// started by mpirun) this is one process of rank 0 and every call is a no-op.
#pragma once

#include <span>

namespace rwkv::train {

class Distributed {
 public:
  // Initialises MPI on first use when the process was started by an MPI
  // launcher (OpenMPI's or a PMI environment); finalised at exit.
  static Distributed& get();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool leader() const { return rank_ == 0; }

  // In place: every process ends with the mean over processes.
  void mean(std::span<float> values) const;
  double mean(double value) const;
  // True if any process passes true.
  bool any(bool value) const;

 private:
  Distributed();
  int rank_ = 0;
  int size_ = 1;
};

// Whether this build can run data-parallel (compiled with MPI).
bool built_with_mpi();

}  // namespace rwkv::train
