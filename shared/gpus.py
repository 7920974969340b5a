"""GPUs per Azure VM size: which sizes are GPU (N-series, NVIDIA) sizes and how many GPUs a node has (pure).

`gpu_count` answers 0 for a size that is not an N-series size, the number of GPU devices a node of
that size shows (`nvidia-smi -L`) for a known NVIDIA size, and raises `UnknownGpuSize` for an N-series
name it does not know, rather than guess a count a task would then trust. A partial-GPU size (NVadsA10
v5) shows one device. The AMD sizes (NVv4, NGads V620, ND MI300X v5) are refused: NVIDIA's container
toolkit, which gives a container its GPUs, does not serve them.

Source: the Azure VM size pages (learn.microsoft.com/azure/virtual-machines/sizes/gpu-accelerated/*),
one row per size; sizes are matched case-insensitively, with or without "Standard_".
"""
from __future__ import annotations

import re

_NVIDIA = {
    # NC (K80), NCv2 (P100), NCv3 (V100)
    "nc6": 1, "nc12": 2, "nc24": 4, "nc24r": 4,
    "nc6s_v2": 1, "nc12s_v2": 2, "nc24s_v2": 4, "nc24rs_v2": 4,
    "nc6s_v3": 1, "nc12s_v3": 2, "nc24s_v3": 4, "nc24rs_v3": 4,
    # NCasT4_v3 (T4), NC A100 v4, NCads H100 v5, NCCads H100 v5
    "nc4as_t4_v3": 1, "nc8as_t4_v3": 1, "nc16as_t4_v3": 1, "nc64as_t4_v3": 4,
    "nc24ads_a100_v4": 1, "nc48ads_a100_v4": 2, "nc96ads_a100_v4": 4,
    "nc40ads_h100_v5": 1, "nc80adis_h100_v5": 2, "ncc40ads_h100_v5": 1,
    # ND (P40), NDv2 (V100), ND A100 v4, ND H100 v5, ND H200 v5
    "nd6s": 1, "nd12s": 2, "nd24s": 4, "nd24rs": 4,
    "nd40rs_v2": 8, "nd96asr_v4": 8, "nd96amsr_a100_v4": 8, "nd96isr_h100_v5": 8, "nd96isr_h200_v5": 8,
    # NV (M60), NVv3 (M60), NVadsA10 v5 (A10; the smaller sizes are a share of one A10, seen as one device)
    "nv6": 1, "nv12": 2, "nv24": 4,
    "nv12s_v3": 1, "nv24s_v3": 2, "nv48s_v3": 4,
    "nv6ads_a10_v5": 1, "nv12ads_a10_v5": 1, "nv18ads_a10_v5": 1, "nv36ads_a10_v5": 1, "nv36adms_a10_v5": 1,
    "nv72ads_a10_v5": 2,
}
_AMD = re.compile(r"^(nv\d+as_v4|ng\d+ads_v620_v1|nd\d+isr_mi300x_v5)$")
# NC6, ND96asr_v4, NV12s_v3, NG8ads_V620_v1, NCC40ads_H100_v5 ...; not NP (FPGAs, no GPU)
_N_SERIES = re.compile(r"^n(?!p\d)[a-z]*\d")


class UnknownGpuSize(ValueError):
    """An N-series size the table does not know (or an AMD one): its GPU count cannot be trusted."""


def _key(vm_size: str) -> str:
    name = vm_size.strip().lower()
    return name[len("standard_"):] if name.startswith("standard_") else name


def is_gpu_size(vm_size: str) -> bool:
    """True for any N-series name, known or not."""
    return bool(_N_SERIES.match(_key(vm_size)))


def gpu_count(vm_size: str) -> int:
    """GPU devices on one node of `vm_size`; 0 for a size without GPUs. Raises UnknownGpuSize."""
    key = _key(vm_size)
    if key in _NVIDIA:
        return _NVIDIA[key]
    if _AMD.match(key):
        raise UnknownGpuSize(f"{vm_size} has AMD GPUs, which batchdrop cannot give to a container task; "
                             f"use an NVIDIA N-series size such as Standard_NC4as_T4_v3 or Standard_NC6s_v3")
    if _N_SERIES.match(key):
        raise UnknownGpuSize(f"{vm_size} looks like a GPU (N-series) size that batchdrop does not know, so it "
                             f"cannot tell the task how many GPUs it has; use a listed size (docs/jobfile.md, "
                             f"\"GPU pools\"), or add it to shared/gpus.py")
    return 0


def known_sizes() -> list[str]:
    """The NVIDIA sizes the table knows, as Azure spells them in docs (for messages and docs)."""
    return sorted(_NVIDIA)
