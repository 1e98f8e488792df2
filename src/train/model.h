// RWKV-7 for training: a forward pass over a batch of B sequences of T tokens
// that can be differentiated, and its backward pass giving the gradient of
// the mean cross-entropy for every parameter and for the initial state.
//
// The math is the inference engine's (src/model/rwkv7.cpp), per token and head
// on the state S [value i, key j]:
//   S = S diag(w) + (S (-kk)) (kk a)^T + v k^T,   y = S r.
//
// Memory: the forward keeps only each layer's input [B T, C] (plus layer 0's
// value for the value residual); the backward recomputes one layer at a time
// (gradient checkpointing per layer, as the official --grad_cp 1), and inside
// a layer keeps the wkv state every `chunk_len` tokens, recomputing the states
// in between while going backwards. The head and the loss run over blocks of
// rows so [B T, V] logits are never held at once.
//
// T is float (training, fp32 master weights) or double (gradient checks).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "train/params.h"

namespace rwkv::train {

struct LossOptions {
  // The official L2-wrap: adds 1e-4 / (tokens) * max(logits) to the gradient of
  // each row's largest logit, discouraging logit growth; no effect on the loss.
  bool l2wrap = false;
  // Gradients are those of scale * loss (e.g. 1 / accumulation steps).
  double scale = 1.0;
};

template <typename T>
class TrainModel {
 public:
  explicit TrainModel(const TrainConfig& config, int64_t chunk_len = 16);
  ~TrainModel();
  TrainModel(const TrainModel&) = delete;
  TrainModel& operator=(const TrainModel&) = delete;

  const TrainConfig& config() const { return layout_.config(); }
  const ParamLayout& layout() const { return layout_; }

  // Flat buffers in layout() order.
  std::vector<T> params;
  std::vector<T> grads;
  // The state every sequence starts from, in the engine's layout (per layer:
  // time-mix shift [C], wkv [H, N, N], channel-mix shift [C]); zero by
  // default. Its gradient is summed over the batch.
  std::vector<T> state;
  std::vector<T> state_grad;
  size_t state_size() const;

  // Skip the weight-gradient products (state tuning trains only the state).
  bool param_grads = true;
  // Which tensors get gradients when param_grads is set (one flag per tensor
  // in layout order; empty: all), e.g. only the LoRA-adapted matrices.
  std::vector<bool> grad_mask;
  // Pointers into grads, null for tensors that get no gradient.
  ModelView<T> grad_view();

  // logits [B T, V] after each of tokens [B, T] (row-major, sequence-major).
  void forward_logits(std::span<const int32_t> tokens, int64_t B, int64_t seq_len, T* logits);

  // Mean cross-entropy of predicting targets [B, T] (-1 = not counted) after
  // tokens [B, T]. With backward, adds the gradients of scale * loss to grads
  // and state_grad (callers zero them between steps). Token and target ids are
  // checked against the vocabulary (rwkv::Error). Returns the summed loss and
  // the number of counted targets in `count` when given.
  double loss(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B, int64_t seq_len,
              const LossOptions& options, bool backward, int64_t* count = nullptr);

  void zero_grads();

 private:
  struct Impl;
  ParamLayout layout_;
  int64_t chunk_len_;
  std::unique_ptr<Impl> impl_;
};

extern template class TrainModel<float>;
extern template class TrainModel<double>;

}  // namespace rwkv::train
