"""A strict fake of XRT's ``pyxrt`` for machines without an NPU.

Put this folder on ``sys.path`` (or PYTHONPATH) and ``import pyxrt`` finds it. It enforces the
sequence real XRT needs - xclbin registered before its context, kernel
``MLIR_AIE``, opcode 3, the instruction BO cacheable in group_id(1) holding the xclbin's
instruction words and synced to the device, data BOs host_only in group_id(3)/(4) with the
configuration's sizes, inputs synced before the run, outputs synced before they are read, a
timeout on every wait - and raises where real XRT would silently misbehave. The kernel runs
through the host-compiled kernel the xclbin names (``op``: the mel kernel, GELU or attention,
from ``npu.kernel_lib``), so each back-end's whole data path is exercised.

Faults (``FAULTS``, or the env var FAKE_PYXRT_FAULTS="a,b" read by :func:`reset`):
``device_open`` (xrt.device raises), ``xclbin_load`` (xrt.xclbin raises), ``timeout``
(wait returns ERT_CMD_STATE_TIMEOUT), ``error_state`` (ERT_CMD_STATE_ERROR), ``zeros``
(COMPLETED with an all-zero output), ``wrong`` (COMPLETED, plausible non-zero output one unit
off the kernel's: one Q16 step of a log-mel, one bf16 ulp of GELU or attention). A missing device node is made by the environment
helper :func:`make_fake_device`, not here: the processor checks ``/dev/accel`` before pyxrt.
"""

from __future__ import annotations

import enum
import json
import os
import uuid as uuid_module
from pathlib import Path

import numpy as np

FAULT_NAMES = {"device_open", "xclbin_load", "timeout", "error_state", "zeros", "wrong"}
FAULTS: set[str] = set()
STATS: dict[str, int] = {}
_FAKE_MAGIC = "amanuensis-fake-xclbin"
_DATA_ARGUMENTS = {"mel": (3, 4), "gelu": (3, 4), "attention": (3, 4, 5, 6)}
_INSTRUCTION_WORDS = 96


def reset() -> None:
    """Clear counters and read faults from FAKE_PYXRT_FAULTS."""
    FAULTS.clear()
    FAULTS.update(f for f in os.environ.get("FAKE_PYXRT_FAULTS", "").split(",") if f)
    unknown = FAULTS - FAULT_NAMES
    if unknown:
        raise ValueError(f"unknown fake pyxrt faults {sorted(unknown)}")
    STATS.clear()
    STATS.update(devices=0, contexts=0, bos=0, runs=0, waits=0)


class ert_cmd_state(enum.Enum):
    ERT_CMD_STATE_NEW = 1
    ERT_CMD_STATE_QUEUED = 2
    ERT_CMD_STATE_COMPLETED = 4
    ERT_CMD_STATE_ERROR = 5
    ERT_CMD_STATE_ABORT = 6
    ERT_CMD_STATE_TIMEOUT = 8


class xclBOSyncDirection(enum.Enum):
    XCL_BO_SYNC_BO_TO_DEVICE = 0
    XCL_BO_SYNC_BO_FROM_DEVICE = 1


class device:
    def __init__(self, index: int) -> None:
        if type(index) is not int:
            raise TypeError(f"device index must be int, got {type(index).__name__}")
        if "device_open" in FAULTS:
            raise RuntimeError("fake: failed to open device 0 (amdxdna)")
        STATS["devices"] += 1
        self.registered: dict[str, xclbin] = {}

    def register_xclbin(self, xb: xclbin) -> None:
        if not isinstance(xb, xclbin):
            raise TypeError("register_xclbin needs an xclbin")
        self.registered[xb.get_uuid()] = xb


class xclbin:
    def __init__(self, path: str) -> None:
        if not isinstance(path, str):
            raise TypeError("xclbin path must be str")
        if "xclbin_load" in FAULTS:
            raise RuntimeError(f"fake: load_axlf: Invalid argument ({path})")
        meta = json.loads(Path(path).read_text())
        if meta.get("magic") != _FAKE_MAGIC:
            raise RuntimeError(f"{path} is not an xclbin")
        self.meta = meta
        self.insts_path = Path(path).with_name(Path(path).name.replace(".xclbin", ".insts.bin"))

    def get_uuid(self) -> str:
        return self.meta["uuid"]


class hw_context:
    def __init__(self, dev: device, xclbin_uuid: str) -> None:
        if xclbin_uuid not in dev.registered:
            raise RuntimeError("hw_context: xclbin not registered on this device")
        STATS["contexts"] += 1
        self.device, self.xclbin = dev, dev.registered[xclbin_uuid]


class bo:
    normal, cacheable, host_only = "normal", "cacheable", "host_only"

    def __init__(self, dev: device, size: int, flags: str, group: int) -> None:
        if not isinstance(dev, device) or type(size) is not int or size <= 0:
            raise TypeError("bo(device, size:int > 0, flags, group_id)")
        if flags not in (bo.normal, bo.cacheable, bo.host_only) or type(group) is not int:
            raise TypeError(f"bad bo flags/group {flags!r} {group!r}")
        STATS["bos"] += 1
        self.size, self.flags, self.group = size, flags, group
        self.host = np.zeros(size, dtype=np.uint8)
        self.device_copy = np.zeros(size, dtype=np.uint8)
        self.host_dirty = self.device_newer = False

    def write(self, data, offset: int) -> None:
        raw = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
        if offset < 0 or offset + raw.size > self.size:
            raise RuntimeError(f"write of {raw.size} B at {offset} overflows a {self.size} B bo")
        self.host[offset:offset + raw.size] = raw
        self.host_dirty = True

    def sync(self, direction: xclBOSyncDirection) -> None:
        if direction is xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE:
            self.device_copy[:] = self.host
            self.host_dirty = False
        elif direction is xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE:
            self.host[:] = self.device_copy
            self.device_newer = False
        else:
            raise TypeError(f"bad sync direction {direction!r}")

    def read(self, size: int, offset: int) -> np.ndarray:
        if self.device_newer:
            raise RuntimeError("read of a bo the device wrote, without sync FROM_DEVICE")
        if offset < 0 or offset + size > self.size:
            raise RuntimeError("read out of bounds")
        return self.host[offset:offset + size].view(np.int8).copy()


class run:
    def __init__(self, state: ert_cmd_state) -> None:
        self._state = state

    def wait(self, timeout_ms: int | None = None) -> ert_cmd_state:
        if type(timeout_ms) is not int or timeout_ms <= 0:
            raise RuntimeError("fake pyxrt: every wait needs a timeout in ms (int > 0)")
        STATS["waits"] += 1
        return self._state


class kernel:
    def __init__(self, context: hw_context, name: str) -> None:
        if not isinstance(context, hw_context):
            raise TypeError("kernel(hw_context, name)")
        if name != context.xclbin.meta["kernel"]:
            raise RuntimeError(f"no kernel {name!r} in xclbin")
        self.context = context
        meta = context.xclbin.meta
        self.op = meta.get("op", "mel")
        self.data_arguments = _DATA_ARGUMENTS[self.op]
        if self.op == "mel":
            self.n_mels, self.frames = meta["n_mels"], meta["frames_per_call"]
        self.insts = np.fromfile(context.xclbin.insts_path, dtype=np.uint32)

    def group_id(self, argument: int) -> int:
        if argument != 1 and argument not in self.data_arguments:
            raise RuntimeError(f"argument {argument} is not a buffer of this kernel")
        return 100 + argument

    def __call__(self, *args) -> run:
        if len(args) != 3 + len(self.data_arguments):
            raise RuntimeError(f"kernel takes {3 + len(self.data_arguments)} arguments (opcode, "
                               f"instr, ninstr, buffers), got {len(args)}")
        opcode, bo_instr, n_instr, *buffers = args
        if type(opcode) is not int or opcode != 3:
            raise RuntimeError(f"opcode must be int 3, got {opcode!r}")
        if type(n_instr) is not int or n_instr != self.insts.size:
            raise RuntimeError(f"instruction count must be int {self.insts.size}, got {n_instr!r}")
        self._check_bo(bo_instr, bo.cacheable, 1, self.insts.nbytes)
        if not np.array_equal(bo_instr.device_copy.view(np.uint32), self.insts):
            raise RuntimeError("instruction bo on the device does not hold the instructions")
        sizes = self._buffer_bytes()
        for argument, buffer in zip(self.data_arguments, buffers, strict=True):
            self._check_bo(buffer, bo.host_only, argument, sizes[argument])
        STATS["runs"] += 1
        if "timeout" in FAULTS:
            return run(ert_cmd_state.ERT_CMD_STATE_TIMEOUT)
        if "error_state" in FAULTS:
            return run(ert_cmd_state.ERT_CMD_STATE_ERROR)
        out_bo = buffers[-1]
        if "zeros" in FAULTS:
            out_bo.device_copy[:] = 0
        else:
            out = self._compute([b.device_copy for b in buffers[:-1]])
            if "wrong" in FAULTS:
                out = out + out.dtype.type(1)
            out_bo.device_copy[:] = out.view(np.uint8).ravel()
        out_bo.device_newer = True
        return run(ert_cmd_state.ERT_CMD_STATE_COMPLETED)

    def _buffer_bytes(self) -> dict[int, int]:
        if self.op == "mel":
            from npu.mel.host import call_samples

            return {3: call_samples(self.frames) * 2, 4: self.frames * self.n_mels * 4}
        from npu.ops import tables

        if self.op == "gelu":
            config = tables.gelu_config()
            size = 2 * config["OBJECTS_PER_CALL"] * config["OBJECT_ELEMENTS"]
            return {3: size, 4: size}
        rows, keys = tables.attention_padded_sizes()
        dim = tables.attention_config()["HEAD_DIM"]
        return {3: 2 * rows * dim, 4: 2 * dim * keys, 5: 2 * keys * dim, 6: 2 * rows * dim}

    def _compute(self, inputs: list[np.ndarray]) -> np.ndarray:
        """The host-built kernel on the device copies of the input buffers."""
        from npu import kernel_lib

        if self.op == "mel":
            return kernel_lib.host_kernel(self.n_mels)(inputs[0].view(np.int16), self.frames)
        if self.op == "gelu":
            return kernel_lib.host_gelu()(inputs[0].view(np.uint16))
        from npu.ops import tables

        n, dim = tables.attention_config()["MAX_KEYS"], tables.attention_config()["HEAD_DIM"]
        rows, keys = tables.attention_padded_sizes()
        q = inputs[0].view(np.uint16).reshape(rows, dim)[:n]
        kt = inputs[1].view(np.uint16).reshape(dim, keys)[:, :n]
        v = inputs[2].view(np.uint16).reshape(keys, dim)[:n]
        out = np.zeros((rows, dim), np.uint16)
        out[:n] = kernel_lib.host_attention()(q, kt.T, v)
        return out

    def _check_bo(self, buffer, flags: str, argument: int, size: int) -> None:
        if not isinstance(buffer, bo):
            raise TypeError(f"argument {argument} must be a bo, got {type(buffer).__name__}")
        if buffer.flags != flags or buffer.group != self.group_id(argument):
            raise RuntimeError(f"argument {argument}: bo flags {buffer.flags} group "
                               f"{buffer.group}, expected {flags} group {self.group_id(argument)}")
        if buffer.size != size:
            raise RuntimeError(f"argument {argument}: bo of {buffer.size} B, expected {size} B")
        if buffer.host_dirty:
            raise RuntimeError(f"argument {argument}: written but not synced to the device")


def write_fake_artifacts(kernel_dir: Path, n_mels: int, frames_per_call: int) -> None:
    """A fake xclbin (JSON naming its configuration) and an instruction stream, at the paths
    ``npu.mel.npu.artifact_paths`` gives."""
    from npu.mel.npu import artifact_paths

    xclbin_path, insts_path = artifact_paths(kernel_dir, n_mels, frames_per_call)
    xclbin_path.parent.mkdir(parents=True, exist_ok=True)
    xclbin_path.write_text(json.dumps({
        "magic": _FAKE_MAGIC, "kernel": "MLIR_AIE", "n_mels": n_mels,
        "frames_per_call": frames_per_call, "uuid": str(uuid_module.uuid4())}))
    np.arange(1, _INSTRUCTION_WORDS + 1, dtype=np.uint32).tofile(insts_path)


def write_fake_op_artifacts(kernel_dir: Path) -> None:
    """Fake xclbins and instruction streams of the GELU and attention designs, at the paths
    ``npu.ops.npu.artifact_paths`` gives."""
    from npu.ops import tables
    from npu.ops.npu import artifact_paths

    for op, stem in (("gelu", tables.gelu_stem()), ("attention", tables.attention_stem())):
        xclbin_path, insts_path = artifact_paths(kernel_dir, stem)
        xclbin_path.parent.mkdir(parents=True, exist_ok=True)
        xclbin_path.write_text(json.dumps({"magic": _FAKE_MAGIC, "kernel": "MLIR_AIE", "op": op,
                                           "uuid": str(uuid_module.uuid4())}))
        np.arange(1, _INSTRUCTION_WORDS + 1, dtype=np.uint32).tofile(insts_path)


def make_fake_device(root: Path, *, device_node: bool = True,
                     configs=((80, 3000), (80, 30), (128, 3000), (128, 30)),
                     ops: bool = True) -> dict[str, str]:
    """Build a fake NPU under ``root``: ``root/accel/accel0`` and the artifacts (the mel
    ``configs`` and, with ``ops``, GELU and attention) in ``root/kernels``. Returns the environment a process needs to see it (this folder on
    PYTHONPATH, AMANUENSIS_NPU_DEVICE_DIR) plus ``ARTIFACTS_DIR`` for the caller."""
    accel = root / "accel"
    accel.mkdir(parents=True, exist_ok=True)
    if device_node:
        (accel / "accel0").touch()
    artifacts = root / "kernels"
    for n_mels, frames in configs:
        write_fake_artifacts(artifacts, n_mels, frames)
    if ops:
        write_fake_op_artifacts(artifacts)
    here = str(Path(__file__).resolve().parent)
    python_path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": python_path, "AMANUENSIS_NPU_DEVICE_DIR": str(accel),
            "ARTIFACTS_DIR": str(artifacts)}


reset()
