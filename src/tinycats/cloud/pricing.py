"""What a cloud run costs: Modal's list prices, an estimate before launch, the bill after.

Modal bills per second: each GPU, plus the CPU cores and memory reserved (or used, if
more: modal.com/docs/guide/resources "Billing"). The table below is a copy, so it has a
date and a source; check modal.com/pricing for today's prices. Region selection and
`nonpreemptible` multiply these, and neither is used by tinycats.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinycats.gpus import GpuRequest, parse_gpu_spec

PRICES_AS_OF = "2026-12-03"
PRICE_SOURCES = (
    "modal.com/pricing as quoted by techbytes.app (verified 2026-05-07): T4 0.5904, "
    "L4 0.7992, L40S 1.9512, A100-80GB 2.4984, H100 3.9492 $/h",
    "finops.apis.io Modal profile: CPU $0.0000131/core-s, memory $0.00000222/GiB-s",
    "blaxel.ai Modal pricing guide: B200 6.25 $/h",
    "A10 1.10, A100-40GB 2.10, H200 4.54 $/h: this repository's earlier table, not re-checked",
)
GPU_USD_PER_HOUR = {
    "T4": 0.5904,
    "L4": 0.7992,
    "A10": 1.10,
    "A10G": 1.10,
    "L40S": 1.9512,
    "A100": 2.10,
    "A100-40GB": 2.10,
    "A100-80GB": 2.4984,
    "H100": 3.9492,
    "H100!": 3.9492,
    "H200": 4.54,
    "B200": 6.25,
    "B200+": 6.25,
}
"""List price of one GPU for one hour (RTX-PRO-6000: no price found, so no estimate)."""
CPU_USD_PER_CORE_SECOND = 0.0000131
MEMORY_USD_PER_GIB_SECOND = 0.00000222
HOURS = 3600.0


@dataclass(frozen=True)
class CostEstimate:
    """USD for `seconds` of `nodes` containers (a cluster bills each); `gpu` is the entry
    priced (the dearest of a list)."""

    gpu: str
    seconds: float
    gpu_usd: float | None
    host_usd: float
    nodes: int = 1

    @property
    def total_usd(self) -> float | None:
        return None if self.gpu_usd is None else self.gpu_usd + self.host_usd


def gpu_usd(request: GpuRequest, seconds: float) -> float | None:
    """The GPUs of one container for `seconds`; None where no price is known."""
    price = GPU_USD_PER_HOUR.get(request.type)
    return None if price is None else price * request.count * seconds / HOURS


def host_usd(cpu: float, memory_mb: int, seconds: float) -> float:
    """The reserved CPU cores and memory of one container for `seconds`."""
    gib = memory_mb / 1024
    return (cpu * CPU_USD_PER_CORE_SECOND + gib * MEMORY_USD_PER_GIB_SECOND) * seconds


def estimate(
    gpu_spec: str, cpu: float, memory_mb: int, seconds: float, nodes: int = 1
) -> CostEstimate:
    """The cost of `seconds` on the request, in each of `nodes` containers (a cluster,
    `modal.nodes`); a fallback list is priced at its dearest entry, so the estimate is an
    upper bound whichever GPU Modal finds."""
    requests = parse_gpu_spec(gpu_spec)
    priced = [(gpu_usd(r, seconds), r) for r in requests]
    known = [(usd, r) for usd, r in priced if usd is not None]
    host = nodes * host_usd(cpu, memory_mb, seconds)
    if len(known) < len(priced):
        unknown = next(r for usd, r in priced if usd is None)
        return CostEstimate(str(unknown), seconds, None, host, nodes)
    usd, request = max(known, key=lambda item: item[0])
    return CostEstimate(str(request), seconds, nodes * usd, host, nodes)


def gpu_type_of_device(device_name: str) -> str | None:
    """The price-table name of a CUDA device (`torch.cuda.get_device_name()`), so the run
    record bills the GPU a fallback list actually got; None when it is not one of Modal's."""
    name = device_name.upper().replace(" ", "-")
    if "A100" in name:
        return "A100-80GB" if "80GB" in name else "A100-40GB"
    for key in ("B200", "H200", "H100", "L40S", "A10G", "A10", "L4", "T4"):
        if key in name:
            return key
    return None
