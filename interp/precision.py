"""Which dtype the heavy matmuls run in: bfloat16 where the hardware has units for it, float32 elsewhere.

    bf16_units("cpu")    "AMX-BF16", "AVX512-BF16" or "" (this CPU has neither: bfloat16 would be emulated)
    bf16_units("cuda")   "CUDA <GPU name>" when the GPU computes in bfloat16, else ""
    resolve_dtype("auto", "cpu") -> (torch.bfloat16, "auto: AMX-BF16")

On a CPU without those instructions torch still runs bfloat16, but by converting to float32 and back,
which is slower than float32; so "auto" means float32 there. The choice and its reason go into a run's
config, so a figure can always be traced to the arithmetic that produced it.
"""

from __future__ import annotations

import torch

from interp import InterpError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def bf16_units(device: str = "cpu") -> str:
    """The hardware that runs bfloat16 matmuls natively on `device`, or "" when there is none."""
    if str(device).startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return f"CUDA {torch.cuda.get_device_name(torch.device(device))}"
        return ""
    if torch.cpu._is_amx_tile_supported() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "AMX-BF16"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return ""


def resolve_dtype(name: str, device: str = "cpu") -> tuple[torch.dtype, str]:
    """A dtype name ("auto", "float32", "bfloat16") as a torch dtype, with the reason it was chosen."""
    if name == "auto":
        units = bf16_units(device)
        return (torch.bfloat16, f"auto: {units}") if units else (torch.float32, "auto: no bfloat16 matrix units")
    if name not in DTYPES:
        raise InterpError(f"dtype {name!r}: choose auto, {' or '.join(DTYPES)}.")
    return DTYPES[name], "chosen"
