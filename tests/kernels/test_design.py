"""The design generator's checks and the build's behaviour without mlir-aie."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from npu.kernel_files import HOST_BUILD_DIR, KERNELS_DIR
from npu.kernel_lib import build_host_library
from npu.mel import tables

DESIGN_PY = KERNELS_DIR / "mel" / "design.py"


@pytest.fixture(scope="module")
def design():
    spec = importlib.util.spec_from_file_location("mel_design", DESIGN_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    build_host_library()
    return module


@pytest.mark.parametrize("n_mels", [80, 128])
def test_budget_fits_and_stack_is_checked(design, n_mels):
    config = tables.read_config()
    for npu in ("npu1", "npu2"):
        budget = design.memory_budget(n_mels, HOST_BUILD_DIR / f"mel_n{n_mels}.o", config,
                                      design.TARGETS[npu])
        fifo_in = 2 * 2 * (10 + 2) * 161  # blocks of a gain and 160 samples
        fifo_out = 2 * 4 * 10 * n_mels  # int32 log-mel
        assert budget.fifo_buffers == fifo_in + fifo_out
        assert budget.static_data > 2 * 400 * 2  # window + twiddles at least
        assert 0 < budget.stack_used <= budget.stack == config["CORE_STACK_BYTES"]
        assert budget.data_total <= budget.data_limit == 65536
        assert 0 < budget.program <= budget.program_limit == 16384


def test_refuses_design_over_tile_memory(design):
    config = dict(tables.read_config(), FRAMES_PER_OBJECT=200)
    with pytest.raises(design.DesignError, match="over the 65536 B of npu1"):
        design.memory_budget(128, HOST_BUILD_DIR / "mel_n128.o", config)


def test_refuses_code_over_program_memory(design):
    small = dataclasses.replace(design.TARGETS["npu2"], tile_program_bytes=1024)
    with pytest.raises(design.DesignError, match="program memory of npu2"):
        design.memory_budget(80, HOST_BUILD_DIR / "mel_n80.o", tables.read_config(), small)


def test_refuses_stack_over_core_stack(design, tmp_path):
    obj = tmp_path / "mel.o"
    shutil.copy(HOST_BUILD_DIR / "mel_n80.o", obj)
    obj.with_suffix(".su").write_text("mel.cc:1:1:void big()\t4096\tstatic\n")
    with pytest.raises(design.DesignError, match="stack"):
        design.memory_budget(80, obj, tables.read_config())


def test_mlir_streams_whole_call_through_overlapping_objects(design):
    text = design.design_mlir(80, 3000, tables.read_config())
    assert "memref<483322xi16>" in text and "memref<240000xi32>" in text
    assert "[1, 1, 300, 1932][0, 0, 1610, 1]" in text
    assert 'stack_size = 1024 : i32' in text and '@mel_object' in text


def test_cli_prints_budget_json():
    result = subprocess.run(
        [sys.executable, str(DESIGN_PY), "--config", "mel_n80_f30", "--budget",
         "--host-object", str(HOST_BUILD_DIR / "mel_n80.o")],
        capture_output=True, text=True, check=True)
    budget = json.loads(result.stdout)
    assert budget["target"] == "npu1" and budget["data_total"] <= budget["data_limit"]


def test_make_without_toolchain_says_so():
    result = subprocess.run(["make", "-s", "-C", str(KERNELS_DIR), f"PYTHON={sys.executable}",
                             "AIECC=", "PEANO_INSTALL_DIR="],
                            capture_output=True, text=True, check=True)
    assert "not found: built the host library only" in result.stdout
    failed = subprocess.run(["make", "-s", "-C", str(KERNELS_DIR), "xclbin", "AIECC="],
                            check=False, capture_output=True, text=True)
    assert failed.returncode != 0 and "aiecc.py" in failed.stderr


def test_makefile_builds_the_artifacts_the_npu_back_end_looks_for(tmp_path):
    from npu.mel.npu import artifact_paths

    listing = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(KERNELS_DIR),
                              "configs", f"PYTHON={sys.executable}"],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    built = [tuple(line.split()) for line in listing if line]
    wanted = []
    for n_mels in (80, 128):
        for frames in (3000, 30):
            xclbin, insts = artifact_paths(tmp_path, n_mels, frames)
            assert insts.name == xclbin.name.replace(".xclbin", ".insts.bin")
            wanted.append((xclbin.stem, str(n_mels)))
    assert sorted(built) == sorted(wanted)
    for stem, n_mels in built:
        assert tables.parse_artifact_stem(stem)[0] == int(n_mels)
    with pytest.raises(tables.MelConfigError):
        tables.parse_artifact_stem("mel_n080_f30")
