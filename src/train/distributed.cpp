#include "train/distributed.h"

#include <algorithm>
#include <cstdlib>

#include "core/error.h"

#ifdef RWKV_WITH_MPI
#include <mpi.h>
#endif

namespace rwkv::train {

#ifdef RWKV_WITH_MPI

namespace {

// Initialising MPI outside a launcher makes OpenMPI start a singleton runtime
// (slow, and it may fail in containers), so only launched processes use it.
bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

Distributed::Distributed() {
  if (!launched_by_mpi()) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    if (MPI_Init(nullptr, nullptr) != MPI_SUCCESS) fail("MPI_Init failed");
    std::atexit(finalize);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

void Distributed::mean(std::span<float> values) const {
  if (size_ == 1) return;
  // Chunks keep the count within MPI's int.
  constexpr size_t kChunk = size_t(1) << 28;
  for (size_t off = 0; off < values.size(); off += kChunk) {
    const int n = int(std::min(kChunk, values.size() - off));
    if (MPI_Allreduce(MPI_IN_PLACE, values.data() + off, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
      fail("MPI_Allreduce failed");
  }
  const float inv = 1.0f / float(size_);
  for (float& v : values) v *= inv;
}

double Distributed::mean(double value) const {
  if (size_ == 1) return value;
  double sum = 0;
  if (MPI_Allreduce(&value, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) fail("MPI_Allreduce failed");
  return sum / double(size_);
}

bool Distributed::any(bool value) const {
  if (size_ == 1) return value;
  int in = value ? 1 : 0, out = 0;
  if (MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) fail("MPI_Allreduce failed");
  return out != 0;
}

bool built_with_mpi() { return true; }

#else

Distributed::Distributed() = default;
void Distributed::mean(std::span<float>) const {}
double Distributed::mean(double value) const { return value; }
bool Distributed::any(bool value) const { return value; }
bool built_with_mpi() { return false; }

#endif

Distributed& Distributed::get() {
  static Distributed instance;
  return instance;
}

}  // namespace rwkv::train
