// Convolution kernel gradient for XLA:CPU through oneDNN, as an XLA FFI custom call.
//
// dW[i, j, c, d] = sum_{b, h, w} xp[b, s_h h + i, s_w w + j, c] dy[b, h, w, d], where xp is x
// zero-padded by (top, bottom, left, right): the kernel gradient of the NHWC x HWIO convolution
// that scenimefy_jax.models.layers.conv2d computes (docs/performance.md, "The kernel gradient by
// oneDNN"). x and dy are read in place as NHWC; oneDNN picks its own layout for the gradient,
// which is then reordered into the HWIO output.
//
// One call at a time: XLA:CPU runs independent thunks on several threads, and two oneDNN kernels at
// once would each start an OpenMP team over all cores; their spin barriers then wait for threads
// the other team has taken (a hang that lasted minutes on 2 cores). The scratchpad is this
// library's own (scratchpad_mode::user), so no state is shared with other oneDNN users.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;

struct Plan {
  dnnl::convolution_backward_weights primitive;
  dnnl::reorder to_hwio;  // oneDNN's gradient layout -> HWIO, when they differ
  dnnl::memory::desc src, diff_dst, diff_weights, user_weights, scratchpad;
  bool reorder;
};

std::mutex& ExecMutex() {
  static std::mutex mutex;
  return mutex;
}

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Primitive creation takes milliseconds; a step calls the same few shapes over and over.
const Plan& GetPlan(const Key& key) {
  static std::mutex mutex;
  static std::map<Key, Plan> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return found->second;
  auto [n, h, w, c, ho, wo, d, kh, kw, sh, sw, pt, pl, pb] = key;
  (void)pb;
  const dnnl::memory::dims strides = {sh, sw};
  // oneDNN's right padding is implied by the shapes; pass the one that makes them consistent.
  const dnnl::memory::dims pad_l = {pt, pl};
  const dnnl::memory::dims pad_r = {(ho - 1) * sh + kh - h - pt, (wo - 1) * sw + kw - w - pl};
  dnnl::memory::desc src({n, c, h, w}, dt::f32, tag::nhwc);
  dnnl::memory::desc diff_dst({n, d, ho, wo}, dt::f32, tag::nhwc);
  dnnl::memory::desc any_weights({d, c, kh, kw}, dt::f32, tag::any);
  dnnl::memory::desc user_weights({d, c, kh, kw}, dt::f32, tag::hwio);
  dnnl::convolution_forward::primitive_desc hint(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      any_weights, diff_dst, strides, pad_l, pad_r);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_backward_weights::primitive_desc pd(
      Engine(), dnnl::algorithm::convolution_direct, src, any_weights, diff_dst, strides, pad_l,
      pad_r, hint, attr);
  const bool reorder = pd.diff_weights_desc() != user_weights;
  Plan plan{dnnl::convolution_backward_weights(pd),
            reorder ? dnnl::reorder(dnnl::reorder::primitive_desc(
                          Engine(), pd.diff_weights_desc(), Engine(), user_weights))
                    : dnnl::reorder(),
            pd.src_desc(), pd.diff_dst_desc(), pd.diff_weights_desc(), user_weights,
            pd.scratchpad_desc(), reorder};
  return plans.emplace(key, std::move(plan)).first->second;
}

ffi::Error ConvWgradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                         ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw, int64_t pt,
                         int64_t pb, int64_t pl, int64_t pr) {
  (void)pr;
  auto xd = x.dimensions(), yd = dy.dimensions(), wd = dw->dimensions();
  if (xd.size() != 4 || yd.size() != 4 || wd.size() != 4) {
    return ffi::Error::InvalidArgument("conv_wgrad: x, dy and dw must be rank 4");
  }
  if (wd[2] != xd[3] || wd[3] != yd[3] || xd[0] != yd[0]) {
    return ffi::Error::InvalidArgument("conv_wgrad: inconsistent channel or batch sizes");
  }
  Key key{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3], wd[0], wd[1], sh, sw, pt, pl, pb};
  try {
    const Plan& plan = GetPlan(key);
    if (plan.src != dnnl::memory::desc({xd[0], xd[3], xd[1], xd[2]}, dt::f32, tag::nhwc) ||
        plan.diff_dst != dnnl::memory::desc({yd[0], yd[3], yd[1], yd[2]}, dt::f32, tag::nhwc)) {
      return ffi::Error::Internal("conv_wgrad: oneDNN asked for a non-NHWC layout");
    }
    std::lock_guard<std::mutex> lock(ExecMutex());
    static std::vector<uint8_t> scratch;  // guarded by ExecMutex
    if (scratch.size() < plan.scratchpad.get_size()) scratch.resize(plan.scratchpad.get_size());
    dnnl::stream stream(Engine());
    dnnl::memory scratchpad(plan.scratchpad, Engine(), scratch.data());
    dnnl::memory src(plan.src, Engine(), x.typed_data());
    dnnl::memory diff_dst(plan.diff_dst, Engine(), dy.typed_data());
    dnnl::memory out(plan.user_weights, Engine(), dw->typed_data());
    dnnl::memory diff_weights = plan.reorder ? dnnl::memory(plan.diff_weights, Engine()) : out;
    plan.primitive.execute(stream, {{DNNL_ARG_SRC, src},
                                    {DNNL_ARG_DIFF_DST, diff_dst},
                                    {DNNL_ARG_DIFF_WEIGHTS, diff_weights},
                                    {DNNL_ARG_SCRATCHPAD, scratchpad}});
    if (plan.reorder) plan.to_hwio.execute(stream, diff_weights, out);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("conv_wgrad: oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ScenimefyConvWgrad, ConvWgradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_bottom")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("pad_right"));
