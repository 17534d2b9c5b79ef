"""Scaling models fitted to measured curves, with parameter uncertainty (scipy.optimize.curve_fit).

Speedup laws (n = N / N0 when the smallest measured world size N0 is not 1; s = serial fraction):
    Amdahl (fixed work, strong scaling):        S(n) = 1 / (s + (1 - s) / n)
    Gustafson (scaled work, weak scaling):      S(n) = n - s (n - 1)
    Karp-Flatt serial fraction of one point:    e = (1/S - 1/n) / (1 - 1/n)   (analysis.scaling.karp_flatt;
                                                 Amdahl's s fitted to that one point alone)
Step-time model (one global step at world size N, data-parallel):
    T(N) = c * g(N) + k * u(N)
    c      compute time per step of one device at N0, measured: the 1-process run's time per step, or
           at N0 > 1 the compute-only (no_sync) steps plus data and optimizer time
    g(N)   1 for weak scaling (fixed per-device batch); N0 / N for strong scaling (fixed global batch)
    u(N)   communication of one step: with an alpha-beta collective fit (trainscale comm), the predicted
           seconds of the gradient collectives the probe step recorded (sum over kinds of calls x
           predict_time(kind, bytes per call, N)); k is then the exposed share (1 - overlap);
           without one, the ring all-reduce's bandwidth term 2(N-1)/N, and k is the exposed seconds
           of one gradient all-reduce at that factor 1 (fitted from the training runs alone)
    k      fitted by weighted least squares (sigma = standard error of each run's mean step time), its
           standard error scaled up by sqrt(chi^2 / dof) when the runs scatter more than their steps do
Predicted throughput = global batch / T(N). Values inside the fitted world sizes are "fitted", outside
"extrapolated"; the communication prediction keeps its own label. Nothing here is "measured".
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats as sps

from trainscale.analysis.collectives import CollectiveModel
from trainscale.analysis.scaling import STRONG, WEAK, karp_flatt

AMDAHL, GUSTAFSON = "amdahl", "gustafson"
FITTED, EXTRAPOLATED, MEASURED = "fitted", "extrapolated", "measured"


class ModelError(ValueError):
    """The data cannot support the requested fit; the message says why."""


# ---------------------------------------------------------------------------------------------
# Amdahl and Gustafson


def amdahl_speedup(n: np.ndarray | float, s: float) -> np.ndarray | float:
    return 1.0 / (s + (1.0 - s) / np.asarray(n, dtype=float))


def gustafson_speedup(n: np.ndarray | float, s: float) -> np.ndarray | float:
    n = np.asarray(n, dtype=float)
    return n - s * (n - 1.0)


LAWS = {AMDAHL: (amdahl_speedup, STRONG), GUSTAFSON: (gustafson_speedup, WEAK)}


@dataclass(frozen=True)
class LawFit:
    law: str
    serial_fraction: float
    stderr: float | None  # None: as many points as parameters, no scatter to estimate it from
    ci_low: float | None  # 95%, Student-t with the fit's degrees of freedom
    ci_high: float | None
    points: int
    dof: int
    rel_rms_error: float  # of the fitted speedups against the points
    base_world: int
    fitted_worlds: list[int]
    matches_mode: str  # the scaling mode the law describes (amdahl: strong, gustafson: weak)
    label: str = FITTED

    def speedup(self, world: float) -> float:
        return float(LAWS[self.law][0](world / self.base_world, self.serial_fraction))

    def efficiency(self, world: float) -> float:
        return self.speedup(world) / (world / self.base_world)

    def label_for(self, world: float) -> str:
        return FITTED if min(self.fitted_worlds) <= world <= max(self.fitted_worlds) else EXTRAPOLATED

    def to_dict(self) -> dict:
        return asdict(self)


def fit_law(law: str, worlds: Sequence[float], speedups: Sequence[float], base_world: float | None = None) -> LawFit:
    """Fit a speedup law's serial fraction s in [0, 1] to (world size, speedup) points, e.g. one point
    per run. Speedups are relative to base_world (default: the smallest world size)."""
    if law not in LAWS:
        raise ValueError(f"law must be one of {', '.join(LAWS)}, got {law!r}")
    from scipy.optimize import OptimizeWarning, curve_fit

    w = np.asarray(worlds, dtype=float)
    y = np.asarray(speedups, dtype=float)
    if w.size != y.size or w.size == 0:
        raise ModelError("worlds and speedups must be non-empty and of equal length")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ModelError("speedups must be positive numbers")
    base = float(base_world if base_world is not None else w.min())
    n = w / base
    if not np.any(n > 1):
        raise ModelError(f"a {law} fit needs a world size above the baseline {base:g}")
    func = LAWS[law][0]
    kf = [karp_flatt(si, ni) for si, ni in zip(y, n) if ni > 1]
    s0 = float(np.clip(np.mean(kf), 0.01, 0.99))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        popt, pcov = curve_fit(func, n, y, p0=(s0,), bounds=([0.0], [1.0]))
    s = float(popt[0])
    dof = int(w.size - 1)
    err = float(np.sqrt(pcov[0, 0])) if dof > 0 and np.isfinite(pcov[0, 0]) else None
    if err is not None:
        half = float(sps.t.ppf(0.975, dof)) * err
        lo, hi = max(0.0, s - half), min(1.0, s + half)
    else:
        lo = hi = None
    rel = (func(n, s) - y) / y
    return LawFit(law=law, serial_fraction=s, stderr=err, ci_low=lo, ci_high=hi, points=int(w.size), dof=dof,
                  rel_rms_error=float(np.sqrt(np.mean(rel ** 2))), base_world=int(base),
                  fitted_worlds=sorted({int(v) for v in w}), matches_mode=LAWS[law][1])


def karp_flatt_points(worlds: Sequence[float], speedups: Sequence[float], base_world: float | None = None
                      ) -> list[tuple[int, float | None]]:
    """The Karp-Flatt serial fraction at each point (None at the baseline itself)."""
    base = float(base_world if base_world is not None else min(worlds))
    return [(int(w), karp_flatt(s, w / base)) for w, s in zip(worlds, speedups)]


# ---------------------------------------------------------------------------------------------
# What the models are fitted to, recomputed from the runs' raw samples


@dataclass
class RunPoint:
    run: str
    world_size: int
    time_per_step_s: float  # measured window / measured steps
    se_s: float  # standard error of that mean (the longest-window rank's step times)
    throughput: float  # global samples per second
    global_batch: float


@dataclass
class SizeData:
    world_size: int
    nodes: int
    nproc: int
    runs: list[RunPoint]
    compute_only_s: float | None = None  # per device and step: no_sync compute + data + optimizer
    compute_only_se_s: float | None = None
    comm_ops: dict[str, dict] | None = None  # kind -> {"calls", "payload_bytes"} per step and rank (probe step)
    grad_bytes: float | None = None  # the optimizer's gradient bytes (max rank)
    oversubscribed: bool = False
    comm_s: float | None = None  # measured time per step inside gradient collectives (DDP comm hook), mean of runs

    @property
    def time_per_step_s(self) -> float:
        return float(np.mean([r.time_per_step_s for r in self.runs]))

    @property
    def throughput(self) -> float:
        """Across runs: global batch / mean time per step (as the report's, main c160113)."""
        return self.global_batch / self.time_per_step_s

    @property
    def global_batch(self) -> float:
        return float(np.mean([r.global_batch for r in self.runs]))


@dataclass
class ScalingData:
    mode: str
    sample_unit: str
    sizes: list[SizeData]

    def size(self, world: int) -> SizeData:
        return next(s for s in self.sizes if s.world_size == world)

    @property
    def worlds(self) -> list[int]:
        return [s.world_size for s in self.sizes]


def _probe_ops(summary: dict) -> tuple[dict | None, float | None]:
    par = summary.get("parallelism") or {}
    per_rank = par.get("per_rank") or {}
    first = per_rank.get("0") or next(iter(per_rank.values()), None)
    if not first:
        return None, None
    grads = [(v.get("optimizer_state_bytes") or {}).get("grads") for v in per_rank.values()]
    grads = [g for g in grads if g]
    return first.get("comm_by_kind"), (float(max(grads)) if grads else None)


def scaling_data(report) -> ScalingData:
    """Per world size, what the models need, from a report (analysis.report.build) and its runs'
    samples. One strategy only."""

    strategies = {s.parallel for s in report.strategies} or {report.environment.get("parallel")}
    if len(strategies) > 1:
        raise ModelError(f"the results hold several strategies ({', '.join(sorted(strategies))}): "
                         "model one strategy at a time (its runs' folder, e.g. RESULTS/runs filtered)")

    by_world: dict[int, list] = {}
    for run in report.runs:
        if run.ok:
            by_world.setdefault(run.world_size, []).append(run)
    sizes = []
    for row in report.rows:
        points, compute_only, compute_only_se, ops, grads, in_comm = [], [], [], None, None, []
        for run in by_world.get(row.world_size, []):
            try:
                m = run.metrics()
            except ValueError:
                continue
            steps = run.reduction().window_rank_step_s
            se = float(np.std(steps, ddof=1) / np.sqrt(steps.size)) if steps.size > 1 else float("nan")
            points.append(RunPoint(run=run.path.name, world_size=row.world_size, time_per_step_s=m["time_per_step_s"],
                                   se_s=se, throughput=m["throughput"]["global_samples_per_s"],
                                   global_batch=m["global_batch"]))
            c = m.get("comm") or {}
            if c.get("comm_s") is not None:
                in_comm.append(c["comm_s"])
            if c.get("compute_only_s") is not None:
                extra = m["breakdown_s"].get("data_s", 0.0) + m["breakdown_s"].get("optimizer_s", 0.0)
                compute_only.append(c["compute_only_s"] + extra)
                if c.get("exposed_ci_low") is not None and c.get("exposed_ci_high") is not None:
                    compute_only_se.append((c["exposed_ci_high"] - c["exposed_ci_low"]) / (2 * 1.96))
            if ops is None:
                ops, grads = _probe_ops(run.summary)
        if not points:
            continue
        sizes.append(SizeData(
            world_size=row.world_size, nodes=row.nodes, nproc=row.nproc, runs=points,
            compute_only_s=float(np.mean(compute_only)) if compute_only else None,
            compute_only_se_s=float(np.mean(compute_only_se)) if compute_only_se else None,
            comm_ops=ops, grad_bytes=grads, oversubscribed=row.oversubscribed,
            comm_s=float(np.mean(in_comm)) if in_comm else None))
    if not sizes:
        raise ModelError(f"no measured throughput runs under {report.source}")
    return ScalingData(mode=report.mode, sample_unit=report.sample_unit, sizes=sizes)


def fit_laws(data: ScalingData, worlds: Sequence[int] | None = None) -> dict[str, LawFit]:
    """Amdahl and Gustafson fitted to one speedup per run (against the mean of the baseline's runs)."""
    use = [s for s in data.sizes if worlds is None or s.world_size in worlds]
    if len(use) < 2:
        raise ModelError("a speedup-law fit needs at least 2 world sizes")
    base = use[0]
    xs, ys = [], []
    for s in use:
        for r in s.runs:
            xs.append(s.world_size)
            if data.mode == STRONG:
                ys.append(base.time_per_step_s / r.time_per_step_s)
            else:
                ys.append(r.throughput / base.throughput)
    return {law: fit_law(law, xs, ys, base.world_size) for law in LAWS}


# ---------------------------------------------------------------------------------------------
# A network of known link rate, as a collective model

LINK_OPS = ("all_reduce", "reduce_scatter", "all_gather")


def link_model(rate_bytes_per_s: float) -> CollectiveModel:
    """Collectives over a ring whose every link carries rate_bytes_per_s in each direction: the bus
    bandwidth is the link rate, no latency term. Stands in for a comm fit where the network is known
    (a shaped emulated link, or the planned cluster's NICs); its predictions are a model, labelled so."""
    from trainscale.analysis.collectives import AlphaBetaFit, bus_factor

    if not rate_bytes_per_s > 0 or not math.isfinite(rate_bytes_per_s):
        raise ModelError(f"link rate must be a positive number of bytes per second, got {rate_bytes_per_s}")
    fits = [AlphaBetaFit(op=op, world_size=2, alpha_s=0.0, beta_s_per_byte=bus_factor(op, 2) / rate_bytes_per_s,
                         alpha_stderr_s=0.0, beta_stderr_s_per_byte=0.0, r_squared=1.0, rel_rms_error=0.0,
                         max_rel_error=0.0, points=0, min_bytes=1, max_bytes=2**50,
                         method=f"link model: ring over links of {rate_bytes_per_s * 8 / 1e6:g} Mbit/s per direction, "
                                "no latency term", label="modelled")
            for op in LINK_OPS]
    return CollectiveModel(fits)


# ---------------------------------------------------------------------------------------------
# The step-time model


@dataclass(frozen=True)
class StepPrediction:
    world_size: int
    step_s: float
    step_low_s: float  # 95% band from the parameters' uncertainty
    step_high_s: float
    throughput: float  # global samples per second
    throughput_low: float
    throughput_high: float
    compute_s: float
    comm_s: float | None  # predicted time in the step's collectives (with a comm fit), before overlap
    exposed_comm_s: float
    global_batch: float
    label: str  # fitted (inside the fitted world sizes) or extrapolated
    comm_label: str  # the communication part's own label

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepTimeModel:
    mode: str
    base_world: int
    fitted_worlds: list[int]
    compute_s: float  # c: per-device compute time per step at base_world (measured)
    compute_se_s: float
    compute_basis: str
    k: float  # exposure: share of collective time not hidden (comm fit) or exposed seconds (ring basis)
    k_se: float | None
    k_basis: str
    comm_basis: str  # "collective fit" or "ring bandwidth term"
    global_batch_base: float  # at base_world
    ops: dict[str, dict] = field(default_factory=dict)  # kind -> calls, payload_bytes per step
    comm_model: CollectiveModel | None = None
    dof: int = 0
    notes: list[str] = field(default_factory=list)
    _grad_sum_wug: float = 0.0  # sum w u g / sum w u^2: how the fitted k moves with c (error propagation)

    @property
    def overlap(self) -> float | None:
        return 1.0 - self.k if self.comm_model is not None else None

    def g(self, world: float) -> float:
        return 1.0 if self.mode == WEAK else self.base_world / world

    def global_batch(self, world: float) -> float:
        return self.global_batch_base * world / self.base_world if self.mode == WEAK else self.global_batch_base

    def comm_units(self, world: int) -> tuple[float, str]:
        """u(N) and its label."""
        if world <= 1:
            return 0.0, FITTED
        if self.comm_model is None:
            return 2.0 * (world - 1) / world, EXTRAPOLATED if world > max(self.fitted_worlds) else FITTED
        total, labels = 0.0, set()
        for kind, op in self.ops.items():
            calls = max(1, int(op["calls"]))
            p = self.comm_model.predict_time(kind, op["payload_bytes"] / calls, world)
            total += calls * p.seconds
            labels.add(p.label)
        return total, EXTRAPOLATED if EXTRAPOLATED in labels else FITTED

    def predict(self, world: int) -> StepPrediction:
        u, comm_label = self.comm_units(world)
        g = self.g(world)
        step = self.compute_s * g + self.k * u
        # Linear error propagation: T = c g + k(c) u, with k's own variance besides.
        dt_dc = g - u * self._grad_sum_wug
        var = (dt_dc * self.compute_se_s) ** 2 + (u * (self.k_se or 0.0)) ** 2
        z = float(sps.t.ppf(0.975, self.dof)) if self.dof > 0 else 1.96
        half = z * math.sqrt(var)
        lo, hi = max(step - half, 0.0), step + half
        batch = self.global_batch(world)
        inside = min(self.fitted_worlds) <= world <= max(self.fitted_worlds)
        return StepPrediction(  # a band reaching zero step time leaves the throughput unbounded above (inf)
            world_size=world, step_s=step, step_low_s=lo, step_high_s=hi, throughput=batch / step,
            throughput_low=batch / hi, throughput_high=batch / lo if lo > 0 else math.inf, compute_s=self.compute_s * g,
            comm_s=u if self.comm_model is not None else None, exposed_comm_s=self.k * u, global_batch=batch,
            label=FITTED if inside else EXTRAPOLATED, comm_label=comm_label)

    def describe(self) -> str:
        if self.comm_model is not None:
            k = f"exposed share of collective time k = {self.k:.3f}" + (f" +/- {self.k_se:.3f}" if self.k_se else "")
            k += (f" (overlap {1 - self.k:.1%})" if self.k <= 1 else
                  " (k > 1: the steps lose more than the predicted collective time)")
        else:
            k = f"exposed ring all-reduce time k = {self.k * 1e3:.2f} ms x 2(N-1)/N" + (
                f" (+/- {self.k_se * 1e3:.2f} ms)" if self.k_se else "")
        if self.comm_model is not None:
            k += f" of the collectives predicted by the {self.comm_basis}"
        return (f"T(N) = {self.compute_s * 1e3:.2f} ms x {'1' if self.mode == WEAK else f'{self.base_world}/N'} "
                f"(compute, {self.compute_basis}) + {k}; fitted on world sizes "
                f"{', '.join(map(str, self.fitted_worlds))} ({self.k_basis})")

    def to_dict(self) -> dict:
        return {"mode": self.mode, "base_world": self.base_world, "fitted_worlds": self.fitted_worlds,
                "compute_s": self.compute_s, "compute_se_s": self.compute_se_s, "compute_basis": self.compute_basis,
                "k": self.k, "k_se": self.k_se, "k_basis": self.k_basis, "comm_basis": self.comm_basis,
                "overlap": self.overlap, "global_batch_base": self.global_batch_base, "ops": self.ops,
                "dof": self.dof, "notes": self.notes, "formula": self.describe(), "label": FITTED}


def _gradient_ops(data: ScalingData, sizes: list[SizeData], comm_model: CollectiveModel) -> tuple[dict, list[str]]:
    """The collectives of one step, from the probe of the largest fitted world size that has one (payloads
    per rank do not depend on the world size for all_reduce, and in nccl-tests' sizes neither for
    all_gather nor reduce_scatter); kinds without a fit are left out and named."""
    notes = []
    probe = next((s for s in reversed(sizes) if s.comm_ops), None) or next((s for s in data.sizes if s.comm_ops), None)
    if probe is not None:
        ops = {k: {"calls": int(v["calls"]), "payload_bytes": float(v["payload_bytes"])}
               for k, v in probe.comm_ops.items() if v.get("calls")}
        source = f"probe step of world size {probe.world_size}"
    else:
        grads = next((s.grad_bytes for s in sizes if s.grad_bytes), None)
        if not grads:
            raise ModelError("the runs recorded neither their collectives nor their gradient bytes: "
                             "cannot predict communication from the collective fit")
        ops = {"all_reduce": {"calls": 1, "payload_bytes": grads}}
        source = "gradient bytes as one all_reduce (no probe recorded)"
    fitted = set(comm_model.ops())
    missing = sorted(set(ops) - fitted)
    if missing:
        notes.append(f"collectives without a fit in the comm results left out of the model: {', '.join(missing)}")
    ops = {k: v for k, v in ops.items() if k in fitted}
    if not ops:
        raise ModelError(f"the comm results fit none of the step's collectives ({', '.join(missing)})")
    notes.append(f"collectives per step from the {source}: "
                 + ", ".join(f"{k} {v['calls']} call(s), {v['payload_bytes'] / 2**20:.2f} MiB" for k, v in ops.items()))
    return ops, notes


def _comm_basis(comm_model: CollectiveModel | None) -> str:
    if comm_model is None:
        return "ring bandwidth term"
    link = [f.method for f in comm_model.fits.values() if f.label == "modelled"]
    return link[0] if link else "collective fit (trainscale comm)"


def fit_step_model(data: ScalingData, worlds: Sequence[int] | None = None,
                   comm_model: CollectiveModel | None = None) -> StepTimeModel:
    """Fit T(N) = c g(N) + k u(N) on the given world sizes (default: all measured)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    sizes = [s for s in data.sizes if worlds is None or s.world_size in worlds]
    if not sizes:
        raise ModelError(f"none of the world sizes {list(worlds or [])} was measured ({data.worlds})")
    base = sizes[0]
    notes = []
    if base.world_size == 1:
        ts = np.array([r.time_per_step_s for r in base.runs])
        c = float(ts.mean())
        ses = [r.se_s for r in base.runs if math.isfinite(r.se_s)]
        c_se = float(np.std(ts, ddof=1) / np.sqrt(ts.size)) if ts.size > 1 else (ses[0] if ses else 0.0)
        basis = f"measured: time per step of the 1-process run{'s' if len(base.runs) > 1 else ''}"
    elif base.compute_only_s is not None:
        c, c_se = base.compute_only_s, base.compute_only_se_s or 0.0
        basis = f"measured: compute-only (no_sync) steps + data + optimizer at world size {base.world_size}"
    else:
        raise ModelError(f"no 1-process run and no compute-only (no_sync) steps at world size {base.world_size}: "
                         "the compute time per device is not measured (run with comm.no_sync_steps > 0)")
    model = StepTimeModel(mode=data.mode, base_world=base.world_size, fitted_worlds=[s.world_size for s in sizes],
                          compute_s=c, compute_se_s=c_se, compute_basis=basis, k=0.0, k_se=None, k_basis="",
                          comm_basis=_comm_basis(comm_model),
                          global_batch_base=base.global_batch, comm_model=comm_model, notes=notes)
    if comm_model is not None:
        model.ops, more = _gradient_ops(data, sizes, comm_model)
        notes += more
    xs, ys, sig, us, gs = [], [], [], [], []
    for s in sizes:
        u, _ = model.comm_units(s.world_size)
        if u <= 0:
            continue
        for r in s.runs:
            xs.append(s.world_size)
            ys.append(r.time_per_step_s - c * model.g(s.world_size))
            sig.append(r.se_s if math.isfinite(r.se_s) and r.se_s > 0 else max(1e-6, 0.05 * r.time_per_step_s))
            us.append(u)
            gs.append(model.g(s.world_size))
    if not xs:
        model.k = 1.0 if comm_model is not None else 0.0
        model.k_basis = ("assumed: no overlap (no world size above 1 to fit it on)" if comm_model is not None
                         else "no communication measured: k = 0 (nothing above world size 1 to fit on)")
        model.notes.append("the communication share is not fitted: " + model.k_basis)
        return model
    u_arr, y_arr, s_arr = np.array(us), np.array(ys), np.array(sig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        popt, pcov = curve_fit(lambda u, k: k * u, u_arr, y_arr, p0=(max(float(np.mean(y_arr / u_arr)), 1e-9),),
                               sigma=s_arr, absolute_sigma=True, bounds=([0.0], [np.inf]))
    k = float(popt[0])
    k_se = float(np.sqrt(pcov[0, 0]))
    dof = len(xs) - 1
    chi2 = float(np.sum(((y_arr - k * u_arr) / s_arr) ** 2))
    if dof > 0 and chi2 / dof > 1:
        k_se *= math.sqrt(chi2 / dof)
    w = 1.0 / s_arr ** 2
    model._grad_sum_wug = float(np.sum(w * u_arr * np.array(gs)) / np.sum(w * u_arr ** 2))
    model.k, model.k_se, model.dof = k, k_se, max(dof, 0)
    if comm_model is not None and k > 1:
        notes.append(f"k = {k:.2f} > 1: the steps lose more time than the predicted collectives take (CPU contention, "
                     "stragglers, or a slower network than the collective fit or link model describes)")
    model.k_basis = (f"weighted least squares on {len(xs)} run(s) above world size 1, sigma = standard error of "
                     "each run's mean step time" + (f", scaled by sqrt(chi^2/dof) = {math.sqrt(chi2 / dof):.2f}"
                                                    if dof > 0 and chi2 / dof > 1 else ""))
    return model


# ---------------------------------------------------------------------------------------------
# Validation: fit on the small world sizes, predict the larger measured ones


@dataclass(frozen=True)
class ValidationPoint:
    world_size: int
    measured_throughput: float
    predicted_throughput: float
    predicted_low: float
    predicted_high: float
    error_pct: float  # (predicted - measured) / measured
    measured_step_s: float
    predicted_step_s: float
    label: str
    amdahl_throughput: float | None = None
    gustafson_throughput: float | None = None
    # The communication part alone (with a collective fit or link model): the predicted seconds per step in
    # the step's collectives against the measured time inside them (DDP comm hook), before any overlap.
    predicted_comm_s: float | None = None
    measured_comm_s: float | None = None

    @property
    def comm_error_pct(self) -> float | None:
        if self.predicted_comm_s is None or not self.measured_comm_s:
            return None
        return 100.0 * (self.predicted_comm_s - self.measured_comm_s) / self.measured_comm_s

    def to_dict(self) -> dict:
        return {**asdict(self), "comm_error_pct": self.comm_error_pct}


@dataclass
class Validation:
    fitted_worlds: list[int]
    model: StepTimeModel
    points: list[ValidationPoint]

    def to_dict(self) -> dict:
        return {"fitted_worlds": self.fitted_worlds, "model": self.model.to_dict(),
                "points": [p.to_dict() for p in self.points]}


def validate(data: ScalingData, fit_worlds: Sequence[int], comm_model: CollectiveModel | None = None) -> Validation:
    """Fit on fit_worlds, predict every other measured world size, and give the prediction error."""
    fit_worlds = sorted(set(fit_worlds))
    others = [s for s in data.sizes if s.world_size not in fit_worlds]
    if not others:
        raise ModelError(f"no measured world size outside the fitted ones ({fit_worlds}) to validate against")
    model = fit_step_model(data, fit_worlds, comm_model)
    try:
        laws = fit_laws(data, fit_worlds)
    except ModelError:
        laws = {}
    base = data.size(model.base_world)
    points = []
    for s in others:
        p = model.predict(s.world_size)
        law_x = {name: base.throughput * law.speedup(s.world_size) for name, law in laws.items()}
        if data.mode == STRONG:  # speedups are of time per step; throughput follows from the fixed batch
            law_x = {name: s.global_batch / (base.time_per_step_s / law.speedup(s.world_size))
                     for name, law in laws.items()}
        points.append(ValidationPoint(
            world_size=s.world_size, measured_throughput=s.throughput, predicted_throughput=p.throughput,
            predicted_low=p.throughput_low, predicted_high=p.throughput_high,
            error_pct=100.0 * (p.throughput - s.throughput) / s.throughput, measured_step_s=s.time_per_step_s,
            predicted_step_s=p.step_s, label=p.label, amdahl_throughput=law_x.get(AMDAHL),
            gustafson_throughput=law_x.get(GUSTAFSON), predicted_comm_s=p.comm_s, measured_comm_s=s.comm_s))
    return Validation(fitted_worlds=fit_worlds, model=model, points=points)
