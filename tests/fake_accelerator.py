"""A second device on a CPU-only machine, with real values: device placement bugs fail here.

Inside :class:`FakeAccelerator`, a tensor moved to :data:`ACCEL` reports ``device.type ==
"meta"`` but keeps its real CPU values, so whole stages (training, attacks, the detector, the
threat models) run to the end and produce numbers. Every operator call is checked the way CUDA
checks it: all non-scalar tensor arguments must be on one device (0-dim CPU tensors may join, as
CUDA allows; index tensors may stay on the CPU, as PyTorch copies them), and a generator must be
on the device of the random numbers it draws. A violation raises :class:`DeviceMismatch`.

Why "meta" and not a fake "cuda": on a machine without a driver, autograd queries the CUDA stream
of every ``cuda`` tensor it records and aborts (``FakeTensorMode`` fails the same way), and
``FakeTensorMode`` has no values, so ``.item()`` and data-dependent shapes (the detector's
per-class grouping) stop it. The mismatches this finds are device-agnostic: a tensor created on
the CPU by default meeting a tensor on the model's device.

The mode also counts traffic between host and device: ``uploads`` (copies from the CPU to the
device, CPU index tensors included) and ``host_reads`` (device values read by the host:
``.item()``, ``int()``, ``.tolist()``, copies to the CPU), each a synchronization on a real GPU.

Code under test must not branch on ``device.type == "cuda"`` to choose placement; branches that
choose speed settings (precision, pinned memory) see "meta" and take the CPU defaults.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

ACCEL = torch.device("meta")
_REAL_GENERATOR = torch.Generator
_REAL_TENSOR = torch.tensor
_REAL_AS_TENSOR = torch.as_tensor

aten = torch.ops.aten
_INDEX_OPS = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default}
_INDEX_OPS.add(aten._index_put_impl_.default)
_COPY_OPS = {aten._to_copy.default, aten.copy_.default}


class DeviceMismatch(RuntimeError):
    """Tensors on two devices met in one operator (CUDA would refuse it)."""


class OnAccel(torch.Tensor):
    """A CPU tensor that says it lives on :data:`ACCEL` (only valid inside the mode)."""

    elem: Tensor

    @staticmethod
    def __new__(cls, elem: Tensor) -> OnAccel:
        r = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=ACCEL,
            requires_grad=elem.requires_grad,
        )
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"{func} on an accelerator tensor outside FakeAccelerator")

    def tolist(self) -> Any:  # a device-to-host read, as on CUDA
        if _ACTIVE:
            _ACTIVE[-1].host_reads += 1
        return self.elem.tolist()

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"can't convert {ACCEL} device type tensor to numpy; use Tensor.cpu()")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        return self.numpy()

    def __repr__(self, **kwargs: Any) -> str:  # type: ignore[override]
        return f"OnAccel({self.elem!r})"


class AccelGenerator(_REAL_GENERATOR):
    """``torch.Generator(device=ACCEL)``: draws on the CPU, reports :data:`ACCEL`."""

    def __new__(cls, device: Any = "cpu") -> AccelGenerator:
        claimed = torch.device(device)
        gen = super().__new__(cls, device="cpu" if claimed == ACCEL else claimed)
        gen._claimed = claimed
        if claimed == ACCEL:  # the dispatcher hands ops a new wrapper: remember the pointer
            _ACCEL_GENERATORS[gen._cdata] = gen
        return gen

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._claimed

    def manual_seed(self, seed: int) -> AccelGenerator:  # type: ignore[override]
        super().manual_seed(seed)
        return self


_ACCEL_GENERATORS: dict[int, AccelGenerator] = {}
_ACTIVE: list[FakeAccelerator] = []


def _generator_device(gen: torch.Generator) -> str:
    return ACCEL.type if gen._cdata in _ACCEL_GENERATORS else gen.device.type


def _device(t: torch.Tensor) -> str:
    return ACCEL.type if isinstance(t, OnAccel) else t.device.type


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _common_device(func: Any, args: tuple, kwargs: dict) -> str | None:
    tensors = _tensors((args, kwargs))
    if func in _INDEX_OPS:
        own = _device(args[0])
        index_devices = {_device(t) for t in _tensors(args[1])}
        if index_devices - {"cpu", own}:
            raise DeviceMismatch(f"{func}: indices on {sorted(index_devices)}, tensor on {own}")
        tensors = [args[0], *_tensors((args[2:], kwargs))]
    devices = {_device(t) for t in tensors if t.dim() > 0 or isinstance(t, OnAccel)}
    if len(devices) > 1:
        raise DeviceMismatch(f"{func}: tensors on {sorted(devices)}")
    return devices.pop() if devices else None


def _unwrap(t: Any) -> Any:
    return t.elem if isinstance(t, OnAccel) else t


class FakeAccelerator(TorchDispatchMode):
    """``with FakeAccelerator(): model.to(ACCEL); ...`` runs with device checks (module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads = 0
        self.host_reads = 0

    def __enter__(self) -> FakeAccelerator:
        _ACTIVE.append(self)

        def tensor(data: Any, *args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
            t = _REAL_TENSOR(data, *args, **kwargs)
            return t if device is None else t.to(device)

        def as_tensor(data: Any, *args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
            t = _REAL_AS_TENSOR(data, *args, **kwargs)
            return t if device is None else t.to(device)

        # torch.tensor(..., device=d) copies below the dispatcher: route it through .to(d)
        torch.tensor, torch.as_tensor, torch.Generator = tensor, as_tensor, AccelGenerator
        return super().__enter__()

    def __exit__(self, *exc: Any) -> Any:
        torch.tensor, torch.as_tensor = _REAL_TENSOR, _REAL_AS_TENSOR
        torch.Generator = _REAL_GENERATOR
        _ACCEL_GENERATORS.clear()
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def _count(self, func: Any, args: tuple, out_device: str) -> None:
        if func is aten._local_scalar_dense.default:
            self.host_reads += int(isinstance(args[0], OnAccel))
        elif func in _INDEX_OPS and isinstance(args[0], OnAccel):  # CPU indices are uploaded
            self.uploads += sum(_device(t) == "cpu" for t in _tensors(args[1]))
        elif func in _COPY_OPS:
            source = _device(args[1] if func is aten.copy_.default else args[0])
            self.uploads += int(source == "cpu" and out_device == ACCEL.type)
            self.host_reads += int(source == ACCEL.type and out_device == "cpu")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if func in _COPY_OPS:  # copies may cross devices
            source = _device(args[0])
        else:
            source = _common_device(func, args, kwargs)
        out_device = source or "cpu"
        if func is aten.copy_.default:
            out_device = _device(args[0])
        if kwargs.get("device") is not None:
            out_device = torch.device(kwargs["device"]).type
            kwargs["device"] = torch.device("cpu")
        gen = kwargs.get("generator")
        if gen is not None and _generator_device(gen) != out_device:
            raise DeviceMismatch(
                f"{func}: generator on {_generator_device(gen)}, draws on {out_device}"
            )
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        self._count(func, args, out_device)
        if func is aten.copy_.default:
            return args[0]
        if out_device == ACCEL.type:
            return tree_map(lambda t: OnAccel(t) if isinstance(t, torch.Tensor) else t, out)
        return out
