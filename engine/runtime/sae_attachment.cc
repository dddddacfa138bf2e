// An SAE inside the step (SAELens's SAE.forward with its hook points): on the rows of the
// sequences that attached it, gathered back to back,
//   input = x;  s = norm_in(x) − b_dec·apply_b_dec_to_input;  acts_pre = s·W_enc + b_enc;
//   acts_post = act(acts_pre);  recons = acts_post·W_dec + b_dec;  error = x − norm_out(recons);
//   output = x (error kept, nothing edited) or norm_out(recons) (spliced).
// Each row's arithmetic depends on that row alone, so results do not depend on the batch.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/runtime/sae.h"
#include "engine/runtime/step_context.h"
#include "engine/runtime/step_hooks.h"

namespace lensd {
namespace {

// SAELens's run-time normalisation of rows x [n, w] in place, and what undoes it per row:
// norm_out(y) = y · scale[r] + shift[r].
void NormalizeIn(SaeSpec::Norm norm, int64_t n, int64_t w, float* x, std::vector<float>& scale,
                 std::vector<float>& shift) {
  scale.assign(static_cast<size_t>(n), 1.0f);
  shift.assign(static_cast<size_t>(n), 0.0f);
  for (int64_t r = 0; r < n && norm != SaeSpec::Norm::kNone; ++r) {
    float* row = x + r * w;
    if (norm == SaeSpec::Norm::kConstantNormRescale) {  // x · √w / ‖x‖
      double sq = 0;
      for (int64_t i = 0; i < w; ++i) sq += double{row[i]} * row[i];
      const float coeff = static_cast<float>(std::sqrt(static_cast<double>(w)) / std::sqrt(sq));
      for (int64_t i = 0; i < w; ++i) row[i] *= coeff;
      scale[r] = 1.0f / coeff;
      continue;
    }
    // layer_norm: (x − μ) / (σ + 1e-5), σ the unbiased standard deviation (torch.std).
    double sum = 0;
    for (int64_t i = 0; i < w; ++i) sum += row[i];
    const float mu = static_cast<float>(sum / w);
    double var = 0;
    for (int64_t i = 0; i < w; ++i) var += double{row[i] - mu} * (row[i] - mu);
    const float sd = static_cast<float>(std::sqrt(var / static_cast<double>(w - 1)));
    for (int64_t i = 0; i < w; ++i) row[i] = (row[i] - mu) / (sd + 1e-5f);
    scale[r] = sd, shift[r] = mu;
  }
}

}  // namespace

class Sae::Attachment : public HookAttachment {
 public:
  Attachment(std::shared_ptr<const Sae> sae, bool splice) : sae_(std::move(sae)), splice_(splice) {}
  HookId site() const override { return sae_->spec_.site; }
  void Run(RankContext& c, TensorView rows, const std::vector<int>& seqs) const override;
  int64_t Width(AttachedHook h) const override {
    const bool features = h == AttachedHook::kSaeActsPre || h == AttachedHook::kSaeActsPost;
    return features ? sae_->spec_.d_sae : sae_->spec_.d_in;
  }
  bool ChangesStream() const override { return splice_; }

 private:
  // acts_post from acts_pre [n, d_sae] (host, in place).
  void Activate(int64_t n, float* acts) const;
  // `host` [n, w] into step scratch on the device.
  TensorView Staged(RankContext& c, const std::vector<float>& host, int64_t w) const {
    TensorView t = c.Scratch({static_cast<int64_t>(host.size()) / w, w});
    c.b.Upload(host.data(), t);
    return t;
  }

  std::shared_ptr<const Sae> sae_;
  bool splice_;
};

void Sae::Attachment::Activate(int64_t n, float* acts) const {
  const SaeSpec& s = sae_->spec_;
  const int64_t f = s.d_sae;
  std::vector<int32_t> order(static_cast<size_t>(f));
  for (int64_t r = 0; r < n; ++r) {
    float* a = acts + r * f;
    switch (s.kind) {
      case SaeSpec::Kind::kStandard:
        for (int64_t i = 0; i < f; ++i) a[i] = std::max(a[i], 0.0f);
        break;
      case SaeSpec::Kind::kJumpRelu:
        for (int64_t i = 0; i < f; ++i)
          a[i] = a[i] > sae_->host_.threshold[i] ? std::max(a[i], 0.0f) : 0.0f;
        break;
      case SaeSpec::Kind::kTopK: {
        if (s.rescale_acts_by_decoder_norm) {
          for (int64_t i = 0; i < f; ++i) a[i] *= sae_->host_.decoder_norm[i];
        }
        std::iota(order.begin(), order.end(), 0);
        // The k largest (ties to the lower index), ReLU'd; the rest 0.
        std::nth_element(
            order.begin(), order.begin() + (s.k - 1), order.end(),
            [a](int32_t x, int32_t y) { return a[x] > a[y] || (a[x] == a[y] && x < y); });
        std::vector<float> kept(static_cast<size_t>(f), 0.0f);
        for (int j = 0; j < s.k; ++j) kept[order[j]] = std::max(a[order[j]], 0.0f);
        std::copy(kept.begin(), kept.end(), a);
        break;
      }
    }
  }
}

void Sae::Attachment::Run(RankContext& c, TensorView rows, const std::vector<int>& seqs) const {
  const SaeSpec& s = sae_->spec_;
  const DeviceWeights& dw = sae_->devices_.at(&c.b);
  const int64_t w = s.d_in, f = s.d_sae;
  // The attached sequences' rows, back to back; `first`: where each starts.
  std::vector<int32_t> ids;
  std::vector<int> first;
  for (int seq : seqs) {
    first.push_back(static_cast<int>(ids.size()));
    const int n = static_cast<int>((*c.plan.batch)[seq].tokens.size());
    for (int i = 0; i < n; ++i) ids.push_back(c.plan.q_begin[seq] + i);
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  auto Emit = [&](AttachedHook h, TensorView value) {
    EmitAttached(c, AttachedAt(site(), h), value, seqs, first);
  };
  TensorView x = c.Scratch({n, w});
  c.b.Gather(rows, ids.data(), x);
  Emit(AttachedHook::kSaeInput, x);
  std::vector<float> in(static_cast<size_t>(n * w)), work(in.size()), scale, shift;
  c.b.Download(x, in.data());
  work = in;
  NormalizeIn(s.norm, n, w, work.data(), scale, shift);
  for (int64_t r = 0; r < n && s.apply_b_dec_to_input; ++r) {
    for (int64_t i = 0; i < w; ++i) work[r * w + i] -= sae_->host_.b_dec[i];
  }
  TensorView pre = c.Scratch({n, f});
  c.b.Linear(Staged(c, work, w), dw.w_enc.view(), dw.b_enc.view(), pre);
  Emit(AttachedHook::kSaeActsPre, pre);
  std::vector<float> acts(static_cast<size_t>(n * f));
  c.b.Download(pre, acts.data());
  Activate(n, acts.data());
  const TensorView post = Staged(c, acts, f);
  Emit(AttachedHook::kSaeActsPost, post);
  if (s.rescale_acts_by_decoder_norm) {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < f; ++i) acts[r * f + i] /= sae_->host_.decoder_norm[i];
    }
  }
  TensorView recons = c.Scratch({n, w});
  c.b.Linear(s.rescale_acts_by_decoder_norm ? Staged(c, acts, f) : post, dw.w_dec.view(),
             dw.b_dec.view(), recons);
  Emit(AttachedHook::kSaeRecons, recons);
  std::vector<float> out(in.size()), error(in.size());
  c.b.Download(recons, out.data());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < w; ++i) {
      float& y = out[r * w + i];
      y = y * scale[r] + shift[r];
      error[r * w + i] = in[r * w + i] - y;
    }
  }
  Emit(AttachedHook::kSaeError, Staged(c, error, w));
  if (!splice_) {
    Emit(AttachedHook::kSaeOutput, x);
    return;
  }
  const TensorView spliced = Staged(c, out, w);
  Emit(AttachedHook::kSaeOutput, spliced);
  // The reconstruction replaces the attached sequences' rows of the step.
  std::vector<float> all(static_cast<size_t>(rows.NumElements()));
  c.b.Download(rows, all.data());
  for (int64_t r = 0; r < n; ++r) std::copy_n(out.data() + r * w, w, all.data() + ids[r] * w);
  c.b.Upload(all.data(), rows);
}

std::shared_ptr<const HookAttachment> Sae::Attach(bool splice) const {
  return std::make_shared<Attachment>(shared_from_this(), splice);
}

}  // namespace lensd
