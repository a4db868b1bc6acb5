"""Native TensorRT 10 engines: tensor-address API, pinned host buffers, one CUDA stream.

UNVERIFIED HERE: the development and CI machines have no GPU and cannot install TensorRT.
Written against NVIDIA's TensorRT 10 Python API and cuda-python's runtime bindings. An engine is
only valid for the TensorRT version and GPU that built it: the `.json` sidecar written by
`mer-export` names both, and a stale or foreign engine is refused before it is deserialised.
"""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np

from .backends import ModelInfo, check_logits, read_model_info
from .contract import OUTPUT, Sidecar
from .errors import ModelError


def _cuda():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTModel:
    def __init__(self, path: Path):
        try:
            import tensorrt as trt
        except ImportError:
            raise ModelError(path, "TensorRT engine given but tensorrt is not installed (pip install 'mer[tensorrt]')") from None
        cudart = _cuda()
        if cudart is None:
            raise ModelError(path, "TensorRT engine given but cuda-python is not installed (pip install 'mer[tensorrt]')")
        sidecar_path = path.with_suffix(path.suffix + ".json")
        if not sidecar_path.is_file():
            raise ModelError(path, f"no sidecar {sidecar_path.name}: cannot tell which TensorRT and GPU built it")
        try:
            sidecar = json.loads(sidecar_path.read_text())
            props = _check(cudart.cudaGetDeviceProperties(0))
        except (json.JSONDecodeError, RuntimeError) as exc:
            raise ModelError(path, f"cannot check the engine against this machine ({exc})") from None
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        capability = f"{props.major}.{props.minor}"
        built = (sidecar.get(Sidecar.TENSORRT_VERSION), sidecar.get(Sidecar.GPU),
                 sidecar.get(Sidecar.COMPUTE_CAPABILITY, capability))
        if built != (trt.__version__, gpu, capability):
            raise ModelError(path, f"engine built with TensorRT {built[0]} on {built[1]} (sm {built[2]}); this is "
                                   f"TensorRT {trt.__version__} on {gpu} (sm {capability}): "
                                   "rebuild it with mer-export on this machine")
        self._trt, self._cudart = trt, cudart
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(path, "TensorRT could not deserialise this engine")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[np.ndarray, int, int]] = {}  # name -> (pinned host view, device ptr, bytes)
        inputs, outputs, shapes = {}, [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host_ptr = _check(cudart.cudaMallocHost(nbytes))
            host = np.ctypeslib.as_array(ctypes.cast(host_ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
            host = host.view(dtype).reshape(shape)
            device = _check(cudart.cudaMalloc(nbytes))
            self.context.set_tensor_address(name, device)
            self._buffers[name] = (host, device, nbytes)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs[name] = (dtype.name, list(shape))
            else:
                outputs.append(name)
                shapes[name] = list(shape)
        self.info: ModelInfo = read_model_info(path, sidecar.get(Sidecar.METADATA, {}), inputs, outputs,
                                               shapes.get(OUTPUT))
        self.backend_name = f"tensorrt:{trt.__version__}"
        self.precision = sidecar.get(Sidecar.PRECISION, "fp16")

    def close(self) -> None:
        """Free the pinned and device buffers and the stream."""
        cudart = self._cudart
        for host, device, _ in self._buffers.values():
            cudart.cudaFreeHost(host.ctypes.data)
            cudart.cudaFree(device)
        self._buffers = {}
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def run(self, faces: np.ndarray, mfcc: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, value in (("faces", faces), ("mfcc", mfcc)):
            host, device, nbytes = self._buffers[name]
            np.copyto(host, value)
            _check(cudart.cudaMemcpyAsync(device, host.ctypes.data, nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(stream_handle=self.stream):
            raise RuntimeError("TensorRT execution failed")
        host, device, nbytes = self._buffers["logits"]
        _check(cudart.cudaMemcpyAsync(host.ctypes.data, device, nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return check_logits(self.info.path, host.copy(), len(self.info.labels))
