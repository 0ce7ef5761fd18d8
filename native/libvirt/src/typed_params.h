#pragma once

#include <libvirt/libvirt.h>

#include "value.h"

namespace vg {

// Typed parameters (domain stats) as a flat object keyed by parameter name.
// 64-bit integers become doubles: exact up to 2^53, which covers byte counts
// and nanosecond CPU times of about 104 days; beyond that only the last
// digits are lost, which no rate computed from them notices.
Value TypedParamsToValue(virTypedParameterPtr params, int count);

}  // namespace vg
