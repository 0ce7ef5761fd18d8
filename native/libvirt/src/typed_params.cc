#include "typed_params.h"

namespace vg {

Value TypedParamsToValue(virTypedParameterPtr params, int count) {
  Value obj = Value::Object();
  for (int i = 0; i < count; i++) {
    const virTypedParameter& p = params[i];
    switch (p.type) {
      case VIR_TYPED_PARAM_INT:
        obj.Set(p.field, Value::Number(p.value.i));
        break;
      case VIR_TYPED_PARAM_UINT:
        obj.Set(p.field, Value::Number(p.value.ui));
        break;
      case VIR_TYPED_PARAM_LLONG:
        obj.Set(p.field, Value::Number(static_cast<double>(p.value.l)));
        break;
      case VIR_TYPED_PARAM_ULLONG:
        obj.Set(p.field, Value::Number(static_cast<double>(p.value.ul)));
        break;
      case VIR_TYPED_PARAM_DOUBLE:
        obj.Set(p.field, Value::Number(p.value.d));
        break;
      case VIR_TYPED_PARAM_BOOLEAN:
        obj.Set(p.field, Value::Bool(p.value.b != 0));
        break;
      case VIR_TYPED_PARAM_STRING:
        obj.Set(p.field, Value::String(p.value.s ? p.value.s : ""));
        break;
      default:
        break;
    }
  }
  return obj;
}

}  // namespace vg
