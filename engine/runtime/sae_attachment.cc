// An SAE inside the step (SAELens's SAE.forward with its hook points): on the rows of the
// sequences that attached it, gathered back to back,
//   input = x;  s = norm_in(x) − b_dec·apply_b_dec_to_input;  acts_pre = s·W_enc + b_enc;
//   acts_post = act(acts_pre);  recons = acts_post·W_dec + b_dec;  error = x − norm_out(recons);
//   output = x (error kept, nothing edited) or norm_out(recons) (spliced).
// Only what is read runs: with the error kept the decoder runs only when recons or error is
// captured.
// Each row's arithmetic depends on that row alone, so results do not depend on the batch.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/backend/gradient_ops.h"
#include "engine/runtime/sae.h"
#include "engine/runtime/step_context.h"
#include "engine/runtime/step_hooks.h"

namespace lensd {
namespace {

// A row whose active features are at most 1/kSparseRatio of d_sae decodes sparsely.
constexpr int64_t kSparseRatio = 8;

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
  Attachment(std::shared_ptr<const Sae> sae, bool splice, std::vector<FeatureEdit> edits)
      : sae_(std::move(sae)), splice_(splice), edits_(std::move(edits)) {}
  HookId site() const override { return sae_->spec_.site; }
  void Run(RankContext& c, TensorView rows, const std::vector<int>& seqs) const override;
  int64_t Width(AttachedHook h) const override {
    const bool features = h == AttachedHook::kSaeActsPre || h == AttachedHook::kSaeActsPost;
    return features ? sae_->spec_.d_sae : sae_->spec_.d_in;
  }
  bool ChangesStream() const override { return splice_ || !edits_.empty(); }
  absl::Status CheckGradients() const override;
  void Backward(RankContext& g, TensorView rows, TensorView d,
                const std::vector<int>& seqs) const override;

 private:
  // One Run's state: the attached sequences' rows gathered back to back (`ids` the step rows,
  // `first` where each sequence starts), on this rank's device weights.
  struct Step {
    RankContext& c;
    const std::vector<int>& seqs;
    const DeviceWeights& weights;
    std::vector<int32_t> ids;
    std::vector<int> first;
    int64_t n;
  };
  // The attached sequences' step rows.
  Step StepOf(RankContext& c, const std::vector<int>& seqs) const;
  // acts_pre [n, d_sae] (device) from the input rows `in`, emitting it; `scale`, `shift`
  // undo the input normalisation.
  TensorView Preactivations(const Step& st, const std::vector<float>& in, std::vector<float>& scale,
                            std::vector<float>& shift) const;
  // acts_post [n, d_sae] (host) from the input rows `in`, emitting acts_pre; `scale`, `shift`
  // undo the input normalisation.
  std::vector<float> Encode(const Step& st, const std::vector<float>& in,
                            std::vector<float>& scale, std::vector<float>& shift) const;
  // The edits on acts_post [n, d_sae] (host, in place); per row, whether one applied. With
  // `rules`, their gradient rules on acts_post's gradient instead: zero and set cut, scale
  // multiplies, add passes.
  std::vector<char> ApplyEdits(const Step& st, std::vector<float>& acts, bool rules = false) const;
  // norm_out(recons) [n, d_in] (host) from acts_post (`acts`, overwritten), emitting recons
  // when `emit`.
  std::vector<float> Decode(const Step& st, std::vector<float>& acts,
                            const std::vector<float>& scale, const std::vector<float>& shift,
                            bool emit) const;
  // acts_post from acts_pre [n, d_sae] (host, in place).
  void Activate(int64_t n, float* acts) const;
  bool Wanted(const Step& st, std::initializer_list<AttachedHook> hooks) const;
  void Emit(const Step& st, AttachedHook h, TensorView value) const {
    EmitAttached(st.c, AttachedAt(site(), h), value, st.seqs, st.first);
  }
  // The attached sequences' rows `host` [n, w] into their step rows of `all` [T, w].
  static void Scatter(const Step& st, const std::vector<float>& host, TensorView all) {
    const int64_t w = all.shape[1];
    std::vector<float> rows(static_cast<size_t>(all.NumElements()));
    st.c.b.Download(all, rows.data());
    for (int64_t r = 0; r < st.n; ++r) {
      std::copy_n(host.data() + r * w, w, rows.data() + st.ids[r] * w);
    }
    st.c.b.Upload(rows.data(), all);
  }
  // `host` [n, w] into step scratch on the device.
  static TensorView Staged(RankContext& c, const std::vector<float>& host, int64_t w) {
    TensorView t = c.Scratch({static_cast<int64_t>(host.size()) / w, w});
    c.b.Upload(host.data(), t);
    return t;
  }

  std::shared_ptr<const Sae> sae_;
  bool splice_;
  std::vector<FeatureEdit> edits_;
};

void Sae::Attachment::Activate(int64_t n, float* acts) const {
  const SaeSpec& s = sae_->spec_;
  const int64_t f = s.d_sae;
  std::vector<int32_t> order(static_cast<size_t>(f));
  std::vector<float> kept(static_cast<size_t>(f));
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
        std::fill(kept.begin(), kept.end(), 0.0f);
        for (int j = 0; j < s.k; ++j) kept[order[j]] = std::max(a[order[j]], 0.0f);
        std::copy(kept.begin(), kept.end(), a);
        break;
      }
    }
  }
}

Sae::Attachment::Step Sae::Attachment::StepOf(RankContext& c, const std::vector<int>& seqs) const {
  Step st{c, seqs, sae_->devices_.at(&c.b), {}, {}, 0};
  for (int seq : seqs) {  // the attached sequences' rows, back to back
    st.first.push_back(static_cast<int>(st.ids.size()));
    const int n = static_cast<int>((*c.plan.batch)[seq].tokens.size());
    for (int i = 0; i < n; ++i) st.ids.push_back(c.plan.q_begin[seq] + i);
  }
  st.n = static_cast<int64_t>(st.ids.size());
  return st;
}

void Sae::Attachment::Run(RankContext& c, TensorView rows, const std::vector<int>& seqs) const {
  const SaeSpec& s = sae_->spec_;
  const int64_t w = s.d_in;
  const Step st = StepOf(c, seqs);
  TensorView x = c.Scratch({st.n, w});
  c.b.Gather(rows, st.ids.data(), x);
  Emit(st, AttachedHook::kSaeInput, x);
  std::vector<float> in(static_cast<size_t>(st.n * w)), scale, shift;
  c.b.Download(x, in.data());
  std::vector<float> acts = Encode(st, in, scale, shift), clean;
  if (!edits_.empty()) clean = acts;
  const std::vector<char> edited = ApplyEdits(st, acts);
  const bool any = std::find(edited.begin(), edited.end(), 1) != edited.end();
  if (Wanted(st, {AttachedHook::kSaeActsPost})) {
    Emit(st, AttachedHook::kSaeActsPost, Staged(c, acts, s.d_sae));
  }
  // The decoder runs when its output is used or read; error kept and nothing edited, the
  // model's value flows on as it was.
  const bool stream = splice_ || any;
  std::vector<float> out, error(in.size());
  if (stream || Wanted(st, {AttachedHook::kSaeRecons, AttachedHook::kSaeError})) {
    out = Decode(st, acts, scale, shift, true);
    const std::vector<float> clean_out = any ? Decode(st, clean, scale, shift, false) : out;
    for (size_t i = 0; i < in.size(); ++i) error[i] = in[i] - clean_out[i];
    if (Wanted(st, {AttachedHook::kSaeError}))
      Emit(st, AttachedHook::kSaeError, Staged(c, error, w));
  }
  if (!stream) {
    Emit(st, AttachedHook::kSaeOutput, x);
    return;
  }
  // Spliced: the reconstruction; edited with the error kept: edited reconstruction + error;
  // other rows as they were.
  for (int64_t r = 0; r < st.n && !splice_; ++r) {
    for (int64_t i = 0; i < w; ++i) {
      float& y = out[r * w + i];
      y = edited[r] ? y + error[r * w + i] : in[r * w + i];
    }
  }
  if (Wanted(st, {AttachedHook::kSaeOutput})) Emit(st, AttachedHook::kSaeOutput, Staged(c, out, w));
  Scatter(st, out, rows);
}

TensorView Sae::Attachment::Preactivations(const Step& st, const std::vector<float>& in,
                                           std::vector<float>& scale,
                                           std::vector<float>& shift) const {
  const SaeSpec& s = sae_->spec_;
  const int64_t w = s.d_in, f = s.d_sae, n = st.n;
  std::vector<float> work = in;
  NormalizeIn(s.norm, n, w, work.data(), scale, shift);
  for (int64_t r = 0; r < n && s.apply_b_dec_to_input; ++r) {
    for (int64_t i = 0; i < w; ++i) work[r * w + i] -= sae_->host_.b_dec[i];
  }
  TensorView pre = st.c.Scratch({n, f});
  st.c.b.Linear(Staged(st.c, work, w), st.weights.w_enc.view(), st.weights.b_enc.view(), pre);
  return pre;
}

absl::Status Sae::Attachment::CheckGradients() const {
  if (sae_->spec_.norm == SaeSpec::Norm::kNone) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("gradients through SAE '", sae_->spec_.name,
                   "' are not supported: its normalize_activations is not none"));
}

// SAELens's gradient: the error term is a constant (computed without gradient), so what
// reaches the input goes through the encoder and decoder, spliced or not.
void Sae::Attachment::Backward(RankContext& g, TensorView rows, TensorView d,
                               const std::vector<int>& seqs) const {
  const SaeSpec& s = sae_->spec_;
  const int64_t w = s.d_in, f = s.d_sae;
  const Step st = StepOf(g, seqs);
  TensorView x = g.Scratch({st.n, w}), d_out = g.Scratch({st.n, w});
  g.b.Gather(rows, st.ids.data(), x);
  g.b.Gather(d, st.ids.data(), d_out);
  for (AttachedHook h :
       {AttachedHook::kSaeOutput, AttachedHook::kSaeError, AttachedHook::kSaeRecons}) {
    Emit(st, h, d_out);
  }
  GradientOps& ops = *g.b.gradients();
  TensorView d_post = g.Scratch({st.n, f});
  ops.LinearBackward(d_out, st.weights.w_dec.view(), d_post);
  std::vector<float> da(static_cast<size_t>(st.n * f));
  g.b.Download(d_post, da.data());
  for (int64_t r = 0; r < st.n && s.rescale_acts_by_decoder_norm; ++r) {
    for (int64_t i = 0; i < f; ++i) da[r * f + i] /= sae_->host_.decoder_norm[i];
  }
  Emit(st, AttachedHook::kSaeActsPost, Staged(g, da, f));
  ApplyEdits(st, da, /*rules=*/true);
  // The activation's slope at the recomputed preactivations: 1 where a feature passed.
  std::vector<float> in(static_cast<size_t>(st.n * w)), scale, shift;
  g.b.Download(x, in.data());
  std::vector<float> pre(static_cast<size_t>(st.n * f));
  g.b.Download(Preactivations(st, in, scale, shift), pre.data());
  std::vector<float> acts = pre;
  Activate(st.n, acts.data());
  for (int64_t i = 0; i < st.n * f; ++i) {
    const float slope = s.rescale_acts_by_decoder_norm ? sae_->host_.decoder_norm[i % f] : 1.0f;
    da[i] = acts[i] > 0.0f ? da[i] * slope : 0.0f;
  }
  Emit(st, AttachedHook::kSaeActsPre, Staged(g, da, f));
  TensorView dx = g.Scratch({st.n, w});
  ops.LinearBackward(Staged(g, da, f), st.weights.w_enc.view(), dx);
  Emit(st, AttachedHook::kSaeInput, dx);
  std::vector<float> grad(in.size());
  g.b.Download(dx, grad.data());
  Scatter(st, grad, d);
}

std::vector<float> Sae::Attachment::Encode(const Step& st, const std::vector<float>& in,
                                           std::vector<float>& scale,
                                           std::vector<float>& shift) const {
  const int64_t f = sae_->spec_.d_sae, n = st.n;
  TensorView pre = Preactivations(st, in, scale, shift);
  Emit(st, AttachedHook::kSaeActsPre, pre);
  std::vector<float> acts(static_cast<size_t>(n * f));
  st.c.b.Download(pre, acts.data());
  Activate(n, acts.data());
  return acts;
}

std::vector<char> Sae::Attachment::ApplyEdits(const Step& st, std::vector<float>& acts,
                                              bool rules) const {
  std::vector<char> edited(static_cast<size_t>(st.n), 0);
  const int64_t f = sae_->spec_.d_sae;
  for (size_t k = 0; k < st.seqs.size() && !edits_.empty(); ++k) {
    const SeqInput& in = (*st.c.plan.batch)[st.seqs[k]];
    const size_t p = static_cast<size_t>(in.prompt_index);
    for (int i = 0; i < static_cast<int>(in.tokens.size()); ++i) {
      const int64_t r = st.first[k] + i;
      for (const FeatureEdit& e : edits_) {
        if (p >= e.positions.size() || !e.positions[p] ||
            e.positions[p]->IndexOf(in.start_pos + i) < 0) {
          continue;
        }
        edited[r] = 1;
        for (size_t j = 0; j < e.features.size(); ++j) {
          float& a = acts[r * f + e.features[j]];
          switch (e.op) {
            case FeatureEdit::Op::kZero:
              a = 0.0f;
              break;
            case FeatureEdit::Op::kScale:
              a *= e.values[j];
              break;
            case FeatureEdit::Op::kSet:
              a = rules ? 0.0f : e.values[j];
              break;
            case FeatureEdit::Op::kAdd:
              a += rules ? 0.0f : e.values[j];
              break;
          }
        }
      }
    }
  }
  return edited;
}

std::vector<float> Sae::Attachment::Decode(const Step& st, std::vector<float>& acts,
                                           const std::vector<float>& scale,
                                           const std::vector<float>& shift, bool emit) const {
  const SaeSpec& s = sae_->spec_;
  const int64_t w = s.d_in, f = s.d_sae, n = st.n;
  if (s.rescale_acts_by_decoder_norm) {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < f; ++i) acts[r * f + i] /= sae_->host_.decoder_norm[i];
    }
  }
  // Rows with few active features sum their decoder rows on the host, in feature order; the
  // others go through the decoder matrix. The choice is the row's own: a row's reconstruction
  // does not depend on its batch.
  std::vector<float> out(static_cast<size_t>(n * w));
  std::vector<int32_t> dense;
  for (int64_t r = 0; r < n; ++r) {
    const float* a = acts.data() + r * f;
    if (std::count_if(a, a + f, [](float x) { return x != 0.0f; }) * kSparseRatio > f) {
      dense.push_back(static_cast<int32_t>(r));
      continue;
    }
    float* y = out.data() + r * w;
    std::copy_n(sae_->host_.b_dec.data(), w, y);
    for (int64_t j = 0; j < f; ++j) {
      if (a[j] == 0.0f) continue;
      const float* row = sae_->host_.w_dec.data() + j * w;
      for (int64_t i = 0; i < w; ++i) y[i] += a[j] * row[i];
    }
  }
  if (!dense.empty()) {
    const int64_t m = static_cast<int64_t>(dense.size());
    std::vector<float> rows(static_cast<size_t>(m * f)), decoded(static_cast<size_t>(m * w));
    for (int64_t k = 0; k < m; ++k) std::copy_n(acts.data() + dense[k] * f, f, rows.data() + k * f);
    TensorView recons = st.c.Scratch({m, w});
    st.c.b.Linear(Staged(st.c, rows, f), st.weights.w_dec.view(), st.weights.b_dec.view(), recons);
    st.c.b.Download(recons, decoded.data());
    for (int64_t k = 0; k < m; ++k)
      std::copy_n(decoded.data() + k * w, w, out.data() + dense[k] * w);
  }
  if (emit && Wanted(st, {AttachedHook::kSaeRecons})) {
    Emit(st, AttachedHook::kSaeRecons, Staged(st.c, out, w));
  }
  for (int64_t r = 0; r < n; ++r) {  // norm_out
    for (int64_t i = 0; i < w; ++i) out[r * w + i] = out[r * w + i] * scale[r] + shift[r];
  }
  return out;
}

bool Sae::Attachment::Wanted(const Step& st, std::initializer_list<AttachedHook> hooks) const {
  HookSink* sink = st.c.plan.hooks;
  if (sink == nullptr) return false;
  for (int seq : st.seqs) {
    for (AttachedHook h : hooks) {
      if (sink->Wants(seq, AttachedAt(site(), h))) return true;
    }
  }
  return false;
}

std::shared_ptr<const HookAttachment> Sae::Attach(bool splice,
                                                  std::vector<FeatureEdit> edits) const {
  return std::make_shared<Attachment>(shared_from_this(), splice, std::move(edits));
}

}  // namespace lensd
