"""The GELU and attention design generators (and the mel one's second target): importable and
checked without mlir-aie - the tile data-memory and program-memory budgets of both NPU
generations computed in plain Python, and designs that do not fit refused."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys

import pytest

from npu import kernel_budget
from npu.kernel_files import HOST_BUILD_DIR, KERNELS_DIR
from npu.kernel_lib import build_host_library
from npu.mel import tables as mel_tables
from npu.ops import tables


def load_design(op: str):
    spec = importlib.util.spec_from_file_location(f"{op}_design", KERNELS_DIR / op / "design.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def designs():
    build_host_library()
    return {op: load_design(op) for op in ("gelu", "attention", "mel")}


def config_of(op: str) -> dict:
    return dict(tables.gelu_config() if op == "gelu" else tables.attention_config())


@pytest.mark.parametrize("target", ["npu1", "npu2"])
@pytest.mark.parametrize("op", ["gelu", "attention"])
def test_budget_fits_both_generations(designs, op, target):
    npu = kernel_budget.target(target)
    budget = designs[op].memory_budget(npu, HOST_BUILD_DIR / f"{op}.o", config_of(op))
    assert budget.data_total <= budget.data_limit == 65_536
    assert 0 < budget.program <= budget.program_limit == 16_384
    assert 0 < budget.stack_used <= budget.stack
    if op == "attention":  # Q, K^T, V, out double-buffered, plus q, acc and scores in float32
        assert budget.fifo_buffers == 2 * 2 * (2 * 16 * 64 + 2 * 64 * 64)
        assert budget.static_data >= 3 * 16 * 64 * 4


def test_attention_design_tiles_whisper_self_attention(designs):
    text = designs["attention"].design_mlir(kernel_budget.target("npu2"), config_of("attention"))
    assert "aie.device(npu2_1col)" in text
    assert "%tiles = arith.constant 94 : index" in text  # 1504 = 94 x 16 query rows
    assert "%full_blocks = arith.constant 23 : index" in text  # 1536 keys = 24 x 64, 23 full
    assert "%last_keys = arith.constant 28 : i32" in text  # 1500 - 23 x 64
    assert "[0, 64, 1536, 1]" in text  # K^T blocks read with the padded row stride
    assert text.count("aiex.npu.dma_wait") == 3  # groups of 32, 32, 30 tiles


def test_gelu_design_streams_one_call(designs):
    text = designs["gelu"].design_mlir(kernel_budget.target("npu1"), config_of("gelu"))
    assert "aie.device(npu1_1col)" in text and "memref<393216xbf16>" in text
    assert "[1, 1, 384, 1024][0, 0, 1024, 1]" in text and "@gelu_object" in text


def test_mel_design_gains_the_npu2_target(designs):
    config = mel_tables.read_config()
    text = designs["mel"].design_mlir(80, 3000, config, kernel_budget.target("npu2"))
    assert "aie.device(npu2_1col)" in text and "aie.device(npu1_1col)" not in text


def test_a_key_block_too_large_for_tile_memory_is_refused(designs):
    config = dict(config_of("attention"), KEY_BLOCK=256)
    with pytest.raises(kernel_budget.DesignError, match="over the 65536 B of npu1"):
        designs["attention"].memory_budget(kernel_budget.target("npu1"),
                                           HOST_BUILD_DIR / "attention.o", config)


def test_code_over_program_memory_is_refused(designs):
    small = dataclasses.replace(kernel_budget.target("npu2"), tile_program_bytes=1024)
    with pytest.raises(kernel_budget.DesignError, match="program memory of npu2"):
        designs["attention"].memory_budget(small, HOST_BUILD_DIR / "attention.o",
                                           config_of("attention"))


def test_unknown_target_is_refused(designs, capsys):
    args = ["--target", "npu9", "--kernel-object", str(HOST_BUILD_DIR / "gelu.o")]
    assert designs["gelu"].main(args) == 1
    assert "unknown NPU target 'npu9'" in capsys.readouterr().err


def test_text_bytes_agree_with_binutils(designs):
    listing = subprocess.run(["size", "-A", str(HOST_BUILD_DIR / "attention.o")],
                             capture_output=True, text=True, check=True).stdout
    executable = subprocess.run(["readelf", "-SW", str(HOST_BUILD_DIR / "attention.o")],
                                capture_output=True, text=True, check=True).stdout
    exec_sections = {m.group(1) for m in re.finditer(r"\]\s+(\S+)\s+PROGBITS.*\s[A-Z]*X[A-Z]*\s",
                                                     executable)}
    expected = sum(int(line.split()[1]) for line in listing.splitlines()[2:]
                   if line.split() and line.split()[0] in exec_sections)
    assert kernel_budget.text_bytes(HOST_BUILD_DIR / "attention.o") == expected > 0
