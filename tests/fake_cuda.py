"""A CPU stand-in for a CUDA device, for tests of the device plumbing on machines without a GPU.

Inside `FakeCuda` (a TorchFunctionMode), ``device="cuda"``/``.to("cuda")``/``.cuda()`` give a
`FakeCudaTensor`: CPU storage that reports ``device == cuda:0``, refuses ``.numpy()`` as a CUDA
tensor does, and stays "on cuda" through every op. An op that mixes it with a CPU tensor of one
or more dimensions raises the error real CUDA raises (indexing with CPU integer or bool tensors
and ``copy_`` between devices are allowed, as on CUDA), so a host tensor that leaks into device work fails here as it would
on a GPU. ``.cpu()``/``.to("cpu")`` are host copies.

Known blind spot: ``nn.Parameter`` objects are exempt from the mixing check (``Module.to``
swaps their ``.data`` in place, so they cannot carry the subclass).
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

CUDA = torch.device("cuda:0")
_NO_NUMPY = "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first."


class FakeCudaTensor(torch.Tensor):
    @property
    def device(self) -> torch.device:
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    def numpy(self, *args, **kwargs):
        raise TypeError(_NO_NUMPY)

    def __array__(self, *args, **kwargs):
        raise TypeError(_NO_NUMPY)


def _is_cuda(d) -> bool:
    if d is None:
        return False
    if isinstance(d, int):
        return True
    try:
        return torch.device(d).type == "cuda"
    except (RuntimeError, TypeError):
        return False


def _is_device(d) -> bool:
    return isinstance(d, torch.device) or (isinstance(d, str) and (d.startswith("cpu") or d.startswith("cuda")))


def _wrap(x):
    if isinstance(x, torch.Tensor) and type(x) is torch.Tensor:
        return x.as_subclass(FakeCudaTensor)
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return tuple(_wrap(y) for y in x)
    if isinstance(x, list):
        return [_wrap(y) for y in x]
    return x


def _tensors(x, out: list) -> list:
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for y in x:
            _tensors(y, out)
    elif isinstance(x, dict):
        for y in x.values():
            _tensors(y, out)
    return out


_HOST_RESULTS = {"tolist", "item", "__bool__", "__float__", "__int__", "__index__", "__len__", "__repr__",
                 "__format__", "dim", "size", "numel", "data_ptr", "stride", "is_contiguous", "element_size",
                 "__hash__"}
_INDEXING = {"__getitem__", "__setitem__", "index_select", "index_put_", "index_put"}


class FakeCuda(TorchFunctionMode):
    """See the module docstring. ``placed`` counts tensors put on the fake device, ``pinned`` the
    host allocations that asked for pinned memory (allocated as ordinary memory here)."""

    def __init__(self) -> None:
        super().__init__()
        self.placed = 0
        self.pinned = 0             # host allocations that asked for pinned memory

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        src = args[0] if args else None
        to_cuda = False
        if kwargs.pop("pin_memory", False):          # page-locked host memory: a CPU build has none
            self.pinned += 1
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
            to_cuda = True
        if name == "to":
            rest, target = list(args[1:]), None         # target: on the fake device after the move
            for i, a in enumerate(rest):
                if isinstance(a, torch.Tensor):             # .to(other): other's device and dtype
                    target = isinstance(a, FakeCudaTensor)
                    break
                if _is_device(a):
                    target, rest[i] = _is_cuda(a), "cpu"
                    break
            if "device" in kwargs:
                target = to_cuda
            if target is None:                              # a dtype change stays where it is
                target = isinstance(src, FakeCudaTensor)
            with torch._C.DisableTorchFunction():
                out = src.to(*rest, **kwargs)
            if target:
                self.placed += not isinstance(src, FakeCudaTensor)
                return out if isinstance(out, FakeCudaTensor) else _wrap(out)
            if isinstance(src, FakeCudaTensor) and out.data_ptr() == src.data_ptr():
                with torch._C.DisableTorchFunction():
                    out = out.clone()                       # a host copy, as from a real device
            return out
        if name == "cuda":
            self.placed += not isinstance(src, FakeCudaTensor)
            return src if isinstance(src, FakeCudaTensor) else _wrap(src)
        if name == "cpu":
            if not isinstance(src, FakeCudaTensor):
                return src
            with torch._C.DisableTorchFunction():
                return src.clone().as_subclass(torch.Tensor)
        if name == "pin_memory":
            return src
        tensors = _tensors(list(args), []) + _tensors(list(kwargs.values()), [])
        on_cuda = any(isinstance(t, FakeCudaTensor) for t in tensors)
        if name == "copy_":                           # a copy between devices is legal; it lands in the destination
            with torch._C.DisableTorchFunction():
                return func(*args, **kwargs)
        if on_cuda and name not in _HOST_RESULTS and name != "__get__":
            host = [t for t in tensors if type(t) is torch.Tensor and t.dim() > 0
                    and not (name in _INDEXING and not t.dtype.is_floating_point)]
            if host:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"cuda:0 and cpu! (in {name}, a host tensor of shape {list(host[0].shape)})")
        with torch._C.DisableTorchFunction():
            out = func(*args, **kwargs)
        if name in _HOST_RESULTS or out is src:          # in place (x.add_(), x.requires_grad_()) returns x
            return out
        if name == "__get__":           # .grad, .data, .T of a device tensor stay on the device
            return _wrap(out) if isinstance(src, FakeCudaTensor) else out
        if to_cuda or on_cuda:
            self.placed += to_cuda
            return _wrap(out)
        return out
