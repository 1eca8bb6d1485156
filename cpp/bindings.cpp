// pybind11 bindings: the private module rnnkit._core.
//
// The Python layer (python/rnnkit/) validates every argument and passes C-contiguous arrays
// of one float dtype; this file only allocates outputs, re-checks the sizes it relies on
// (so a misuse of the private module raises instead of crashing), releases the GIL and calls
// the driver. Each function exists for float32 and float64 (two overloads).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "fp_env.hpp"

#include "blas.hpp"
#include "cells.hpp"
#include "driver.hpp"
#include "fma_peak.hpp"
#include "footprint.hpp"
#include "interrupt_python.hpp"
#include "loss.hpp"
#include "memory.hpp"
#include "pooled_buffer.hpp"
#include "stream.hpp"
#include "team.hpp"
#include "workspace.hpp"

namespace py = pybind11;
using namespace rnnkit;

void bind_attention(pybind11::module_& m);  // attention_bindings.cpp

namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style>;
template <class T>
using OptArray = std::optional<Array<T>>;
using Lengths = std::optional<py::array_t<std::int64_t, py::array::c_style>>;

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

template <class T>
void require_shape(const Array<T>& a, std::initializer_list<index_t> shape, const char* name) {
  bool ok = a.ndim() == index_t(shape.size());
  index_t k = 0;
  for (index_t d : shape) ok = ok && a.shape(k++) == d;
  require(ok, std::string(name) + ": wrong shape");
}

template <class T>
const T* ptr(const OptArray<T>& a) {
  return a ? a->data() : nullptr;
}

// Sizes of a call, read from x (T, B, I), W_hh (G*H, S) and W_hr (P, H) when projecting;
// checks every other argument.
template <class Cell, class T>
SeqShape shape_of(const Array<T>& x, const Array<T>& W_ih, const Array<T>& W_hh, const OptArray<T>& W_hr,
                  const Lengths& lengths, bool reverse) {
  require(x.ndim() == 3, "x: expected 3 dimensions (T, B, I)");
  require(W_hh.ndim() == 2, "W_hh: expected 2 dimensions");
  index_t H = W_hh.shape(1), S = H;
  if (W_hr) {
    require(W_hr->ndim() == 2, "W_hr: expected 2 dimensions (P, H)");
    H = W_hr->shape(1);
    S = W_hr->shape(0);
  }
  SeqShape s{x.shape(0), x.shape(1), x.shape(2), H, S, reverse, nullptr};
  require_shape(W_ih, {Cell::G * H, s.I}, "W_ih");
  require_shape(W_hh, {Cell::G * H, S}, "W_hh");
  if (lengths) {
    require(lengths->ndim() == 1 && lengths->shape(0) == s.B, "lengths: expected shape (B,)");
    s.lengths = lengths->data();
    for (index_t b = 0; b < s.B; ++b)
      require(s.lengths[b] >= 1 && s.lengths[b] <= s.T, "lengths: values must be in [1, T]");
  }
  return s;
}

// The kernel of a call's products: none (the arrays' own precision) for "float32", the CPU's
// bfloat16 kernel for "bf16" (bf16_gemm.hpp). The Python layer checks the same first.
Bf16Kernel precision_kernel(const std::string& precision, bool float64) {
  require(precision == "float32" || precision == "bf16",
          "precision: expected 'float32' or 'bf16', got '" + precision + "'");
  if (precision == "float32") return Bf16Kernel::kNone;
  require(!float64, "precision: 'bf16' is for float32 arrays, got float64 ones");
  const Bf16Kernel kernel = bf16_kernel();
  require(runs_bf16_kernel(kernel), "precision: 'bf16' needs a CPU with AVX512-BF16 or AMX-BF16; this one (" +
                                        cpu_info().model_name + ") has neither");
  return kernel;
}

// Whether a cell is the coupled-gate LSTM (ONNX's input_forget), which its workspace records.
template <class Cell>
constexpr bool is_coupled = false;
template <bool Clip, bool Peep>
constexpr bool is_coupled<LstmCell<Clip, true, Peep>> = true;

template <class Cell, class T>
py::tuple forward(CellVariant variant, const Array<T>& x, const OptArray<T>& h0, const OptArray<T>& c0,
                  const Array<T>& W_ih, const Array<T>& W_hh, const OptArray<T>& b_ih,
                  const OptArray<T>& b_hh, const OptArray<T>& W_hr, const Lengths& lengths, bool reverse,
                  bool training, const std::string& precision, double clip,
                  const OptArray<T>& W_peep = std::nullopt) {
  const Bf16Kernel bf16 = precision_kernel(precision, sizeof(T) == 8);
  SeqShape s = shape_of<Cell>(x, W_ih, W_hh, W_hr, lengths, reverse);
  const index_t T_ = s.T, B = s.B, H = s.H, S = s.S, GH = Cell::G * H;
  if (h0) require_shape(*h0, {B, S}, "h0");
  if (c0) require_shape(*c0, {B, H}, "c0");
  if (b_ih) require_shape(*b_ih, {GH}, "b_ih");
  if (b_hh) require_shape(*b_hh, {GH}, "b_hh");
  if (Cell::kPeep) require_shape(*W_peep, {3, H}, "W_peep");

  Array<T> y = cached_array<T>({T_, B, S}), h_T = cached_array<T>({B, S});
  std::optional<Array<T>> c_T, hprev, cprev, gates, extra, m, keep;
  if (Cell::kHasCellState) c_T = cached_array<T>({B, H});
  SavedSequence w{variant, reverse, bool(b_ih), bool(b_hh), x, W_ih, W_hh};
  w.bf16 = bf16;
  w.has_clip = Cell::kClip;
  w.clip = clip;
  w.input_forget = is_coupled<Cell>;
  if (training) {
    // The workspace's layout (workspace.hpp). Rows past a sequence's length are never written;
    // they must be zero because backward's whole-sequence GEMMs read them.
    auto make = [&](std::vector<index_t> shape) {
      Array<T> a = cached_array<T>(shape);
      if (s.lengths) std::fill_n(a.mutable_data(), a.size(), T(0));
      return a;
    };
    if (saves_hprev<Cell>(s)) hprev = make({T_, B, S});
    gates = cached_array<T>({T_, B, GH});  // fully written (it first holds x W_ih^T)
    if (Cell::kHasCellState) cprev = make({T_, B, H});
    if (Cell::kHasExtra) extra = make({T_, B, H});
    if (W_hr) m = make({T_, B, H});
    if (Cell::kClip) keep = make({T_, B, GH});
    if (lengths) {  // the workspace's own copy, which the kernel then reads
      py::array_t<std::int64_t> copy(B);
      std::copy_n(s.lengths, B, copy.mutable_data());
      s.lengths = copy.data();
      w.lengths = copy;
    }
    if (W_hr) w.W_hr = *W_hr;
    if (Cell::kPeep) w.W_peep = *W_peep;
    if (!hprev && h0) w.h0 = *h0;  // backward rebuilds h_{t-1} from the gates and h0
    w.fingerprint_inputs();
  }
  auto out = [](std::optional<Array<T>>& a) { return a ? a->mutable_data() : nullptr; };
  ForwardArgs<T> p{x.data(),  ptr(h0),    ptr(c0),    W_ih.data(),      W_hh.data(),
                   ptr(b_ih), ptr(b_hh),  ptr(W_hr),  y.mutable_data(), h_T.mutable_data(),
                   out(c_T),  out(hprev), out(cprev), out(gates),       out(extra),
                   out(m),    bf16,       T(clip),    out(keep),        ptr(W_peep)};
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    sequence_forward<Cell>(s, p);
  }
  raise_if_interrupted();  // Ctrl-C during the call: the outputs are unfinished
  py::object ws = py::none();
  if (training) {
    auto saved = [](std::optional<Array<T>>& a) -> py::object {
      if (!a) return py::none();
      a->attr("flags").attr("writeable") = false;
      return *a;
    };
    w.hprev = saved(hprev);
    w.cprev = saved(cprev);
    w.gates = saved(gates);
    w.extra = saved(extra);
    w.m = saved(m);
    w.keep = saved(keep);
    ws = py::cast(std::move(w));
  }
  py::object cT = c_T ? py::object(*c_T) : py::none();
  return py::make_tuple(y, h_T, cT, ws);
}

// A cotangent: None, or a C-contiguous array of the workspace's dtype (the Python layer has
// checked it; a direct caller of the private module gets an error instead of a conversion).
template <class T>
OptArray<T> cotangent(const py::object& a, const char* name) {
  if (a.is_none()) return std::nullopt;
  require(py::isinstance<Array<T>>(a),
          std::string(name) + ": expected a C-contiguous array of the workspace's dtype");
  return py::reinterpret_borrow<Array<T>>(a);
}

template <class T>
OptArray<T> saved_array(const py::object& a) {
  if (a.is_none()) return std::nullopt;
  return py::reinterpret_borrow<Array<T>>(a);
}

template <class Cell, class T>
py::tuple backward(const py::object& dy_, const py::object& dh_T_, const py::object& dc_T_,
                   const SavedSequence& w) {
  w.check_inputs_unchanged();
  const OptArray<T> dy = cotangent<T>(dy_, "dy"), dh_T = cotangent<T>(dh_T_, "dh_T"),
                    dc_T = cotangent<T>(dc_T_, "dc_T");
  const auto x = py::reinterpret_borrow<Array<T>>(w.x), W_ih = py::reinterpret_borrow<Array<T>>(w.W_ih),
             W_hh = py::reinterpret_borrow<Array<T>>(w.W_hh);
  const OptArray<T> W_hr = saved_array<T>(w.W_hr), h0 = saved_array<T>(w.h0), hprev = saved_array<T>(w.hprev),
                    cprev = saved_array<T>(w.cprev), gates = saved_array<T>(w.gates),
                    extra = saved_array<T>(w.extra), m = saved_array<T>(w.m), keep = saved_array<T>(w.keep);
  Lengths lengths;
  if (!w.lengths.is_none())
    lengths = py::reinterpret_borrow<py::array_t<std::int64_t, py::array::c_style>>(w.lengths);
  const SeqShape s = shape_of<Cell>(x, W_ih, W_hh, W_hr, lengths, w.reverse);
  const index_t T_ = s.T, B = s.B, I = s.I, H = s.H, S = s.S, GH = Cell::G * H;
  if (dy) require_shape(*dy, {T_, B, S}, "dy");
  if (dh_T) require_shape(*dh_T, {B, S}, "dh_T");
  if (dc_T) require_shape(*dc_T, {B, H}, "dc_T");

  Array<T> dx = cached_array<T>({T_, B, I}), dh0 = cached_array<T>({B, S}), dW_ih = cached_array<T>({GH, I}),
           dW_hh = cached_array<T>({GH, S});
  std::optional<Array<T>> dc0, db_ih, db_hh, dW_hr, dW_peep;
  if (W_hr) dW_hr = cached_array<T>({S, H});
  const OptArray<T> W_peep = saved_array<T>(w.W_peep);
  if (Cell::kPeep) dW_peep = cached_array<T>({3, H});
  if (Cell::kHasCellState) dc0 = cached_array<T>({B, H});
  if (w.has_b_ih) db_ih = cached_array<T>({GH});
  if (w.has_b_hh) db_hh = cached_array<T>({GH});
  auto out = [](std::optional<Array<T>>& a) { return a ? a->mutable_data() : nullptr; };
  BackwardArgs<T> p{ptr(dy),
                    ptr(dh_T),
                    ptr(dc_T),
                    x.data(),
                    W_ih.data(),
                    W_hh.data(),
                    ptr(W_hr),
                    ptr(hprev),
                    ptr(h0),
                    ptr(cprev),
                    ptr(gates),
                    ptr(extra),
                    ptr(m),
                    dx.mutable_data(),
                    dh0.mutable_data(),
                    out(dc0),
                    dW_ih.mutable_data(),
                    dW_hh.mutable_data(),
                    out(db_ih),
                    out(db_hh),
                    out(dW_hr),
                    w.bf16,
                    ptr(keep),
                    ptr(W_peep),
                    out(dW_peep)};
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    sequence_backward<Cell>(s, p);
  }
  raise_if_interrupted();  // Ctrl-C during the call: the outputs are unfinished
  auto obj = [](std::optional<Array<T>>& a) { return a ? py::object(*a) : py::object(py::none()); };
  return py::make_tuple(dx, dh0, obj(dc0), dW_ih, dW_hh, obj(db_ih), obj(db_hh), obj(dW_hr), obj(dW_peep));
}

// The public kernels, one per cell family, named as in rnnkit and rnnkit.reference.
// clip: None (the cells as they are) or a positive bound (their Clip form, cells.hpp); the
// Python layer has checked it.
double clip_bound(const std::optional<double>& clip) {
  require(!clip || *clip > 0.0, "clip: expected None or a positive bound");
  return clip ? *clip : 0.0;
}

template <class T>
py::tuple rnn_forward(const Array<T>& x, const OptArray<T>& h0, const Array<T>& W_ih, const Array<T>& W_hh,
                      const OptArray<T>& b_ih, const OptArray<T>& b_hh, const Lengths& lengths,
                      const std::string& nonlinearity, bool reverse, bool training,
                      const std::string& precision, const std::optional<double>& clip) {
  require(nonlinearity == "tanh" || nonlinearity == "relu", "nonlinearity: expected 'tanh' or 'relu'");
  const double bound = clip_bound(clip);
  const bool relu = nonlinearity == "relu";
  const CellVariant v = relu ? CellVariant::kRnnRelu : CellVariant::kRnnTanh;
  auto run = [&](auto cell) {
    return forward<decltype(cell), T>(v, x, h0, std::nullopt, W_ih, W_hh, b_ih, b_hh, std::nullopt, lengths,
                                      reverse, training, precision, bound);
  };
  if (clip) return relu ? run(RnnCell<true, true>{}) : run(RnnCell<false, true>{});
  return relu ? run(RnnCell<true>{}) : run(RnnCell<false>{});
}

template <class T>
py::tuple lstm_forward(const Array<T>& x, const OptArray<T>& h0, const OptArray<T>& c0, const Array<T>& W_ih,
                       const Array<T>& W_hh, const OptArray<T>& b_ih, const OptArray<T>& b_hh,
                       const OptArray<T>& W_hr, const Lengths& lengths, bool reverse, bool training,
                       const std::string& precision, const std::optional<double>& clip, bool input_forget,
                       const OptArray<T>& W_peep) {
  const double bound = clip_bound(clip);
  auto run = [&](auto cell) {
    return forward<decltype(cell), T>(CellVariant::kLstm, x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr, lengths,
                                      reverse, training, precision, bound, W_peep);
  };
  if (W_peep) {
    if (clip) return input_forget ? run(LstmCell<true, true, true>{}) : run(LstmCell<true, false, true>{});
    return input_forget ? run(LstmCell<false, true, true>{}) : run(LstmCell<false, false, true>{});
  }
  if (clip) return input_forget ? run(LstmCell<true, true>{}) : run(LstmCell<true>{});
  return input_forget ? run(LstmCell<false, true>{}) : run(LstmCell<>{});
}

template <class T>
py::tuple gru_forward(const Array<T>& x, const OptArray<T>& h0, const Array<T>& W_ih, const Array<T>& W_hh,
                      const OptArray<T>& b_ih, const OptArray<T>& b_hh, const Lengths& lengths,
                      bool reset_after, bool reverse, bool training, const std::string& precision,
                      const std::optional<double>& clip) {
  const double bound = clip_bound(clip);
  const CellVariant v = reset_after ? CellVariant::kGruResetAfter : CellVariant::kGruResetBefore;
  auto run = [&](auto cell) {
    return forward<decltype(cell), T>(v, x, h0, std::nullopt, W_ih, W_hh, b_ih, b_hh, std::nullopt, lengths,
                                      reverse, training, precision, bound);
  };
  if (clip) return reset_after ? run(GruResetAfterCell<true>{}) : run(GruResetBeforeCell<true>{});
  return reset_after ? run(GruResetAfterCell<>{}) : run(GruResetBeforeCell<>{});
}

// Backward of any family's workspace, for the cell and dtype that made it; `family` is the
// backward called, which must match.
py::tuple sequence_backward_of(const char* family, const py::object& dy, const py::object& dh_T,
                               const py::object& dc_T, const SavedSequence& w) {
  require(std::string(family) == family_name(w.variant),
          std::string("workspace: it comes from a ") + family_name(w.variant) + " forward, but " + family +
              "_backward needs one from a " + family + " forward");
  const bool f64 = w.is_float64();
  // The cell that made the workspace, in its Clip form when the forward clipped.
  auto run = [&](auto plain, auto clipped) {
    if (w.has_clip)
      return f64 ? backward<decltype(clipped), double>(dy, dh_T, dc_T, w)
                 : backward<decltype(clipped), float>(dy, dh_T, dc_T, w);
    return f64 ? backward<decltype(plain), double>(dy, dh_T, dc_T, w)
               : backward<decltype(plain), float>(dy, dh_T, dc_T, w);
  };
  switch (w.variant) {
    case CellVariant::kRnnTanh:
      return run(RnnCell<false>{}, RnnCell<false, true>{});
    case CellVariant::kRnnRelu:
      return run(RnnCell<true>{}, RnnCell<true, true>{});
    case CellVariant::kLstm:
      if (!w.W_peep.is_none()) {
        if (w.input_forget) return run(LstmCell<false, true, true>{}, LstmCell<true, true, true>{});
        return run(LstmCell<false, false, true>{}, LstmCell<true, false, true>{});
      }
      if (w.input_forget) return run(LstmCell<false, true>{}, LstmCell<true, true>{});
      return run(LstmCell<>{}, LstmCell<true>{});
    case CellVariant::kGruResetAfter:
      return run(GruResetAfterCell<>{}, GruResetAfterCell<true>{});
    default:
      return run(GruResetBeforeCell<>{}, GruResetBeforeCell<true>{});
  }
}

template <class T>
Array<T> softmax_kernel(const Array<T>& logits) {
  require(logits.ndim() == 2, "logits: expected 2 dimensions (N, C)");
  const index_t N = logits.shape(0), C = logits.shape(1);
  Array<T> probs({N, C});
  T* out = probs.mutable_data();
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    softmax(N, C, logits.data(), out);
  }
  return probs;
}

// Returns (row_loss (N), dlogits (N, C)); the Python layer reduces row_loss.
template <class T>
py::tuple softmax_cross_entropy_kernel(const Array<T>& logits,
                                       const py::array_t<std::int64_t, py::array::c_style>& targets,
                                       std::int64_t ignore_index, double scale) {
  require(logits.ndim() == 2, "logits: expected 2 dimensions (N, C)");
  const index_t N = logits.shape(0), C = logits.shape(1);
  require(targets.ndim() == 1 && targets.shape(0) == N, "targets: expected shape (N,)");
  const std::int64_t* y = targets.data();
  for (index_t i = 0; i < N; ++i)
    require(y[i] == ignore_index || (y[i] >= 0 && y[i] < C), "targets: class index out of range");
  Array<T> row_loss({N}), dlogits({N, C});
  T* loss_out = row_loss.mutable_data();
  T* d_out = dlogits.mutable_data();
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    softmax_cross_entropy(N, C, logits.data(), y, ignore_index, T(scale), loss_out, d_out);
  }
  return py::make_tuple(row_loss, dlogits);
}

// A layer's stream (stream.hpp) with its state arrays, which Python reads and writes in place.
template <class T>
struct PyLayerStream {
  std::unique_ptr<LayerStreamBase<T>> impl;
  index_t B, I, S;
  Array<T> h;    // (B, S)
  py::object c;  // (B, H) LSTM, else None

  Array<T> run(const Array<T>& x) {
    require(x.ndim() == 3 && x.shape(0) >= 1 && x.shape(1) == B && x.shape(2) == I,
            "x: expected shape (T, B, I) with T >= 1 and the stream's B and I");
    Array<T> y = cached_array<T>({x.shape(0), B, S});
    T* c_data = c.is_none() ? nullptr : py::reinterpret_borrow<Array<T>>(c).mutable_data();
    const T* x_data = x.data();
    T* y_data = y.mutable_data();
    T* h_data = h.mutable_data();
    const index_t T_ = x.shape(0);
    {
      py::gil_scoped_release release;
      const KernelFpScope fp;
      impl->run(T_, x_data, y_data, h_data, c_data);
    }
    raise_if_interrupted();  // Ctrl-C during the call: the state is mid-chunk
    return y;
  }
};

// One layer's stream of `batch` rows: the sizes as shape_of reads them, every argument checked.
template <class Cell, class T>
std::unique_ptr<PyLayerStream<T>> make_stream(const Array<T>& W_ih, const Array<T>& W_hh,
                                              const OptArray<T>& b_ih, const OptArray<T>& b_hh,
                                              const OptArray<T>& W_hr, index_t batch, double clip = 0.0) {
  require(batch >= 1, "batch: expected at least 1");
  require(W_ih.ndim() == 2, "W_ih: expected 2 dimensions");
  require(W_hh.ndim() == 2, "W_hh: expected 2 dimensions");
  index_t H = W_hh.shape(1), S = H;
  if (W_hr) {
    require(W_hr->ndim() == 2, "W_hr: expected 2 dimensions (P, H)");
    H = W_hr->shape(1);
    S = W_hr->shape(0);
  }
  const index_t I = W_ih.shape(1), GH = Cell::G * H;
  require_shape(W_ih, {GH, I}, "W_ih");
  require_shape(W_hh, {GH, S}, "W_hh");
  if (b_ih) require_shape(*b_ih, {GH}, "b_ih");
  if (b_hh) require_shape(*b_hh, {GH}, "b_hh");
  auto out = std::make_unique<PyLayerStream<T>>();
  out->impl = std::make_unique<LayerStream<Cell, T>>(batch, I, H, S, W_ih.data(), W_hh.data(), ptr(b_ih),
                                                     ptr(b_hh), ptr(W_hr), T(clip));
  out->B = batch;
  out->I = I;
  out->S = S;
  out->h = Array<T>({batch, S});
  std::fill_n(out->h.mutable_data(), batch * S, T(0));
  out->c = py::none();
  if (Cell::kHasCellState) {
    Array<T> c({batch, H});
    std::fill_n(c.mutable_data(), batch * H, T(0));
    out->c = c;
  }
  return out;
}

template <class T>
void bind_dtype(py::module_& m) {
  using namespace py::literals;
  m.def("rnn_forward", &rnn_forward<T>, "x"_a, "h0"_a.none(), "W_ih"_a, "W_hh"_a, "b_ih"_a.none(),
        "b_hh"_a.none(), "lengths"_a.none(), "nonlinearity"_a, "reverse"_a, "training"_a,
        "precision"_a = "float32", "clip"_a = py::none());
  m.def("lstm_forward", &lstm_forward<T>, "x"_a, "h0"_a.none(), "c0"_a.none(), "W_ih"_a, "W_hh"_a,
        "b_ih"_a.none(), "b_hh"_a.none(), "W_hr"_a.none(), "lengths"_a.none(), "reverse"_a, "training"_a,
        "precision"_a = "float32", "clip"_a = py::none(), "input_forget"_a = false, "W_peep"_a = py::none());
  m.def("gru_forward", &gru_forward<T>, "x"_a, "h0"_a.none(), "W_ih"_a, "W_hh"_a, "b_ih"_a.none(),
        "b_hh"_a.none(), "lengths"_a.none(), "reset_after"_a, "reverse"_a, "training"_a,
        "precision"_a = "float32", "clip"_a = py::none());
  const std::string stream_class = std::string("LayerStream_") + (sizeof(T) == 4 ? "float32" : "float64");
  py::class_<PyLayerStream<T>>(m, stream_class.c_str(),
                               "One layer's streaming inference (stream.hpp): weights packed once, state "
                               "h (B, S) and c (B, H) (LSTM; else None) carried across run() calls.")
      .def("run", &PyLayerStream<T>::run, "x"_a)
      .def_readonly("h", &PyLayerStream<T>::h)
      .def_readonly("c", &PyLayerStream<T>::c);
  m.def(
      "rnn_stream",
      [](const Array<T>& W_ih, const Array<T>& W_hh, const OptArray<T>& b_ih, const OptArray<T>& b_hh,
         const std::string& nonlinearity, index_t batch, const std::optional<double>& clip) {
        require(nonlinearity == "tanh" || nonlinearity == "relu", "nonlinearity: expected 'tanh' or 'relu'");
        const double bound = clip_bound(clip);
        const bool relu = nonlinearity == "relu";
        if (clip)
          return relu
                     ? make_stream<RnnCell<true, true>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt, batch, bound)
                     : make_stream<RnnCell<false, true>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt, batch,
                                                            bound);
        return relu ? make_stream<RnnCell<true>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt, batch)
                    : make_stream<RnnCell<false>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt, batch);
      },
      "W_ih"_a, "W_hh"_a, "b_ih"_a.none(), "b_hh"_a.none(), "nonlinearity"_a, "batch"_a,
      "clip"_a = py::none());
  m.def(
      "lstm_stream",
      [](const Array<T>& W_ih, const Array<T>& W_hh, const OptArray<T>& b_ih, const OptArray<T>& b_hh,
         const OptArray<T>& W_hr, index_t batch, const std::optional<double>& clip, bool input_forget) {
        const double bound = clip_bound(clip);
        if (clip && input_forget)
          return make_stream<LstmCell<true, true>, T>(W_ih, W_hh, b_ih, b_hh, W_hr, batch, bound);
        if (clip) return make_stream<LstmCell<true>, T>(W_ih, W_hh, b_ih, b_hh, W_hr, batch, bound);
        if (input_forget) return make_stream<LstmCell<false, true>, T>(W_ih, W_hh, b_ih, b_hh, W_hr, batch);
        return make_stream<LstmCell<>, T>(W_ih, W_hh, b_ih, b_hh, W_hr, batch);
      },
      "W_ih"_a, "W_hh"_a, "b_ih"_a.none(), "b_hh"_a.none(), "W_hr"_a.none(), "batch"_a, "clip"_a = py::none(),
      "input_forget"_a = false);
  m.def(
      "gru_stream",
      [](const Array<T>& W_ih, const Array<T>& W_hh, const OptArray<T>& b_ih, const OptArray<T>& b_hh,
         bool reset_after, index_t batch, const std::optional<double>& clip) {
        const double bound = clip_bound(clip);
        if (clip)
          return reset_after ? make_stream<GruResetAfterCell<true>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt,
                                                                       batch, bound)
                             : make_stream<GruResetBeforeCell<true>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt,
                                                                        batch, bound);
        return reset_after
                   ? make_stream<GruResetAfterCell<>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt, batch)
                   : make_stream<GruResetBeforeCell<>, T>(W_ih, W_hh, b_ih, b_hh, std::nullopt, batch);
      },
      "W_ih"_a, "W_hh"_a, "b_ih"_a.none(), "b_hh"_a.none(), "reset_after"_a, "batch"_a,
      "clip"_a = py::none());
  m.def("softmax", &softmax_kernel<T>, "logits"_a);
  m.def("softmax_cross_entropy", &softmax_cross_entropy_kernel<T>, "logits"_a, "targets"_a, "ignore_index"_a,
        "scale"_a);
}

// rnnkit._core.SavedSequence (workspace.hpp): no constructor, read-only fields; and the
// backward functions that take it (one per family, for either dtype: the workspace knows).
void bind_workspace(py::module_& m) {
  using namespace py::literals;
  py::class_<SavedSequence> c(m, "SavedSequence",
                              "What a training-mode sequence forward saved for its backward (opaque; "
                              "made only by the *_forward kernels).");
  c.def_property_readonly("cell", [](const SavedSequence& w) { return family_name(w.variant); });
  c.def_property_readonly("reverse", [](const SavedSequence& w) { return w.reverse; });
  c.def_property_readonly("input_forget", [](const SavedSequence& w) { return w.input_forget; });
  c.def_readonly("W_peep", &SavedSequence::W_peep);
  c.def_property_readonly("clip", [](const SavedSequence& w) -> py::object {
    return w.has_clip ? py::object(py::float_(w.clip)) : py::object(py::none());
  });
  c.def_property_readonly("has_b_ih", [](const SavedSequence& w) { return w.has_b_ih; });
  c.def_property_readonly("has_b_hh", [](const SavedSequence& w) { return w.has_b_hh; });
  c.def_property_readonly("dtype", [](const SavedSequence& w) { return w.x.dtype(); });
  c.def_property_readonly("precision", [](const SavedSequence& w) {
    return std::string(w.bf16 == Bf16Kernel::kNone ? "float32" : "bf16");
  });
  c.def_property_readonly("nbytes", &SavedSequence::nbytes);
  c.def_readonly("x", &SavedSequence::x);
  c.def_readonly("W_ih", &SavedSequence::W_ih);
  c.def_readonly("W_hh", &SavedSequence::W_hh);
  c.def_readonly("W_hr", &SavedSequence::W_hr);
  c.def_readonly("h0", &SavedSequence::h0);
  c.def_readonly("lengths", &SavedSequence::lengths);
  c.def_readonly("hprev", &SavedSequence::hprev);
  c.def_readonly("cprev", &SavedSequence::cprev);
  c.def_readonly("gates", &SavedSequence::gates);
  c.def_readonly("extra", &SavedSequence::extra);
  c.def_readonly("m", &SavedSequence::m);
  c.def(
      "saved_arrays",
      [](const SavedSequence& w) {
        py::dict d;
        const std::pair<const char*, const py::object*> fields[] = {
            {"hprev", &w.hprev}, {"cprev", &w.cprev}, {"gates", &w.gates}, {"extra", &w.extra}, {"m", &w.m}};
        for (const auto& [name, a] : fields)
          if (!a->is_none()) d[name] = *a;
        return d;
      },
      "{name: array} of the arrays the forward wrote (read-only).");
  m.def(
      "rnn_backward",
      [](const py::object& dy, const py::object& dh_T, const SavedSequence& w) {
        return sequence_backward_of("rnn", dy, dh_T, py::none(), w);
      },
      "dy"_a.none(), "dh_T"_a.none(), "workspace"_a);
  m.def(
      "lstm_backward",
      [](const py::object& dy, const py::object& dh_T, const py::object& dc_T, const SavedSequence& w) {
        return sequence_backward_of("lstm", dy, dh_T, dc_T, w);
      },
      "dy"_a.none(), "dh_T"_a.none(), "dc_T"_a.none(), "workspace"_a);
  m.def(
      "gru_backward",
      [](const py::object& dy, const py::object& dh_T, const SavedSequence& w) {
        return sequence_backward_of("gru", dy, dh_T, py::none(), w);
      },
      "dy"_a.none(), "dh_T"_a.none(), "workspace"_a);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnnkit's compiled kernels (private: use the rnnkit package).";
  bind_dtype<float>(m);
  bind_dtype<double>(m);
  bind_workspace(m);
  // rnnkit's threads: its team (the per-step loop) takes as many threads as its BLAS pool
  // (whole-sequence GEMMs) has, so this one number (which threadpoolctl also sees and limits,
  // and whose default honours OPENBLAS_NUM_THREADS / OMP_NUM_THREADS) controls both.
  m.def("set_num_threads", &SerialBlas::set_threads, py::arg("n"));
  m.def("get_num_threads", &SerialBlas::configured_threads);
  // Subnormals flushed to zero inside kernel calls (fp_env.hpp); returns whether the setting
  // took effect (false on an architecture without the control bits).
  m.def(
      "set_flush_denormal",
      [](bool enabled) {
        flush_denormal_setting() = enabled && kCanFlushDenormal;
        return enabled == flush_denormal_setting().load();
      },
      py::arg("enabled"));
  m.def("get_flush_denormal", [] { return flush_denormal_setting().load(); });
  // Private: the calling thread's floating-point mode, the control register without its sticky
  // exception flags (tests check that a call leaves it as it was), and its flush bits.
  m.def("_fp_control", [] { return read_fp_control() & ~kFpStatusBits; });
  m.def("_fp_control_flush_bits", [] { return kFlushBits; });
  // Private: the batch size up to which per-step products skip the BLAS (tests use it to cover
  // both paths on the same shapes; benchmarks to compare them).
  m.def("_set_small_batch_limit", [](index_t n) { small_batch_limit() = n; }, py::arg("n"));
  m.def("_get_small_batch_limit", [] { return small_batch_limit().load(); });
  // Private: the per-step work (multiply-adds) from which the team splits a step (tests set 0
  // to run every call on all threads).
  m.def("_set_team_min_work", [](index_t n) { team_min_work() = n; }, py::arg("n"));
  m.def("_get_team_min_work", [] { return team_min_work().load(); });
  // Private: force the packed kernel's walk (tile_rows 0 = from the CPU, else 4 or 8;
  // panel_major -1 = from the CPU and size, else 0 or 1), and what the CPU gives by default.
  m.def(
      "_set_kernel_choice",
      [](int tile_rows, int panel_major) {
        require(tile_rows == 0 || tile_rows == 4 || tile_rows == 8,
                "tile_rows: expected 0, 4 or 8, got " + std::to_string(tile_rows));
        require(panel_major >= -1 && panel_major <= 1,
                "panel_major: expected -1, 0 or 1, got " + std::to_string(panel_major));
        kernel_override().tile_rows = tile_rows;
        kernel_override().panel_major = panel_major;
      },
      py::arg("tile_rows"), py::arg("panel_major"));
  m.def("_get_kernel_choice", [] {
    return py::make_tuple(kernel_override().tile_rows.load(), kernel_override().panel_major.load());
  });
  // Private: how a per-step product of `batch` rows with this thread's K x N packed weights is
  // walked (the benchmark prints it per grid point): "<rows>x<vectors> tile, row-major" etc.
  m.def(
      "_step_kernel",
      [](index_t batch, index_t K, index_t N, bool float64) {
        if (batch > small_batch_limit().load()) return std::string("BLAS");
        const PackedKernelChoice c = float64 ? packed_choice<double>(K * N) : packed_choice<float>(K * N);
        const index_t V = PackedPanels<float>::width_for(batch) / (vector_bytes() / index_t(sizeof(float)));
        const index_t R = V == 2 ? next_group(batch, c.tile_rows) : 8 / V;
        return std::to_string(R) + "x" + std::to_string(V) + (c.panel_major ? " panel-major" : " row-major");
      },
      py::arg("batch"), py::arg("K"), py::arg("N"), py::arg("float64"));
  // Private: the width of the vectors the kernels use (0 = the CPU's widest; else 16, 32 or 64
  // bytes, at most the CPU's), so that tests run every width's code on the CPU they have.
  m.def(
      "_set_vector_bytes",
      [](int bytes) {
        require(bytes == 0 || runs_vector_bytes(bytes),
                "bytes: expected 0 or one of 16, 32, 64 up to this CPU's " +
                    std::to_string(cpu_vector_bytes()) + ", got " + std::to_string(bytes));
        vector_bytes_override() = bytes;
      },
      py::arg("bytes"));
  m.def("_get_vector_bytes", [] { return vector_bytes(); });
  // Private: the kernel of precision="bf16" products, "" for the CPU's best, or one it runs
  // (so the tests run every kernel on the CPU they have).
  m.def(
      "_set_bf16_kernel",
      [](const std::string& name) {
        Bf16Kernel k = Bf16Kernel::kNone;
        if (name == "amx") k = Bf16Kernel::kAmx;
        if (name == "avx512_bf16") k = Bf16Kernel::kAvx512Bf16;
        require(name.empty() || (k != Bf16Kernel::kNone && runs_bf16_kernel(k)),
                "name: expected '' or a bf16 kernel this CPU runs (best: '" +
                    std::string(bf16_kernel_name(cpu_bf16_kernel())) + "'), got '" + name + "'");
        bf16_kernel_override() = int(k);
      },
      py::arg("name"));
  m.def("_get_bf16_kernel", [] { return std::string(bf16_kernel_name(bf16_kernel())); });
  // Private: the processor as the kernels see it (the benchmark prints it).
  m.def("_cpu_info", [] {
    const CpuInfo& c = cpu_info();
    py::dict d;
    d["vendor"] = c.vendor;
    d["model_name"] = c.model_name;
    d["family"] = c.family;
    d["model"] = c.model;
    d["l1d_bytes"] = c.l1d;
    d["l2_bytes"] = c.l2;
    d["l3_bytes"] = c.l3;
    d["avx2"] = c.avx2;
    d["fma"] = c.fma;
    d["avx512f"] = c.avx512f;
    d["avx512_bf16"] = c.avx512_bf16;
    d["amx_bf16"] = c.amx_bf16;
    d["vector_bytes"] = cpu_vector_bytes();
    d["bf16_kernel"] = bf16_kernel_name(cpu_bf16_kernel());
    d["tile_rows"] = default_tile_rows();
    d["panel_major_above_bytes"] = std::int64_t(0.5 * double(c.l2_or_default()));
    return d;
  });
  // Private: one thread's measured FMA throughput (the benchmark's ceiling line).
  m.def(
      "_fma_peak_gflops",
      [](bool float64, double seconds) {
        py::gil_scoped_release release;
        return float64 ? fma_peak_gflops<double>(seconds) : fma_peak_gflops<float>(seconds);
      },
      py::arg("float64"), py::arg("seconds") = 0.5);
  // Private: what a sequence call allocates (footprint.hpp), as (name, count, itemsize) terms,
  // for the Python layer's size check before the call. cell "rnn", "lstm" or "gru"
  // (reset_after picks the GRU form).
  m.def(
      "_sequence_terms",
      [](const std::string& cell, bool reset_after, bool backward, bool float64, index_t T, index_t B,
         index_t I, index_t H, index_t S, bool training, bool lengths, bool project, bool dy, bool b_ih,
         bool b_hh, bool bf16, bool clip) {
        const SequenceCall c{T, B, I, H, S, training, lengths, project, dy, b_ih, b_hh, bf16, clip};
        Terms terms;
        if (cell == "rnn")
          terms = sequence_terms<RnnCell<false>>(backward, float64, c);
        else if (cell == "lstm")
          terms = sequence_terms<LstmCell<>>(backward, float64, c);
        else if (cell == "gru" && reset_after)
          terms = sequence_terms<GruResetAfterCell<>>(backward, float64, c);
        else if (cell == "gru")
          terms = sequence_terms<GruResetBeforeCell<>>(backward, float64, c);
        else
          throw std::invalid_argument("cell: expected 'rnn', 'lstm' or 'gru', got '" + cell + "'");
        py::list out;
        for (const Term& t : terms) out.append(py::make_tuple(t.name, t.count, t.itemsize));
        return out;
      },
      py::arg("cell"), py::arg("reset_after"), py::arg("backward"), py::arg("float64"), py::arg("T"),
      py::arg("B"), py::arg("I"), py::arg("H"), py::arg("S"), py::arg("training"), py::arg("lengths"),
      py::arg("project"), py::arg("dy"), py::arg("b_ih"), py::arg("b_hh"), py::arg("bf16") = false,
      py::arg("clip") = false);
  m.attr("_blas_buffer_bytes") = py::int_(kBlasBufferBytes);
  // Memory kept between calls (memory.hpp's block cache, pooled_buffer.hpp's scratch pool):
  // what rnnkit.memory_stats, empty_cache and set_cache_limit report and control.
  m.def("_memory_stats", [] {
    py::dict d;
    d["cached_bytes"] = BlockCache::instance().cached_bytes();
    d["scratch_bytes"] = PooledBuffer<float>::pooled_bytes() + PooledBuffer<double>::pooled_bytes();
    d["cache_limit"] = BlockCache::instance().limit();
    d["scratch_limit"] = PooledBuffer<float>::kMaxPooledBytes + PooledBuffer<double>::kMaxPooledBytes;
    return d;
  });
  m.def("_empty_cache", [] {
    BlockCache::instance().clear();
    PooledBuffer<float>::clear_pool();
    PooledBuffer<double>::clear_pool();
#if defined(__GLIBC__)
    malloc_trim(0);  // the heap's free pages too (the kernels' small per-call vectors)
#endif
  });
  m.def(
      "_set_cache_limit", [](std::size_t bytes) { BlockCache::instance().set_limit(bytes); },
      py::arg("nbytes"));
  // Private (tests): a run on the team of `nthreads` where thread `thrower` throws std::bad_alloc
  // after a first barrier while the others wait at a second one; the caller must get
  // MemoryError (the worker's exception carried over) and the team must stay usable.
  m.def(
      "_team_run_throwing",
      [](int nthreads, int thrower) {
        py::gil_scoped_release release;
        auto reservation = Team::instance().try_reserve();
        require(reservation.owns_lock(), "team: busy");
        Team::instance().run(nthreads, [&](const TeamContext& ctx) {
          ctx.barrier();
          if (ctx.tid == thrower) throw std::bad_alloc();
          ctx.barrier();
          ctx.barrier();
        });
      },
      py::arg("nthreads"), py::arg("thrower"));
  bind_attention(m);
  bind_interrupt(m);  // Ctrl-C stops long calls (interrupt.hpp)
}
