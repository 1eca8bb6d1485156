// The workspace of a training-mode sequence forward: everything its backward reads, in one
// place. This is the one description of its layout.
//
// A forward binding fills a SavedSequence and returns it to Python (rnnkit._core.SavedSequence,
// wrapped by rnnkit.Workspace): an opaque object with read-only fields, which Python can
// neither construct nor modify. The backward binding takes it back and points the driver's
// BackwardArgs (driver.hpp) into it. It holds (letters as in cells.hpp):
//
//   inputs of the forward, by reference   x (T, B, I), W_ih (G*H, I), W_hh (G*H, S),
//                                         W_hr (P, H) with a projection, h0 (B, S) where
//                                         backward rebuilds h_{t-1} from it (!saves_hprev)
//   a copy of lengths (B,)                tiny; callers reuse theirs for the next batch
//   arrays the forward wrote              hprev (T, B, S) (where saves_hprev), cprev (T, B, H)
//                                         (LSTM), gates (T, B, G*H), extra (T, B, H) (LSTM: c_t;
//                                         GRU: its n-gate term), m (T, B, H) (projection),
//                                         keep (T, B, G*H) (with clip: 1 where a gate's
//                                         pre-activation was within the bound, 0 where cut);
//                                         read-only once written
//   fingerprints of the referenced inputs backward refuses inputs changed in place since the
//                                         forward (an optimizer step before backward, a buffer
//                                         refilled with the next batch) instead of returning
//                                         the gradients of arrays that no longer exist
//
// Saved rows past a sequence's length are zero (the whole-sequence GEMMs of backward read them,
// multiplied by zero gradients).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bf16_gemm.hpp"
#include "common.hpp"

namespace rnnkit {

// The cell (and variant) that wrote a workspace; its backward dispatches on it.
enum class CellVariant { kRnnTanh, kRnnRelu, kLstm, kGruResetAfter, kGruResetBefore };

inline const char* family_name(CellVariant v) {
  switch (v) {
    case CellVariant::kRnnTanh:
    case CellVariant::kRnnRelu:
      return "rnn";
    case CellVariant::kLstm:
      return "lstm";
    default:
      return "gru";
  }
}

// A cheap test that an array's contents did not change: a hash of the bytes of up to
// kFingerprintSamples elements spread evenly over it (the first and the last included). An
// in-place update of the whole array changes it; one of a few elements may escape it (the
// documented limit). Cost, measured for the x, W_ih and W_hh of an LSTM (50, 1, 128) call on
// Zen 5: 0.7 us (2.4 us with a division per sample, same run), once in forward and once in
// backward: 0.3% of that call's 443 us training step.
constexpr index_t kFingerprintSamples = 128;

inline std::uint64_t fingerprint(const pybind11::array& a) {
  const index_t n = a.size(), item = a.itemsize();
  const auto* bytes = static_cast<const unsigned char*>(a.data());
  std::uint64_t hash = 1469598103934665603ull;  // FNV-1a
  auto mix = [&](index_t i) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes + i * item, item < 8 ? item : 8);
    hash ^= word;
    hash *= 1099511628211ull;
  };
  hash ^= std::uint64_t(n);
  if (n == 0) return hash;
  const index_t samples = n < kFingerprintSamples ? n : kFingerprintSamples;
  const index_t stride = samples > 1 ? (n - 1) / (samples - 1) : 1;
  for (index_t k = 0; k + 1 < samples; ++k) mix(k * stride);
  mix(n - 1);
  return hash;
}

struct SavedSequence {
  CellVariant variant;
  bool reverse, has_b_ih, has_b_hh;
  pybind11::array x, W_ih, W_hh;
  Bf16Kernel bf16 = Bf16Kernel::kNone;  // precision="bf16": the kernel its forward ran on
  bool has_clip = false;                // the forward ran the Clip cell (cells.hpp) with this bound
  double clip = 0.0;
  bool input_forget = false;                   // LSTM: the forward ran the Coupled cell (f = 1 - i)
  pybind11::object W_peep = pybind11::none();  // LSTM: the Peep cell's weights (3, H), or None
  // Arrays or None (a default py::object is a null handle, not None).
  pybind11::object W_hr = pybind11::none(), h0 = pybind11::none(), lengths = pybind11::none();
  pybind11::object hprev = pybind11::none(), cprev = pybind11::none(), gates = pybind11::none(),
                   extra = pybind11::none(), m = pybind11::none(), keep = pybind11::none();

  struct Fingerprinted {
    const char* name;
    pybind11::array array;
    std::uint64_t hash;
  };
  std::vector<Fingerprinted> inputs;

  // Record the inputs' fingerprints (call once the fields are set).
  void fingerprint_inputs() {
    inputs.clear();
    auto add = [&](const char* name, const pybind11::object& a) {
      if (!a.is_none()) {
        auto arr = pybind11::reinterpret_borrow<pybind11::array>(a);
        inputs.push_back({name, arr, fingerprint(arr)});
      }
    };
    add("x", x);
    add("W_ih", W_ih);
    add("W_hh", W_hh);
    add("W_hr", W_hr);
    add("W_peep", W_peep);
    add("h0", h0);
  }

  // ValueError naming the first input whose contents changed since the forward.
  void check_inputs_unchanged() const {
    for (const Fingerprinted& f : inputs)
      if (fingerprint(f.array) != f.hash)
        throw std::invalid_argument(
            std::string("workspace: ") + f.name +
            " was modified in place after the forward that made this workspace (its contents "
            "changed); backward needs the arrays that forward read: run the forward again, or "
            "give it a copy");
  }

  bool is_float64() const { return x.itemsize() == 8; }  // x is float32 or float64

  // Bytes of the arrays the forward wrote (the inputs are references).
  std::int64_t nbytes() const {
    std::int64_t n = 0;
    for (const pybind11::object* a : {&hprev, &cprev, &gates, &extra, &m, &keep})
      if (!a->is_none()) n += pybind11::reinterpret_borrow<pybind11::array>(*a).nbytes();
    return n;
  }
};

}  // namespace rnnkit
