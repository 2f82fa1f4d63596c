// Every size of the attention kernel, read by npu/ops/tables.py (the golden model, the NPU
// back-end, the design generator). One `#define NAME value` per line; do not write these
// numbers elsewhere.
#ifndef ATTENTION_CONFIG_H
#define ATTENTION_CONFIG_H

// One head: softmax(Q K^T / sqrt(ATTN_HEAD_DIM)) V, bf16 in and out, float32 accumulation.
#define ATTN_HEAD_DIM 64
// Whisper's encoder attends over 1500 positions; the design is generated per key count.
#define ATTN_MAX_KEYS 1500
// Query rows per tile: the compute tile holds one Q tile, its output and its softmax state.
#define ATTN_QUERY_ROWS 16
// Keys per K^T / V ObjectFIFO object (online softmax, one block at a time).
#define ATTN_KEY_BLOCK 64
// exp2(x) = 2^floor(x) * (1 + f * P(f)), P of this degree, f = x - floor(x).
#define ATTN_EXP2_POLY_DEGREE 5

#define ATTN_CORE_STACK_BYTES 1024

#endif
