"""The torch device of a config: one validated type, resolved in one place.

A config field annotated `Device` accepts auto, cpu, cuda, cuda:N or mps (checked without torch, so the
command line answers at once) and holds the name as a plain str. Device(name).resolve() asks torch whether
the device exists; the runner resolves it once, through asdx.systems.base.SystemContext, and systems read
context.device.
"""

from __future__ import annotations

import re


class Device(str):
    """A torch device name: auto, cpu, cuda, cuda:N or mps (lower-cased, checked on creation, without torch).

    As a config field's annotation it checks the value and keeps the name as a plain str, so that
    config.json, config files and checkpoints (torch.load(weights_only=True)) hold a plain string.
    """

    PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
    EXPECTED = "auto, cpu, cuda, cuda:N or mps"

    def __new__(cls, value: object = "auto") -> "Device":
        text = str(value).strip().lower()
        if not cls.PATTERN.fullmatch(text):
            raise ValueError(f"device: expected {cls.EXPECTED}, got {value!r}.")
        return super().__new__(cls, text)

    def resolve(self):
        """The torch.device: 'auto' -> cuda when torch sees a CUDA GPU, else cpu; the others when available.

        Raises ValueError naming `device` for a device torch cannot use here.
        """
        import torch

        if self == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.startswith("cuda"):
            if not torch.cuda.is_available():
                build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built for CPU"
                raise ValueError(f"device: {str(self)!r} requested but torch sees no CUDA GPU "
                                 f"(torch {torch.__version__}, {build}); use --device cpu or auto.")
            index = int(self.split(":")[1]) if ":" in self else 0
            count = torch.cuda.device_count()
            if index >= count:
                raise ValueError(f"device: {str(self)!r} requested but torch sees {count} CUDA GPU(s) "
                                 f"(cuda:0 to cuda:{count - 1}).")
        if self == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device: {str(self)!r} requested but torch sees no MPS device.")
        return torch.device(str(self))

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        """pydantic: a string, checked by Device(...) (its ValueError becomes the field's message), kept as str."""
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(lambda value: str(cls(value)), core_schema.str_schema())


__all__ = ["Device"]
