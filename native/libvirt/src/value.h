// A JS-free value tree. Worker threads may not touch N-API, so every
// operation builds its result as a Value off the main thread and the
// worker converts it to JS in OnOK.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vg {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object, Error };

  Value() = default;
  static Value Bool(bool b);
  static Value Number(double n);
  static Value String(std::string s);
  static Value Array();
  static Value Object();
  // An error that stands in a bulk result at the index of the object that
  // failed, so one bad domain does not fail the whole batch.
  static Value Error(int code, int domain, std::string message);

  Value& Push(Value v);
  // An array of n nulls, to be filled in place (by ParallelFor bodies).
  static Value ArrayOf(size_t n);
  Value& At(size_t i) { return items_.at(i); }
  Value& Set(const std::string& key, Value v);

  Napi::Value ToJs(Napi::Env env) const;

 private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Value> items_;
  std::vector<std::pair<std::string, Value>> fields_;
  int errCode_ = 0;
  int errDomain_ = 0;
};

}  // namespace vg
