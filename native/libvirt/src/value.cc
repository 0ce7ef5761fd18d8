#include "value.h"

#include "errors.h"

namespace vg {

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::Bool;
  v.bool_ = b;
  return v;
}

Value Value::Number(double n) {
  Value v;
  v.kind_ = Kind::Number;
  v.number_ = n;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::String;
  v.string_ = std::move(s);
  return v;
}

Value Value::Array() {
  Value v;
  v.kind_ = Kind::Array;
  return v;
}

Value Value::ArrayOf(size_t n) {
  Value v;
  v.kind_ = Kind::Array;
  v.items_.resize(n);
  return v;
}

Value Value::Object() {
  Value v;
  v.kind_ = Kind::Object;
  return v;
}

Value Value::Error(int code, int domain, std::string message) {
  Value v;
  v.kind_ = Kind::Error;
  v.errCode_ = code;
  v.errDomain_ = domain;
  v.string_ = std::move(message);
  return v;
}

Value& Value::Push(Value v) {
  items_.push_back(std::move(v));
  return *this;
}

Value& Value::Set(const std::string& key, Value v) {
  fields_.emplace_back(key, std::move(v));
  return *this;
}

Napi::Value Value::ToJs(Napi::Env env) const {
  switch (kind_) {
    case Kind::Null:
      return env.Null();
    case Kind::Bool:
      return Napi::Boolean::New(env, bool_);
    case Kind::Number:
      return Napi::Number::New(env, number_);
    case Kind::String:
      return Napi::String::New(env, string_);
    case Kind::Array: {
      Napi::Array arr = Napi::Array::New(env, items_.size());
      for (size_t i = 0; i < items_.size(); i++) arr.Set(i, items_[i].ToJs(env));
      return arr;
    }
    case Kind::Object: {
      Napi::Object obj = Napi::Object::New(env);
      for (const auto& [key, value] : fields_) obj.Set(key, value.ToJs(env));
      return obj;
    }
    case Kind::Error:
      return MakeJsError(env, LibvirtFailure{errCode_, errDomain_, string_}).Value();
  }
  return env.Null();
}

}  // namespace vg
