// Decodes the `synth:` section of a config into SynthOptions.
#pragma once

#include "evax/core/config.h"
#include "evax/data/synth.h"

namespace evax {

/// Reads n, size, seed, threads, splits {train,val,test}, prevalence {<Finding>: p}, write_dicom,
/// write_png under `v`; absent keys keep `defaults`. Range errors name the YAML path.
SynthOptions synth_options_from_config(const ConfigView& v, SynthOptions defaults = {});

}  // namespace evax
