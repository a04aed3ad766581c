// Knowledge-distillation cross-entropy (the knowledge_distillation_single_device recipe).
// CPU twin: distillCrossEntropy in src/backend/cpu/layers.ts (same formulas, same argument
// order). Its own module, so the PTX of the kernels already run on a GPU stays as it was.
#include "common.cuh"

// One block per row of logits(N, V), with teacher(N, V) and targets(N):
//   losses(N)    = lse(x) - x[target]                 (the class loss)
//   kd_losses(N) = lse(x) - sum_v q_v x_v, q = softmax(teacher)   (the KD loss)
// both 0 where target = -100 (NaN for any other out-of-range target, which the host checks).
// If dlogits is non-null it is written as (softmax(x) - (1 - r) onehot - r q) * grad_scale,
// zero rows for ignored targets. dlogits may alias logits: all reads of a row's logits that
// the reductions need finish (barriers) before the row is written, and the last pass reads
// each element before the same thread overwrites it.
extern "C" __global__ void distill_cross_entropy(void* losses, int dtl, void* kd_losses, int dtk,
                                                 void* dlogits, int dtd, const void* logits,
                                                 int dtlg, const void* teacher, int dtt,
                                                 const int* targets, int N, int V,
                                                 float kd_ratio, float grad_scale) {
  const int row = blockIdx.x;
  if (row >= N) return;
  const size_t o = (size_t)row * V;
  const int tgt = targets[row];
  if (tgt == -100 || tgt < 0 || tgt >= V) {
    if (threadIdx.x == 0) {
      st(losses, dtl, row, tgt == -100 ? 0.0f : NAN);
      st(kd_losses, dtk, row, tgt == -100 ? 0.0f : NAN);
    }
    if (dlogits != nullptr) {
      for (int j = threadIdx.x; j < V; j += blockDim.x) st(dlogits, dtd, o + j, 0.0f);
    }
    return;
  }
  float ms = -INFINITY, mt = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    ms = fmaxf(ms, ld(logits, dtlg, o + j));
    mt = fmaxf(mt, ld(teacher, dtt, o + j));
  }
  ms = block_max(ms);
  mt = block_max(mt);
  float ss = 0.0f, st_ = 0.0f, cross = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float x = ld(logits, dtlg, o + j);
    const float e = expf(ld(teacher, dtt, o + j) - mt);
    ss += expf(x - ms);
    st_ += e;
    cross += e * x;
  }
  ss = block_sum(ss);
  st_ = block_sum(st_);
  cross = block_sum(cross);  // ends with a barrier
  const float lse = ms + logf(ss);
  const float xt = ld(logits, dtlg, o + tgt);
  if (threadIdx.x == 0) {
    st(losses, dtl, row, lse - xt);
    st(kd_losses, dtk, row, lse - cross / st_);
  }
  if (dlogits == nullptr) return;
  __syncthreads();  // every thread has read logits[tgt] before anyone overwrites it
  const float lt = mt + logf(st_);
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    float g = (expf(ld(logits, dtlg, o + j) - lse) - kd_ratio * expf(ld(teacher, dtt, o + j) - lt)) *
              grad_scale;
    if (j == tgt) g -= (1.0f - kd_ratio) * grad_scale;
    st(dlogits, dtd, o + j, g);
  }
}
