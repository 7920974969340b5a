"""Account quotas: active jobs, pools, dedicated cores and spot/low-priority cores, as the service enforces them.

Guarantees (each verified against the Batch docs; see docs/emulator.md, "Account quotas"):

- Creating a job while the account's active jobs (every job not ``completed``, job schedules: none, they
  are not emulated) are at the quota answers ``409 ActiveJobAndScheduleQuotaReached``; nothing is created.
- Creating a pool while the account's pools are at the quota answers ``409 PoolQuotaReached``. A job whose
  auto pool does not fit is still created, then completed at once with ``executionInfo.schedulingError``
  ``usererror / AutoPoolCreationFailedWithQuotaReached`` (the service reports auto pool failures as job
  scheduling errors), and no pool is created.
- A resize, autoscale evaluation or pool creation asking for more cores than a core quota leaves is not
  refused: the pool allocates the nodes that fit (never fewer than it already has), keeps the requested
  targets, and reports the shortfall in ``resizeErrors`` (``AccountCoreQuotaReached`` /
  ``AccountLowPriorityCoreQuotaReached``), which every later resize replaces. Autoscale pools try again at
  every evaluation; fixed-size pools only on their next resize, as on the service.

Every check is made under ``Engine.lock`` in the engine method that creates or allocates, so concurrent
creates can never overshoot a quota. ``None`` is "unlimited". Quotas are settings, not state: a restart
starts from the flags/environment again.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from . import vmsizes
from .core import EngineCore
from .errors import err
from .model import Json, Pool

# what the service reports (pool resizeErrors, job schedulingError); messages: see docs/emulator.md
DEDICATED_CORE_QUOTA_ERROR = {"code": "AccountCoreQuotaReached",
                              "message": "The specified account has reached core quota"}
LOW_PRIORITY_CORE_QUOTA_ERROR = {"code": "AccountLowPriorityCoreQuotaReached",
                                 "message": "The specified account has reached low priority core quota"}
AUTO_POOL_QUOTA_ERROR = {"category": "usererror", "code": "AutoPoolCreationFailedWithQuotaReached",
                         "message": "The pool quota for the account is reached."}
INACTIVE_JOB_STATES = ("completed", "deleting")


@dataclass(frozen=True)
class Quotas:
    """The account's quotas; ``None`` means unlimited."""
    active_jobs: int | None = None
    pools: int | None = None
    dedicated_cores: int | None = None
    spot_cores: int | None = None

    # attribute <-> control-plane JSON name
    NAMES = (("active_jobs", "activeJobs"), ("pools", "pools"), ("dedicated_cores", "dedicatedCores"),
             ("spot_cores", "spotCores"))

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError(f"quota {f.name} must be a non-negative integer or None, not {v!r}")

    def to_json(self) -> Json:
        return {name: getattr(self, attr) for attr, name in self.NAMES}

    def changed(self, values: Json, replace_all: bool = False) -> Quotas:
        """These quotas with `values` (JSON names) applied; `replace_all`: the ones not given become unlimited."""
        base = Quotas() if replace_all else self
        return replace(base, **{attr: values[name] for attr, name in self.NAMES if name in values})


def parse_quota(text: str | None) -> int | None:
    """A quota from a flag or environment variable: a non-negative integer, or ``unlimited`` / ``none`` /
    empty for no limit. Raises ValueError otherwise."""
    s = (text or "").strip().lower()
    if s in ("", "unlimited", "none"):
        return None
    n = int(s)
    if n < 0:
        raise ValueError(f"a quota cannot be negative: {text}")
    return n


class QuotasMixin(EngineCore):
    """Quota checks and quota-limited node allocation for `Engine` (everything below expects the lock held,
    except the public `quota_status` / `set_quotas`)."""

    # ------------------------------------------------------------------------------------------- usage
    def _active_jobs(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state not in INACTIVE_JOB_STATES)

    @staticmethod
    def _pool_cores(p: Pool) -> tuple[int, int]:
        """The dedicated and low-priority cores the pool holds (a pool being deleted holds none)."""
        if p.state != "active":
            return 0, 0
        vc = vmsizes.vcpus(p.spec.get("vmSize"))
        return vc * (p.alloc_dedicated + p.fallback[0]), vc * (p.alloc_low + p.fallback[1])

    def _core_usage(self, exclude: Pool | None = None) -> tuple[int, int]:
        ded = low = 0
        for p in self.pools.values():
            if p is not exclude:
                d, lo = self._pool_cores(p)
                ded, low = ded + d, low + lo
        return ded, low

    # ------------------------------------------------------------------------------------------- checks
    def _check_job_quota(self) -> None:
        """Raise ``ActiveJobAndScheduleQuotaReached`` if one more active job would exceed the quota."""
        q = self.quotas.active_jobs
        if q is not None and self._active_jobs() >= q:
            raise err("ActiveJobAndScheduleQuotaReached")

    def _pool_quota_allows(self) -> bool:
        q = self.quotas.pools
        return q is None or len(self.pools) < q

    def _check_pool_quota(self) -> None:
        """Raise ``PoolQuotaReached`` if one more pool would exceed the quota."""
        if not self._pool_quota_allows():
            raise err("PoolQuotaReached")

    # ------------------------------------------------------------------------------------------- allocation
    @staticmethod
    def _fit(target: int, current: int, vcpus: int, quota: int | None, used_elsewhere: int) -> int:
        """Nodes allocated for `target`: all of them within the quota, else as many as fit, but never
        fewer than the pool already has (a lower quota does not take nodes away)."""
        if quota is None or target <= current:
            return target
        return min(target, max(current, max(0, quota - used_elsewhere) // vcpus))

    def _allocate(self, p: Pool) -> None:
        """A resize of the pool to its targets, as far as the core quotas allow; its resize errors."""
        vc = vmsizes.vcpus(p.spec.get("vmSize"))
        used_ded, used_low = self._core_usage(exclude=p)
        q = self.quotas
        p.alloc_dedicated = self._fit(p.target_dedicated, p.alloc_dedicated, vc, q.dedicated_cores, used_ded)
        had_low = p.alloc_low
        p.alloc_low = self._fit(p.target_low, p.alloc_low, vc, q.spot_cores, used_low)
        if not self.spot_capacity:  # withheld (`spot`): a pool keeps the spot nodes it has, gains none
            p.alloc_low = min(p.alloc_low, had_low)
        errors = []
        if p.alloc_dedicated < p.target_dedicated:
            errors.append(dict(DEDICATED_CORE_QUOTA_ERROR))
        if p.alloc_low < p.target_low:
            errors.append(dict(LOW_PRIORITY_CORE_QUOTA_ERROR))
        p.resize_errors = errors or None

    @staticmethod
    def _short_of_targets(p: Pool) -> bool:
        return p.alloc_dedicated < p.target_dedicated or p.alloc_low < p.target_low

    def _fallback_node(self, p: Pool) -> tuple[int, int]:
        """The emulator's one node for an autoscale pool at zero nodes with pending tasks: dedicated if it
        fits the dedicated core quota, else low-priority if it fits that one, else none."""
        vc = vmsizes.vcpus(p.spec.get("vmSize"))
        used_ded, used_low = self._core_usage(exclude=p)
        if self.quotas.dedicated_cores is None or used_ded + vc <= self.quotas.dedicated_cores:
            return 1, 0
        if self.spot_capacity and (self.quotas.spot_cores is None or used_low + vc <= self.quotas.spot_cores):
            return 0, 1
        return 0, 0

    # ------------------------------------------------------------------------------------------- control plane
    def quota_status(self) -> Json:
        """The quotas, what counts against them now, and each pool's share."""
        with self.lock:
            ded, low = self._core_usage()
            pools = []
            for p in self.pools.values():
                vc, source = vmsizes.lookup(p.spec.get("vmSize"))
                d, lo = self._pool_cores(p)
                pools.append({"id": p.id, "state": p.state, "vmSize": p.spec.get("vmSize"), "vCPUs": vc,
                              "vCPUsFrom": source, "dedicatedCores": d, "spotCores": lo})
            return {"quotas": self.quotas.to_json(),
                    "usage": {"activeJobs": self._active_jobs(), "pools": len(self.pools), "dedicatedCores": ded,
                              "spotCores": low},
                    "pools": pools}

    def set_quotas(self, values: Json, replace_all: bool = False) -> Json:
        """Change the quotas at run time (JSON names; `replace_all`: the others become unlimited). Affects
        later creates and resizes, and autoscale pools at their next evaluation; nothing is taken away."""
        with self.lock:
            self.quotas = self.quotas.changed(values, replace_all)
            self._notify_scheduler()
        return self.quota_status()
