"""CUDA graphs of the network's forward for fixed shapes: one launch sequence replayed per call.

A GPEN forward is about two thousand small operations; at small batches a GPU spends more time
launching them than computing. :class:`GraphCache` captures the forward once per input key
(batch, size, dtype, device) into a ``torch.cuda.CUDAGraph`` with its own input and output
buffers, and replays it for every later call with that key: the input is copied in, the graph
replayed, the output copied out (a replayed graph overwrites its output buffer).

A graph holds the addresses of the weights and the weight-derived tensors it read, so the key also
carries every parameter's storage address and version: loading new weights, editing them in place
or moving the network captures anew (the old graph is dropped). Each graph keeps its own memory
pool (one forward's working memory), so at most :data:`MAX_GRAPHS` stay captured.

Without a GPU only the keying (:meth:`GraphCache.key`) and the bookkeeping can be tested: the
capture itself is ``capture`` (tests pass a stand-in).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import torch

__all__ = ["MAX_GRAPHS", "GraphCache", "capture_cuda_graph"]

log = logging.getLogger(__name__)

MAX_GRAPHS = 2
"""Captured graphs kept at once (each holds one forward's working memory)."""

Forward = Callable[[torch.Tensor], torch.Tensor]
Replay = Callable[[torch.Tensor], torch.Tensor]


def capture_cuda_graph(forward: Forward, example: torch.Tensor, warmup: int = 2) -> Replay:
    """Capture ``forward`` on a copy of ``example`` (after ``warmup`` calls on a side stream, which
    also make the weight-derived tensors); returns ``replay(x)``: the output of ``forward(x)`` for
    any ``x`` of the example's shape, dtype and device, as a new tensor."""
    static_in = example.clone()
    stream = torch.cuda.Stream(example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            forward(static_in)
    torch.cuda.current_stream(example.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(static_in)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    replay.graph = graph  # keeps the graph (and its pool) alive with the replay
    return replay


class GraphCache:
    """Replays of ``forward`` per input key, captured on first use (``capture``) for the weights of
    ``module`` as they are; at most ``max_graphs``, least recently used dropped first."""

    def __init__(self, module: torch.nn.Module, forward: Forward,
                 capture: Callable[[Forward, torch.Tensor], Replay] = capture_cuda_graph,
                 max_graphs: int = MAX_GRAPHS) -> None:
        self.module = module
        self.forward = forward
        self.capture = capture
        self.max_graphs = max(1, int(max_graphs))
        self.graphs: OrderedDict[tuple, Replay] = OrderedDict()
        self.captures = 0

    def weights_key(self) -> tuple:
        """Storage address and version of every parameter and buffer (changes on load, edit, move)."""
        key = []
        for t in (*self.module.parameters(), *self.module.buffers()):
            try:
                version = t._version
            except RuntimeError:  # inference tensors have no version counter
                version = -1
            key.append((t.data_ptr(), version))
        return tuple(key)

    def key(self, x: torch.Tensor) -> tuple:
        """The capture key of input ``x``: its shape (batch, channels, size, size), dtype and device."""
        return tuple(x.shape), x.dtype, str(x.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.weights_key()
        key = (self.key(x), weights)
        replay = self.graphs.get(key)
        if replay is None:
            stale = [k for k in self.graphs if k[1] != weights]
            for k in stale:  # a graph reads the old weights' addresses: never replay it again
                del self.graphs[k]
            while len(self.graphs) >= self.max_graphs:
                self.graphs.popitem(last=False)
            log.debug("capturing a CUDA graph for input %s", key[0])
            replay = self.capture(self.forward, x)
            self.captures += 1
            self.graphs[key] = replay
        self.graphs.move_to_end(key)
        return replay(x)

    def __deepcopy__(self, memo) -> None:
        """A deep copy of the network (e.g. the float32 fallback of a 16-bit one) runs without graphs."""
        return None

    def clear(self) -> None:
        """Drop every captured graph (and its memory pool)."""
        self.graphs.clear()
