// pybind11 bindings of the attention kernels (attention.hpp) into rnnkit._core.
//
// As in bindings.cpp: the Python layer (python/rnnkit/attention.py) validates the arguments and
// passes C-contiguous arrays of one float dtype; here the sizes the kernels rely on are checked
// again (a misuse of the private module raises ValueError instead of crashing), outputs are
// allocated and the GIL is released around the computation. float32 and float64 overloads.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fp_env.hpp"

#include "attention.hpp"
#include "interrupt_python.hpp"

namespace py = pybind11;
using namespace rnnkit;

namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style>;
template <class T>
using OptArray = std::optional<Array<T>>;
using Mask = std::optional<py::array_t<std::uint8_t, py::array::c_style>>;

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

template <class A>
void check_shape(const A& a, std::initializer_list<index_t> shape, const std::string& name) {
  bool ok = a.ndim() == index_t(shape.size());
  index_t k = 0;
  for (index_t d : shape) ok = ok && a.shape(k++) == d;
  std::string want = "(";
  k = 0;
  for (index_t d : shape) want += (k++ ? ", " : "") + std::to_string(d);
  check(ok, name + ": wrong shape, expected " + want + (shape.size() == 1 ? ",)" : ")"));
}

template <class T>
const T* ptr(const OptArray<T>& a) {
  return a ? a->data() : nullptr;
}

const std::uint8_t* mask_ptr(const Mask& mask, index_t B, index_t S) {
  if (!mask) return nullptr;
  check_shape(*mask, {B, S}, "mask");
  return mask->data();
}

// Sizes (B, T, S, A, Hv) of an additive call, read from qp (B, T, A) and values (B, S, Hv).
template <class T>
AdditiveArgs<T> additive_args(const Array<T>& qp, const Array<T>& kp, const Array<T>& v,
                              const Array<T>& values, const Mask& mask) {
  check(qp.ndim() == 3, "qp: expected 3 dimensions (B, T, A)");
  check(values.ndim() == 3, "values: expected 3 dimensions (B, S, Hv)");
  const index_t B = qp.shape(0), T_ = qp.shape(1), A = qp.shape(2);
  const index_t S = values.shape(1), Hv = values.shape(2);
  check(values.shape(0) == B, "values: batch size differs from qp's");
  check_shape(kp, {B, S, A}, "kp");
  check_shape(v, {A}, "v");
  return AdditiveArgs<T>{
      B, T_, S, A, Hv, qp.data(), kp.data(), v.data(), values.data(), mask_ptr(mask, B, S)};
}

template <class T>
DotArgs<T> dot_args(const Array<T>& q, const Array<T>& k, const Array<T>& values, const Mask& mask,
                    double scale) {
  check(q.ndim() == 3, "q: expected 3 dimensions (B, T, H)");
  check(values.ndim() == 3, "values: expected 3 dimensions (B, S, Hv)");
  const index_t B = q.shape(0), T_ = q.shape(1), H = q.shape(2);
  const index_t S = values.shape(1), Hv = values.shape(2);
  check(values.shape(0) == B, "values: batch size differs from q's");
  check_shape(k, {B, S, H}, "k");
  return DotArgs<T>{B, T_, S, H, Hv, q.data(), k.data(), values.data(), mask_ptr(mask, B, S), T(scale)};
}

// A kernel's scratch (attention.hpp: kernels allocate nothing), made while the GIL is held so
// that an allocation failure is std::bad_alloc -> MemoryError.
template <class T>
struct Scratch {
  std::vector<T> a, b;
  explicit Scratch(std::pair<index_t, index_t> sizes)
      : a(static_cast<std::size_t>(sizes.first)), b(static_cast<std::size_t>(sizes.second)) {}
  AttentionScratch<T> get() { return {a.data(), b.data()}; }
};

void check_gemm_size(index_t n, const char* what) {
  check(n <= index_t(0x7fffffff), std::string(what) + " exceeds the BLAS limit of 2^31 - 1");
}

template <class T>
py::tuple additive_forward(const Array<T>& qp, const Array<T>& kp, const Array<T>& v, const Array<T>& values,
                           const Mask& mask) {
  const AdditiveArgs<T> p = additive_args(qp, kp, v, values, mask);
  check_gemm_size(p.S * p.Hv, "S*Hv");
  Array<T> ctx({p.B, p.T_, p.Hv}), w({p.B, p.T_, p.S});
  T* c = ctx.mutable_data();
  T* wp = w.mutable_data();
  Scratch<T> scratch(additive_forward_scratch_elements(p.S, p.A));
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    additive_attention_forward(p, c, wp, scratch.get());
  }
  raise_if_interrupted();
  return py::make_tuple(ctx, w);
}

template <class T>
py::tuple additive_backward(const OptArray<T>& dctx, const OptArray<T>& dw, const Array<T>& qp,
                            const Array<T>& kp, const Array<T>& v, const Array<T>& values, const Array<T>& w,
                            const Mask& mask) {
  const AdditiveArgs<T> p = additive_args(qp, kp, v, values, mask);
  check_shape(w, {p.B, p.T_, p.S}, "w");
  if (dctx) check_shape(*dctx, {p.B, p.T_, p.Hv}, "dctx");
  if (dw) check_shape(*dw, {p.B, p.T_, p.S}, "dw");
  Array<T> dqp({p.B, p.T_, p.A}), dkp({p.B, p.S, p.A}), dv({p.A}), dvalues({p.B, p.S, p.Hv});
  T *o1 = dqp.mutable_data(), *o2 = dkp.mutable_data(), *o3 = dv.mutable_data(), *o4 = dvalues.mutable_data();
  Scratch<T> scratch(additive_backward_scratch_elements(p.T_, p.S));
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    additive_attention_backward(p, ptr(dctx), ptr(dw), w.data(), o1, o2, o3, o4, scratch.get());
  }
  raise_if_interrupted();
  return py::make_tuple(dqp, dkp, dv, dvalues);
}

template <class T>
py::tuple dot_forward(const Array<T>& q, const Array<T>& k, const Array<T>& values, const Mask& mask,
                      double scale) {
  const DotArgs<T> p = dot_args(q, k, values, mask, scale);
  check_gemm_size(p.S * p.H, "S*H");
  Array<T> ctx({p.B, p.T_, p.Hv}), w({p.B, p.T_, p.S});
  T* c = ctx.mutable_data();
  T* wp = w.mutable_data();
  Scratch<T> scratch(dot_forward_scratch_elements(p.T_, p.S));
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    dot_attention_forward(p, c, wp, scratch.get());
  }
  raise_if_interrupted();
  return py::make_tuple(ctx, w);
}

template <class T>
py::tuple dot_backward(const OptArray<T>& dctx, const OptArray<T>& dw, const Array<T>& q, const Array<T>& k,
                       const Array<T>& values, const Array<T>& w, const Mask& mask, double scale) {
  const DotArgs<T> p = dot_args(q, k, values, mask, scale);
  check_shape(w, {p.B, p.T_, p.S}, "w");
  if (dctx) check_shape(*dctx, {p.B, p.T_, p.Hv}, "dctx");
  if (dw) check_shape(*dw, {p.B, p.T_, p.S}, "dw");
  Array<T> dq({p.B, p.T_, p.H}), dk({p.B, p.S, p.H}), dvalues({p.B, p.S, p.Hv});
  T *o1 = dq.mutable_data(), *o2 = dk.mutable_data(), *o3 = dvalues.mutable_data();
  Scratch<T> scratch(dot_backward_scratch_elements(p.T_, p.S));
  {
    py::gil_scoped_release release;
    const KernelFpScope fp;
    dot_attention_backward(p, ptr(dctx), ptr(dw), w.data(), o1, o2, o3, scratch.get());
  }
  raise_if_interrupted();
  return py::make_tuple(dq, dk, dvalues);
}

template <class T>
void bind_attention_dtype(py::module_& m) {
  using namespace py::literals;
  m.def("attention_additive_forward", &additive_forward<T>, "qp"_a, "kp"_a, "v"_a, "values"_a,
        "mask"_a.none());
  m.def("attention_additive_backward", &additive_backward<T>, "dctx"_a.none(), "dw"_a.none(), "qp"_a, "kp"_a,
        "v"_a, "values"_a, "w"_a, "mask"_a.none());
  m.def("attention_dot_forward", &dot_forward<T>, "q"_a, "k"_a, "values"_a, "mask"_a.none(), "scale"_a);
  m.def("attention_dot_backward", &dot_backward<T>, "dctx"_a.none(), "dw"_a.none(), "q"_a, "k"_a, "values"_a,
        "w"_a, "mask"_a.none(), "scale"_a);
}

}  // namespace

void bind_attention(py::module_& m) {
  bind_attention_dtype<float>(m);
  bind_attention_dtype<double>(m);
}
