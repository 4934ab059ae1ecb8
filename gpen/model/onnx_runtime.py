"""Running a GPEN ONNX graph with onnxruntime, with the PyTorch network's calling convention.

:class:`OnnxGPEN` is what :func:`gpen.load_model` returns for a ``.onnx`` file whose weights cannot
be mapped onto the PyTorch network: the graph itself runs in onnxruntime (CUDA when
onnxruntime-gpu is installed and the device is CUDA, else CPU; :meth:`OnnxGPEN.to` moves it
between the two), looping over the batch when the graph's batch is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError, ModelLoadError
from .files import corrupt_file_error
from .onnx_graph import GraphSignature, import_onnxruntime

log = logging.getLogger(__name__)


def _ort_error(path: Path, e: Exception) -> ModelLoadError:
    text = str(e).strip()
    detail = text.split(":", 3)[-1].strip() if text.startswith("[ONNXRuntimeError]") else text
    detail = detail.splitlines()[0][:160] if detail else type(e).__name__
    if "INVALID_PROTOBUF" in text or "No graph was found" in text or "Protobuf parsing failed" in text:
        return corrupt_file_error(path, f"onnxruntime: {detail}")
    return ModelLoadError(f"{path.name}: onnxruntime cannot load this graph ({detail}). If it was downloaded, it "
                          f"may be incomplete: delete {path} and download it again; otherwise update onnxruntime.")


def run_in_batches(session, input_name: str, output_name: str, x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """``session``'s output for ``x`` in pieces of ``batch`` (the graph's fixed batch; None: all at
    once), the last piece padded with copies of its last item and cut back; one array per piece."""
    n = x.shape[0]
    step = batch or n
    outs = []
    for i in range(0, n, step):
        part = x[i:i + step]
        m = part.shape[0]
        if batch and m < step:
            part = np.concatenate([part, np.repeat(part[-1:], step - m, axis=0)])
        outs.append(np.asarray(session.run([output_name], {input_name: part})[0])[:m])
    return outs


def create_session(ort, path: Path, providers: list):
    """An onnxruntime session of ``path`` on ``providers``; ``ModelLoadError`` when it cannot be built."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception classes
        raise _ort_error(path, e) from None


class OnnxGPEN:
    """A GPEN graph run by onnxruntime, with the network's calling convention.

    ``net(x)``: ``x`` (B, 3, size, size) RGB in -1..1 on any device; returns the restored batch on
    ``device`` in ``dtype`` (float32, or float16 for a float16 graph). A graph with a fixed batch
    runs in chunks of that batch (the last one padded). The input is never modified.
    """

    config = None

    def __init__(self, path: Path, signature: GraphSignature, device: torch.device, requested: torch.dtype,
                 cpu_session=None) -> None:
        self._ort = import_onnxruntime(path.name)
        self.path = path
        self.signature = signature
        self.size = signature.size
        self.batch = signature.batch
        self.device = torch.device(device)
        self.dtype = signature.torch_dtype
        if requested != self.dtype:
            log.info("%s: %s does not apply on the onnxruntime path: the graph computes in %s", path.name,
                     str(requested).removeprefix("torch."), str(self.dtype).removeprefix("torch."))
        self._cpu_session = cpu_session
        self._session_device: torch.device | None = None  # the CUDA device the session runs on, None: the CPU
        self.session = self._session_for(self.device)
        self.providers = self.session.get_providers()

    def _session_for(self, device: torch.device):
        """The session for ``device``: a CUDA one (built now) when onnxruntime has the CUDA provider and
        ``device`` is CUDA, else the CPU session (built once and kept)."""
        ort, path = self._ort, self.path
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0})
                try:
                    session = create_session(ort, path, [cuda, "CPUExecutionProvider"])
                    self._session_device = torch.device("cuda", device.index or 0)
                    return session
                except ModelLoadError as e:
                    log.warning("%s: onnxruntime's CUDA provider failed (%s); running on the CPU", path.name, e)
            else:
                log.warning("%s: onnxruntime has no CUDA provider here (install onnxruntime-gpu): the graph runs "
                            "on the CPU and its outputs are copied to %s", path.name, device)
        if self._cpu_session is None:
            self._cpu_session = create_session(ort, path, ["CPUExecutionProvider"])
        self._session_device = None
        return self._cpu_session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore a batch (B, 3, S, S) in -1..1."""
        s = self.size
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidInputError(f"{self.path.name} takes (batch, 3, {s}, {s}) images, got {got}.")
        n = x.shape[0]
        if n == 0:
            return torch.empty((0, 3, s, s), dtype=self.dtype, device=self.device)
        arr = x.detach().to(device="cpu", dtype=self.dtype).contiguous().numpy()
        outs = run_in_batches(self.session, self.signature.input_name, self.signature.output_name, arr, self.batch)
        return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0]).to(self.device)

    def eval(self) -> OnnxGPEN:
        return self

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> OnnxGPEN:
        """Run on ``device`` from now on: moving to a CUDA device builds a session with onnxruntime's
        CUDA provider there (when onnxruntime-gpu is installed); moving anywhere else goes back to
        the CPU session and drops the CUDA one, which frees its GPU memory (the offload ComfyUI asks
        for). Outputs go to ``device``. ``dtype`` does not apply to a graph, which computes in its
        own precision."""
        if device is None:
            return self
        device = torch.device(device)
        if device.type == "cuda":
            target = torch.device("cuda", device.index or 0)
            if self._session_device != target:
                self.session = self._session_for(device)
        elif self._session_device is not None:
            self.session = self._session_for(device)  # the CPU session; the CUDA one is released
        self.providers = self.session.get_providers()
        self.device = device
        return self

    def requires_grad_(self, requires_grad: bool = True) -> OnnxGPEN:
        return self

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(())

    def __repr__(self) -> str:
        return (f"OnnxGPEN({self.path.name!r}, size={self.size}, batch={self.batch or 'dynamic'}, "
                f"providers={self.providers})")
