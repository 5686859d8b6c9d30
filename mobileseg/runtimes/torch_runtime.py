"""PyTorch eager: the reference every export is compared with."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mobileseg.errors import RuntimeUnavailableError
from mobileseg.runtimes.base import Runtime, Session, SessionInfo

if TYPE_CHECKING:
    from torch import nn


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run PyTorch with ``threads`` intra-op threads (None: leave as is), restoring the previous count."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchSession(Session):
    def __init__(self, module: nn.Module, input_names: list[str], output_names: list[str], threads: int | None):
        import torch

        self.module = module.eval()
        self.input_names = input_names
        self.output_names = output_names
        self.threads = threads
        self.info = SessionInfo("torch", torch.__version__, "<in-memory module>", 0.0, threads)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in self.input_names]
        with torch_threads(self.threads), torch.inference_mode():
            outputs = self.module(*args)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.numpy() for name, out in zip(self.output_names, outputs)}


class TorchRuntime(Runtime):
    name = "torch"
    target = "torch"
    package = "torch"

    def load(self, path: Path, threads: int | None = 1, io: dict | None = None) -> Session:
        raise RuntimeUnavailableError(
            f"the torch runtime runs the in-memory reference model, not a file ({path}); use TorchRuntime.from_module"
        )

    def from_module(
        self, module: nn.Module, input_names: list[str], output_names: list[str], threads: int | None = 1
    ) -> TorchSession:
        start = time.perf_counter()
        session = TorchSession(module, input_names, output_names, threads)
        session.info.load_seconds = time.perf_counter() - start
        return session
