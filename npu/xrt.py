"""XRT (``pyxrt``) objects shared by every NPU back-end of a process: one device per id, one
hardware context per xclbin (with its kernel and instruction stream on the device), and one
kernel run with a timeout. The mel, GELU and attention back-ends all open their kernels here.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from npu.backend import BackendError, FallbackReason

KERNEL_NAME = "MLIR_AIE"
OPCODE = 3
DEFAULT_TIMEOUT_MS = 10_000


def import_pyxrt():
    """The one place pyxrt is imported (tests put a fake module named ``pyxrt`` on the path)."""
    return importlib.import_module("pyxrt")


@dataclass
class XrtContext:
    """One xclbin registered on the process's device: context, kernel, instructions on device."""

    context: object
    kernel: object
    bo_instr: object
    n_instr: int
    users: int = 0


class XrtProcessState:
    """The process-wide XRT objects: one device per id, one context per xclbin."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.devices: dict[int, object] = {}
        self.contexts: dict[tuple[int, str], XrtContext] = {}

    def acquire(self, xrt, device_id: int, xclbin_path: Path, insts_path: Path):
        key = (device_id, str(xclbin_path))
        with self.lock:
            if device_id not in self.devices:
                self.devices[device_id] = xrt.device(device_id)
            device = self.devices[device_id]
            if key not in self.contexts:
                try:
                    self.contexts[key] = _open_context(xrt, device, xclbin_path, insts_path)
                except Exception:
                    self._drop_unused_device(device_id)
                    raise
            entry = self.contexts[key]
            entry.users += 1
            return device, entry

    def release(self, device_id: int, xclbin_path: Path) -> None:
        key = (device_id, str(xclbin_path))
        with self.lock:
            entry = self.contexts.get(key)
            if entry is None:
                return
            entry.users -= 1
            if entry.users <= 0:
                del self.contexts[key]
            self._drop_unused_device(device_id)

    def _drop_unused_device(self, device_id: int) -> None:
        if not any(k[0] == device_id for k in self.contexts):
            self.devices.pop(device_id, None)


XRT = XrtProcessState()


def _open_context(xrt, device, xclbin_path: Path, insts_path: Path) -> XrtContext:
    xclbin = xrt.xclbin(str(xclbin_path))
    device.register_xclbin(xclbin)
    context = xrt.hw_context(device, xclbin.get_uuid())
    kernel = xrt.kernel(context, KERNEL_NAME)
    insts = np.fromfile(insts_path, dtype=np.uint32)
    if insts.size == 0:
        raise ValueError(f"empty instruction stream {insts_path}")
    bo_instr = xrt.bo(device, insts.nbytes, xrt.bo.cacheable, kernel.group_id(1))
    bo_instr.write(insts, 0)
    bo_instr.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
    return XrtContext(context, kernel, bo_instr, int(insts.size))


def open_kernel(device_node: Path, device_id: int, xclbin_path: Path, insts_path: Path):
    """``(xrt, device, context)`` for one xclbin, or :class:`BackendError` naming why not:
    ``no_device``, ``no_xrt``, ``no_kernel_artifacts`` or ``load_failed``, checked in that order."""
    if not device_node.exists():
        raise BackendError(FallbackReason.NO_DEVICE, f"{device_node} does not exist")
    try:
        xrt = import_pyxrt()
    except ImportError as error:
        raise BackendError(FallbackReason.NO_XRT, f"cannot import pyxrt: {error}") from error
    for path in (xclbin_path, insts_path):
        if not path.is_file():
            raise BackendError(FallbackReason.NO_KERNEL_ARTIFACTS,
                               f"{path} not found (build with `make -C kernels`)")
    try:
        device, context = XRT.acquire(xrt, device_id, xclbin_path, insts_path)
    except Exception as error:  # XRT raises RuntimeError subclasses with C++ messages
        raise BackendError(FallbackReason.LOAD_FAILED,
                           f"XRT open of {xclbin_path.name}: {error}") from error
    return xrt, device, context


def host_buffers(xrt, device, context: XrtContext, sizes: dict[int, int]) -> dict[int, object]:
    """host_only data buffers ``{argument: bo}`` of ``sizes[argument]`` bytes each."""
    return {argument: xrt.bo(device, size, xrt.bo.host_only, context.kernel.group_id(argument))
            for argument, size in sizes.items()}


def run_kernel(xrt, context: XrtContext, buffers: list, timeout_ms: int) -> None:
    """One run of the kernel on ``buffers`` (inputs already synced), waiting at most
    ``timeout_ms``; raises ``run_failed`` when it errs or does not complete."""
    try:
        run = context.kernel(OPCODE, context.bo_instr, context.n_instr, *buffers)
        state = run.wait(timeout_ms)
    except Exception as error:
        raise BackendError(FallbackReason.RUN_FAILED, f"kernel run: {error}") from error
    if state != xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
        raise BackendError(FallbackReason.RUN_FAILED, f"kernel run ended in state {state}")


class XrtBackend:
    """What closing an NPU back-end means, for every kernel: drop its buffers, give its share of
    the process's XRT context back (:data:`XRT`), once, under the back-end's lock.

    Subclasses set ``device_id``, ``xclbin_path``, ``_lock``, ``_closed`` and ``_context`` and
    say in :meth:`_drop_buffers` which buffers they hold."""

    device_id: int
    xclbin_path: Path
    _lock: threading.Lock
    _closed: bool
    _context: XrtContext | None

    def _drop_buffers(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        if self._context is not None:
            self._drop_buffers()
            self._context = None
            XRT.release(self.device_id, self.xclbin_path)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
