"""Reduced precision, out of the zoo: what makes a network's int8, fp16 and dynamic-range files keep its
function.

* `rewrites`: function-preserving rewrites found by module type (merge BNs folded, dead channels frozen,
  channel ranges equalised, concatenation inputs balanced);
* `int8`: those rewrites applied to a reference for TFLite int8, and BNs written as depthwise convs;
* `bias`: int8 bias correction on TFLite's own kernels;
* `fallback`, `tflite_fallback`, `coreml_fallback`: the ops kept in float where fp16 or quantised weights
  wreck the result.
"""
