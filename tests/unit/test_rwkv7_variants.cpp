// RWKV-7 release variants: DeepEmbed (RWKV-7a) models are detected from their
// tensors, reported by `rwkv info`, and match the float64 reference
// (tests/reference/rwkv7_reference.py, checked against ChatRWKV's
// RWKV_DE_VERSION=1 code) at every position in RNN and sequence mode;
// incomplete DeepEmbed sets, stray tensors and RWKV-7b's attention are refused
// with errors naming the tensors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <numeric>

#include "core/error.h"
#include "formats/npy.h"
#include "formats/open.h"
#include "model/loader.h"
#include "test_model_util.h"
#include "test_util.h"

namespace rwkv {
namespace {

using test::chunked_logits;
using test::read_tokens;
using test::stddev;

using test::fixture_path;
using test::max_abs_diff;

const char* const kDeepEmbed = "rwkv7/rand-v7a-deepembed-L3-C128-hs32-V512-bf16";

// The fixture's tensors, minus those `drop` selects, plus `extra` (views of
// the fixture's data under other names).
std::shared_ptr<TensorArchive> edited(const std::function<bool(const std::string&)>& drop,
                                      const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  const auto src = open_tensor_archive(fixture_path(std::string(kDeepEmbed) + ".pth"));
  auto out = std::make_shared<TensorArchive>();
  out->format = src->format;
  out->path = src->path;
  out->keep_alive(src);
  for (const TensorInfo& t : src->tensors())
    if (!drop(t.name)) out->add(t);
  for (const auto& [name, like] : extra) {
    TensorInfo t = *src->find(like);
    t.name = name;
    out->add(t);
  }
  return out;
}

std::string load_error(std::shared_ptr<const TensorArchive> archive) {
  try {
    load_model(std::move(archive));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// float32 against float64, normalised by the logits' spread: measured 2e-6
// to 3e-6 for the plain random models; 1e-4 is the project's tolerance for
// them (a real mistake shows at 1e-2 or more; dropping the gate moves these
// logits by 0.9 std).
constexpr float kReferenceTolerance = 1e-4f;

TEST(Rwkv7DeepEmbed, IsDetectedFromItsTensors) {
  const auto model = load_model(fixture_path(std::string(kDeepEmbed) + ".pth"));
  EXPECT_EQ(model->config().arch, Arch::V7);
  EXPECT_EQ(model->config().variant, "x070a (DeepEmbed)");
  EXPECT_EQ(model->config().deep_embed, 32);
  EXPECT_EQ(model->config().n_layer, 3);
  EXPECT_EQ(detect_v7_variant(*open_tensor_archive(fixture_path("rwkv7/rand-v7-L4-C128-hs32-V512-bf16.pth"))),
            V7Variant::Plain);
  const auto plain = load_model(fixture_path("rwkv7/rand-v7-L4-C128-hs32-V512-bf16.pth"));
  EXPECT_EQ(plain->config().variant, "x070");
  EXPECT_EQ(plain->config().deep_embed, 0);
  // No recurrent state of its own: the same state as a plain model of the shape.
  EXPECT_EQ(model->state_size(), size_t(3 * (2 * 128 + 4 * 32 * 32)));
}

TEST(Rwkv7DeepEmbed, InfoReportsTheVariant) {
  const auto r = test::run_cli("info -m " + fixture_path(std::string(kDeepEmbed) + ".pth"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("variant: x070a (DeepEmbed)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("version: 7"), std::string::npos) << r.output;
}

TEST(Rwkv7DeepEmbed, MatchesTheReferenceAtEveryPositionInEveryMode) {
  const std::string base = fixture_path(kDeepEmbed);
  const auto model = load_model(base + ".pth");
  const auto tokens = read_tokens(base + ".tokens.txt");
  const auto reference = read_npy_f32(base + ".logits.npy");
  ASSERT_EQ(reference.shape, (std::vector<int64_t>{int64_t(tokens.size()), model->config().n_vocab}));
  const float spread = stddev(reference.data);
  ASSERT_GT(spread, 0.1f);
  for (int64_t chunk : {int64_t(1), int64_t(7), int64_t(16), int64_t(tokens.size())}) {
    SCOPED_TRACE(chunk);
    const float err = max_abs_diff(chunked_logits(*model, tokens, chunk), reference.data) / spread;
    std::cout << "[ measured ] DeepEmbed chunk " << chunk << ": max abs / std " << err << "\n";
    EXPECT_LE(err, kReferenceTolerance);
  }
}

TEST(Rwkv7DeepEmbed, TheGateIsNotANoOp) {
  // Without its DeepEmbed tensors the file is a plain x070 model; its logits
  // must differ clearly, or the tests above would not test the gate.
  const auto tokens = read_tokens(fixture_path(std::string(kDeepEmbed) + ".tokens.txt"));
  const auto with = chunked_logits(*load_model(fixture_path(std::string(kDeepEmbed) + ".pth")), tokens, 16);
  const auto plain = load_model(edited([](const std::string& n) { return n.find(".ffn.s") != std::string::npos; }));
  EXPECT_EQ(plain->config().variant, "x070");
  EXPECT_GT(max_abs_diff(chunked_logits(*plain, tokens, 16), with) / stddev(with), 0.3f);
}

TEST(Rwkv7DeepEmbed, RaggedBatchEqualsSeparateCalls) {
  // The gate reads each row's own token: rows of several sequences in one call
  // must not mix them up.
  const auto model = load_model(fixture_path(std::string(kDeepEmbed) + ".pth"));
  const auto all = read_tokens(fixture_path(std::string(kDeepEmbed) + ".tokens.txt"));
  const std::vector<std::vector<int32_t>> seqs = {{all.begin(), all.begin() + 5},
                                                  {all.begin() + 5, all.begin() + 6},
                                                  {all.begin() + 6, all.begin() + 26}};
  const int64_t V = model->config().n_vocab;
  std::vector<State> states;
  std::vector<std::vector<float>> outs;
  for (const auto& s : seqs) {
    states.push_back(model->new_state());
    outs.emplace_back(s.size() * size_t(V));
  }
  std::vector<BatchItem> items;
  for (size_t i = 0; i < seqs.size(); ++i) items.push_back({seqs[i], &states[i], Logits::All, outs[i]});
  model->forward_batch(items);
  // Same math in another summation order (one GEMM of 26 rows vs three):
  // float32 rounding, ~5e-6 of the logits' spread; a gate reading another
  // row's token would be off by ~1.
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto alone = chunked_logits(*model, seqs[i], int64_t(seqs[i].size()));
    EXPECT_LE(max_abs_diff(outs[i], alone) / stddev(alone), kReferenceTolerance) << "sequence " << i;
  }
}

TEST(Rwkv7DeepEmbed, IncompleteOrStrayTensorsAreRefusedByName) {
  // One DeepEmbed tensor missing in one layer.
  std::string e = load_error(edited([](const std::string& n) { return n == "blocks.2.ffn.s2"; }));
  EXPECT_NE(e.find("missing tensor 'blocks.2.ffn.s2'"), std::string::npos) << e;
  // DeepEmbed tensors without s_emb: not DeepEmbed, so they are unknown tensors.
  e = load_error(edited([](const std::string& n) { return n.find(".ffn.s_emb") != std::string::npos; }));
  EXPECT_NE(e.find("unexpected tensors"), std::string::npos) << e;
  EXPECT_NE(e.find("'blocks.0.ffn.s1'"), std::string::npos) << e;
  // A tensor no variant has.
  e = load_error(edited([](const std::string&) { return false; }, {{"blocks.1.ffn.s3", "blocks.1.ffn.s0"}}));
  EXPECT_NE(e.find("unexpected tensors 'blocks.1.ffn.s3'"), std::string::npos) << e;
  // A wrong shape.
  e = load_error(edited([](const std::string& n) { return n == "blocks.1.ffn.s2"; },
                        {{"blocks.1.ffn.s2", "blocks.1.ffn.s_emb_x.weight"}}));
  EXPECT_NE(e.find("'blocks.1.ffn.s2' has shape [1024, 128], expected [32, 512]"), std::string::npos) << e;
}

TEST(Rwkv7DeepEmbed, Rwkv7bAttentionIsRefusedByName) {
  const auto archive =
      edited([](const std::string&) { return false; }, {{"blocks.0.qkv.qq.weight", "blocks.0.att.key.weight"},
                                                       {"blocks.0.qkv.k1", "blocks.0.ffn.s1"}});
  const std::string e = load_error(archive);
  EXPECT_NE(e.find("RWKV-7b"), std::string::npos) << e;
  EXPECT_NE(e.find("'blocks.0.qkv.qq.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("KV cache"), std::string::npos) << e;
}

}  // namespace
}  // namespace rwkv
