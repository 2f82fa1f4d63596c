// Every size of the GELU kernel, read by npu/ops/tables.py (the golden model, the NPU back-end,
// the design generator). One `#define NAME value` per line; do not write these numbers elsewhere.
#ifndef GELU_CONFIG_H
#define GELU_CONFIG_H

// bf16 values per ObjectFIFO object (and per vector loop of the AIE path: a multiple of 16).
#define GELU_OBJECT_ELEMENTS 1024
// Objects per kernel call: the host pads a call to a whole number of objects.
#define GELU_OBJECTS_PER_CALL 384
// |x| >= GELU_CLAMP: GELU(x) is x (x > 0) or 0 (x < 0) to well under a bf16 ulp.
#define GELU_CLAMP 4
// erf(x / sqrt 2) / x as a polynomial of this degree in x^2 on [0, GELU_CLAMP^2].
#define GELU_POLY_DEGREE 12

#define GELU_CORE_STACK_BYTES 1024

#endif
