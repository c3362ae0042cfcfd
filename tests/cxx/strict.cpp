/* SPDX-License-Identifier: MIT */
// The header's macros and inline functions under the warnings C++ code
// bases turn on beside -Wall -Wextra (-Wold-style-cast,
// -Wzero-as-null-pointer-constant): check_cxx.sh compiles this with each
// C++ standard, warnings as errors.  Compiled, not run.
#include <cfutures.h>

static int task(cf_call *call) { return cf_return_i64(call, cf_arg_i64(call, 0)); }
CF_TASK(task);

static int next(void *, cf_value *) { return 0; }

int strict_use(cf_executor *ex, const cf_value *result);
int strict_use(cf_executor *ex, const cf_value *result)
{
    cf_future *f = nullptr;
    int rc = cf_submit(ex, task, CF_NOARGS, &f);
    if (rc == CF_OK)
        rc = cf_submit(ex, task, CF_ARGS(cf_i64(1), cf_f64(2.0), cf_str("s")), &f);
    cf_map_input in[] = {cf_input_array(result, 1), cf_input_generator(next, nullptr)};
    static_cast<void>(in);
    cf_value v = cf_none();
    v = cf_bytes(result, 0);
    v = cf_ptr(ex);
    static_cast<void>(v);
    int limits = CF_ARGS_MAX + CF_PRIORITY_MAX;
    static_cast<void>(limits);
    size_t sizes = CF_PAYLOAD_MAX + CF_FUTURE_CACHE_DEFAULT;
    static_cast<void>(sizes);
    {
        CF_WITH_EXECUTOR(scoped);
        static_cast<void>(scoped);
    }
    return rc + cf_when_all_status(result, 0) + (CF_FOREVER > 0 ? 0 : 1);
}
