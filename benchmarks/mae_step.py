"""Training-step throughput and peak memory of domainfm's 3D MAE vs MONAI's MaskedAutoEncoderViT.

One *step* is what a training loop does per batch, without the optimizer: gradients reset to
``None`` (``zero_grad(set_to_none=True)``, outside the clock), forward, the masked
reconstruction loss, backward. Both models are built with the same encoder width, depth,
heads, MLP width, decoder width / depth / heads / MLP width, ``qkv_bias=False`` (MONAI's
default), a class token, fixed sin-cos positions, the same patch size, input and mask ratio;
their trainable parameter counts are printed (they agree to well under 1%).

Baseline (MONAI 1.6.1, run with its defaults): ``MaskedAutoEncoderViT`` in train mode. Its
``TransformerBlock``/``SABlock`` default to ``use_flash_attention=False``, i.e. attention as
``einsum`` -> ``softmax`` -> ``einsum`` with the full attention matrix materialized. It draws
its random mask inside ``forward`` (``torch.multinomial``), drops the masked tokens before the
encoder, and returns ``(pred, mask)``: ``pred`` is ``(B, N, prod(patch) * C)`` for every patch
(class token removed) in the order of its ``Conv3d(...).flatten(2).transpose(-1, -2)`` patch
embedding, i.e. C order over the ``(d, h, w)`` token grid, and ``mask`` is 1 where a patch was
hidden. The loss is computed from that output as in the MAE reference code: per-patch
normalized pixels as target (``NormalizedPixelTarget``'s definition, ``patchify`` in the same
grid order, per-vector ``(p0 p1 p2 c)``; the head learns any fixed within-patch order; written
with the same fast variance as our ``MAE`` so the baseline is not handicapped),
``((pred - target) ** 2).mean(-1)`` averaged over the masked patches. Computing the target and
the loss is part of the timed baseline step, as it is part of ours. The run checks that this
target equals ``NormalizedPixelTarget`` and that this masked mean equals our loss formula.

Ours: ``VisionTransformerND`` encoder + ``MAE`` objective (decoder, prediction head on the
masked tokens only, the same loss). In training the mask is drawn in the dataloader workers
(``MaskingCollate``), so the headline step gets a precomputed ``mask``/``keep_idx`` (drawn
outside the clock, a fresh one per step). The row ``ours, mask drawn in step`` draws it inside
the clock (``RandomMasking`` + ``keep_indices``) to show that this does not matter.

Known differences by design: MONAI's decoder also carries the class token (N + 1 tokens vs
our N), its prediction head runs on all tokens (ours on the masked ones), its patch
embedding convolves all patches before masking (ours projects the visible patches only), its
LayerNorm eps is 1e-5 (ours 1e-6) and each of its blocks holds an unused cross-attention
LayerNorm (hence the small parameter-count difference).

Timing: all variants live in one process with the same thread count (``torch.set_num_threads``),
input and dtype (float32). After warm-up steps, each round times one step of every variant, the
order rotating from round to round, so that load changes on a shared machine hit all variants
alike. Reported: median and min step time, throughput = batch / median step time, and the
throughput ratio ours / MONAI as the median over rounds of the per-round ratio (paired) next to
the ratio of the medians and of the minima; also the process CPU time per step (both threads;
less sensitive to other processes on a shared machine) and its paired ratio. The machine load
average is recorded.

Peak memory: each model's step runs in a fresh subprocess (so nothing of the other model or of
earlier steps is resident) with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB, so that
every tensor buffer is its own ``mmap`` and is returned to the OS when freed; resident memory
then follows live tensor memory. The peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after the model and input are built; ``ru_maxrss`` where that is not
possible) minus the resident set just before the first step is the step's peak memory:
activations, gradients (allocated on the first step) and workspaces, model and input excluded.
Two steps run, so the peak is that of a steady step. A second, deterministic measure is the
bytes of the distinct storages autograd saves for backward (``saved_tensors_hooks``;
parameters and the input excluded). On CUDA the peak is ``torch.cuda.max_memory_allocated``
minus the allocated memory before the step, also in a fresh process.

Profile: ``torch.profiler`` over one step of each model, repeated alternately (``--profile-reps``)
keeping each model's least disturbed repetition; ops ranked by self CPU time, and the self time
summed per op category. FLOPs per step come from ``torch.utils.flop_counter`` (CPU flash
attention added with its standard formula): both models are dominated by the same linear
layers, so ``FLOPs(MONAI) / FLOPs(ours)`` is the throughput ratio at equal FLOP rates.

Usage::

    python benchmarks/mae_step.py                     # full run, writes benchmarks/results/
    python benchmarks/mae_step.py --quick             # tiny smoke run, prints only
    python benchmarks/mae_step.py --config vits-96-p16 --batch 2 --rounds 9 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import monai  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from monai.networks.nets import MaskedAutoEncoderViT  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from domainfm.core.grid import TokenGrid  # noqa: E402
from domainfm.core.masking import RandomMasking, keep_indices  # noqa: E402
from domainfm.core.objectives.mae import MAE  # noqa: E402
from domainfm.core.objectives.mae_targets import NormalizedPixelTarget  # noqa: E402
from domainfm.core.patching import patchify  # noqa: E402
from domainfm.core.vit import VisionTransformerND  # noqa: E402


@dataclasses.dataclass
class Config:
    """One benchmark setting (MONAI's names in comments)."""

    name: str
    size: int = 96  # img_size, cubic
    patch: int = 16  # patch_size
    batch: int = 4
    in_chans: int = 1  # in_channels
    hidden: int = 384  # hidden_size
    depth: int = 12  # num_layers
    heads: int = 6  # num_heads
    mlp_dim: int = 1536  # mlp_dim
    decoder_hidden: int = 384  # decoder_hidden_size (MONAI default)
    decoder_depth: int = 4  # decoder_num_layers (MONAI default)
    decoder_heads: int = 12  # decoder_num_heads (MONAI default)
    decoder_mlp_dim: int = 512  # decoder_mlp_dim (MONAI default)
    mask_ratio: float = 0.75  # masking_ratio (MONAI default)

    @property
    def tokens(self) -> int:
        return (self.size // self.patch) ** 3


PRESETS = {
    # ViT-S encoder on a CT crop: 216 tokens, 54 visible.
    "vits-96-p16": Config("vits-96-p16", size=96, patch=16, batch=4),
    # Same model, 512 tokens (128 visible): the decoder's attention grows quadratically.
    "vits-64-p8": Config("vits-64-p8", size=64, patch=8, batch=2),
    # MONAI's own defaults (hidden 768, mlp_dim 512, 12 layers, 12 heads) on 96^3 / patch 16.
    "monai-defaults-96-p16": Config(
        "monai-defaults-96-p16", size=96, patch=16, batch=2, hidden=768, heads=12, mlp_dim=512
    ),
}
DEFAULT_CONFIGS = ["vits-96-p16", "vits-64-p8", "monai-defaults-96-p16"]
QUICK = Config(
    "quick",
    size=32,
    patch=8,
    batch=2,
    hidden=48,
    depth=2,
    heads=4,
    mlp_dim=96,
    decoder_hidden=48,
    decoder_depth=1,
    decoder_heads=4,
    decoder_mlp_dim=64,
)
OVERRIDES = (
    "size",
    "patch",
    "batch",
    "hidden",
    "depth",
    "heads",
    "mlp_dim",
    "decoder_hidden",
    "decoder_depth",
    "decoder_heads",
    "decoder_mlp_dim",
    "mask_ratio",
)


# -- models and steps -------------------------------------------------------------------------
def build_monai(cfg: Config) -> nn.Module:
    return MaskedAutoEncoderViT(
        in_channels=cfg.in_chans,
        img_size=cfg.size,
        patch_size=cfg.patch,
        hidden_size=cfg.hidden,
        mlp_dim=cfg.mlp_dim,
        num_layers=cfg.depth,
        num_heads=cfg.heads,
        masking_ratio=cfg.mask_ratio,
        decoder_hidden_size=cfg.decoder_hidden,
        decoder_mlp_dim=cfg.decoder_mlp_dim,
        decoder_num_layers=cfg.decoder_depth,
        decoder_num_heads=cfg.decoder_heads,
        spatial_dims=3,
    )  # proj_type="conv", pos_embed_type="sincos", qkv_bias=False, no flash attention


def normalized_pixels(x: Tensor, grid: TokenGrid, eps: float = 1e-6) -> Tensor:
    """MAE's per-patch normalized pixels ``(B, N, prod(patch) * C)`` for the MONAI loss.

    ``(t - mean) / sqrt(unbiased var + eps)`` per patch, exactly ``NormalizedPixelTarget``'s
    definition, written with the fast two-pass sum of squares that our ``MAE`` uses (CPU's
    ``torch.var`` is several times slower), so the baseline's loss is not handicapped.
    """
    t = patchify(x, grid)  # (B, N, P * C), a fresh contiguous copy
    t.sub_(t.mean(dim=-1, keepdim=True))
    var = torch.linalg.vector_norm(t, dim=-1, keepdim=True).square_().div_(t.shape[-1] - 1)
    return t.div_(var.add_(eps).sqrt_())


class Ours(nn.Module):
    """domainfm's encoder + MAE objective, configured like the MONAI model."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.encoder = VisionTransformerND(
            in_chans=cfg.in_chans,
            spatial_dims=3,
            patch_size=cfg.patch,
            embed_dim=cfg.hidden,
            depth=cfg.depth,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_dim / cfg.hidden,
            qkv_bias=False,
            class_token=True,
            pos_embed="sincos",
        )
        self.objective = MAE(
            embed_dim=cfg.hidden,
            in_chans=cfg.in_chans,
            patch_size=self.encoder.patch_size,
            decoder_dim=cfg.decoder_hidden,
            decoder_depth=cfg.decoder_depth,
            decoder_heads=cfg.decoder_heads,
            mlp_ratio=cfg.decoder_mlp_dim / cfg.decoder_hidden,
            decoder_qkv_bias=False,
        )

    def forward(self, x: Tensor, mask: Tensor, keep_idx: Tensor) -> Tensor:
        tokens, grid = self.encoder.forward_tokens(x, keep_idx)
        prefix = self.encoder.num_prefix_tokens
        return self.objective(tokens[:, prefix:], grid, keep_idx, mask, x).loss


class Bench:
    """Models, input and one step function per variant for one config."""

    def __init__(self, cfg: Config, device: torch.device, compile_models: bool = False) -> None:
        self.cfg, self.device = cfg, device
        torch.manual_seed(0)
        self.monai = build_monai(cfg).to(device).train()
        torch.manual_seed(0)
        self.ours = Ours(cfg).to(device).train()
        self.x = torch.randn(cfg.batch, cfg.in_chans, cfg.size, cfg.size, cfg.size, device=device)
        self.grid = TokenGrid.from_input(self.x.shape[2:], cfg.patch)
        self.masking = RandomMasking(ratio=cfg.mask_ratio)
        self._next_mask = self.draw_mask()
        self.monai_fwd: Callable[..., Any] = self.monai
        self.ours_fwd: Callable[..., Any] = self.ours
        if compile_models:
            self.monai_fwd = torch.compile(self.monai)
            self.ours_fwd = torch.compile(self.ours)

    def draw_mask(self) -> tuple[Tensor, Tensor]:
        mask = self.masking(self.grid, self.cfg.batch)
        return mask.to(self.device), keep_indices(mask).to(self.device)

    def prepare(self) -> None:
        """Outside the clock: reset gradients, give ours a fresh precomputed mask."""
        for p in self.monai.parameters():
            p.grad = None
        for p in self.ours.parameters():
            p.grad = None
        self._next_mask = self.draw_mask()

    def monai_loss(self) -> Tensor:
        pred, mask = self.monai_fwd(self.x)  # (B, N, prod(patch) * C), (B, N) 1 = hidden
        with torch.no_grad():
            target = normalized_pixels(self.x, self.grid)  # (B, N, prod(patch) * C), same order
        per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
        m = mask.to(per_patch.dtype)
        return (per_patch * m).sum() / m.sum()

    def ours_loss(self) -> Tensor:
        mask, keep = self._next_mask
        loss: Tensor = self.ours_fwd(self.x, mask, keep)
        return loss

    def ours_draw_loss(self) -> Tensor:
        mask, keep = self.draw_mask()
        loss: Tensor = self.ours_fwd(self.x, mask, keep)
        return loss

    def variants(self) -> dict[str, Callable[[], Tensor]]:
        return {
            "monai": self.monai_loss,
            "ours": self.ours_loss,
            "ours, mask drawn in step": self.ours_draw_loss,
        }

    def step(self, loss_fn: Callable[[], Tensor]) -> float:
        loss = loss_fn()
        loss.backward()
        return float(loss.detach())


def loss_checks(bench: Bench) -> dict[str, float]:
    """The baseline's target and loss formula equal ours (max abs differences)."""
    with torch.no_grad():
        x, grid = bench.x, bench.grid
        target = normalized_pixels(x, grid)
        ref = NormalizedPixelTarget()(x, grid)
        mask, _ = bench.draw_mask()  # True = hidden, as MONAI's 1
        pred = torch.randn_like(target)
        m = mask.to(pred.dtype)
        monai_formula = ((pred - target).pow(2).mean(dim=-1) * m).sum() / m.sum()
        masked_idx = mask.nonzero()[:, 1].view(mask.shape[0], -1)
        rows = torch.arange(mask.shape[0], device=mask.device)[:, None]
        ours_formula = torch.nn.functional.mse_loss(
            pred[rows, masked_idx], target[rows, masked_idx]
        )
    return {
        "target_vs_NormalizedPixelTarget": float((target - ref).abs().max()),
        "masked_mean_vs_mse_on_masked": float((monai_formula - ours_formula).abs()),
    }


def param_counts(module: nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return {"trainable": trainable, "total_incl_frozen": total}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- timing -----------------------------------------------------------------------------------
def time_variants(bench: Bench, warmup: int, rounds: int) -> dict[str, Any]:
    variants = bench.variants()
    names = list(variants)
    losses: dict[str, float] = {}
    for name in names:
        for _ in range(warmup):
            bench.prepare()
            losses[name] = bench.step(variants[name])
    sync(bench.device)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            bench.prepare()
            sync(bench.device)
            c0, t0 = time.process_time(), time.perf_counter()
            bench.step(variants[name])
            sync(bench.device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {"times_s": times, "cpu_s": cpu, "first_loss": losses}


def summarize(
    times: dict[str, list[float]], cpu: dict[str, list[float]], batch: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = {
            "median_s": med,
            "min_s": min(ts),
            "q1_s": q[0],
            "q3_s": q[2],
            "throughput_samples_per_s": batch / med,
            "cpu_median_s": statistics.median(cpu[name]),
        }
    base, base_cpu = times["monai"], cpu["monai"]
    for name, ts in times.items():
        paired = [b / t for b, t in zip(base, ts, strict=True)]
        paired_cpu = [b / t for b, t in zip(base_cpu, cpu[name], strict=True)]
        out[name]["ratio_vs_monai_paired_median"] = statistics.median(paired)
        out[name]["ratio_vs_monai_of_medians"] = statistics.median(base) / statistics.median(ts)
        out[name]["ratio_vs_monai_of_minima"] = min(base) / min(ts)
        out[name]["cpu_ratio_vs_monai_paired_median"] = statistics.median(paired_cpu)
    return out


# -- memory -----------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def saved_activation_bytes(bench: Bench, name: str) -> int:
    """Bytes of the distinct storages autograd saves in one step (params and input excluded)."""
    skip = {p.data_ptr() for p in (*bench.monai.parameters(), *bench.ours.parameters())}
    skip.add(bench.x.data_ptr())
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and t.device.type != "meta":
            seen[ptr] = storage.nbytes()
        return t

    bench.prepare()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = bench.variants()[name]()
    loss.backward()
    return sum(seen.values())


def memory_worker(cfg: Config, name: str, device: torch.device) -> dict[str, Any]:
    """Runs in a fresh process: peak memory growth of two steps of one variant."""
    bench = Bench(cfg, device)
    fn = bench.variants()[name]
    other = bench.ours if name == "monai" else bench.monai
    for p in other.parameters():  # free the other model before measuring
        p.data = torch.empty(0, device=device)
    bench.prepare()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(2):
            bench.prepare()
            bench.step(fn)
        torch.cuda.synchronize(device)
        return {
            "peak_bytes": torch.cuda.max_memory_allocated(device) - before,
            "method": "torch.cuda.max_memory_allocated - allocated before",
        }
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        pass
    before_kib = _status_kib("VmRSS")
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        bench.prepare()
        bench.step(fn)
    hwm = _status_kib("VmHWM") if reset else None
    if hwm is not None and before_kib is not None:
        return {
            "peak_bytes": (hwm - before_kib) * 1024,
            "method": "VmHWM (reset via /proc/self/clear_refs) - VmRSS before",
        }
    after_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base = before_kib if before_kib is not None else before_max
    return {"peak_bytes": (after_max - base) * 1024, "method": "ru_maxrss - RSS before"}


def measure_memory(cfg: Config, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One fresh worker process per model (run side by side: each measures only itself)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    procs = {}
    for name in ("monai", "ours"):
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_memory-worker",
            name,
            "--_config",
            json.dumps(dataclasses.asdict(cfg)),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
        ]
        procs[name] = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"memory worker for {name} failed:\n{stderr[-3000:]}")
        results[name] = json.loads(stdout.strip().splitlines()[-1])
    return results


# -- FLOPs ------------------------------------------------------------------------------------
def step_flops(bench: Bench, name: str) -> dict[str, float]:
    """FLOPs of one step by aten op (``FlopCounterMode``; CPU flash attention added)."""
    from torch.utils.flop_counter import (
        FlopCounterMode,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    def fwd(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return int(sdpa_flop_count(q, k, v))

    def bwd(g: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return int(sdpa_backward_flop_count(g, q, k, v))

    aten = torch.ops.aten
    custom = {
        aten._scaled_dot_product_flash_attention_for_cpu: fwd,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd,
    }
    bench.prepare()
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        bench.step(bench.variants()[name])
    counts = {str(k): float(v) for k, v in counter.get_flop_counts()["Global"].items()}
    counts["total"] = float(counter.get_total_flops())
    return counts


# -- profile ----------------------------------------------------------------------------------
CATEGORIES = [
    ("linear layers (mm/addmm)", ("aten::mm", "aten::addmm", "aten::linear")),
    (
        "attention core",
        ("aten::bmm", "softmax", "scaled_dot_product", "aten::einsum", "aten::baddbmm"),
    ),
    ("patch-embed conv", ("convolution", "conv3d", "mkldnn")),
    ("layer norm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    (
        "copies / layout / index",
        (
            "aten::copy_",
            "aten::cat",
            "aten::fill_",
            "aten::clone",
            "aten::gather",
            "aten::scatter",
            "aten::index",
            "aten::repeat",
            "aten::zero_",
            "aten::contiguous",
        ),
    ),
    (
        "elementwise / reductions",
        (
            "aten::add",
            "aten::mul",
            "aten::sub",
            "aten::div",
            "aten::sum",
            "aten::pow",
            "aten::var",
            "aten::mean",
            "aten::sqrt",
            "aten::rsqrt",
            "aten::mse",
            "aten::where",
            "aten::masked",
            "aten::ne",
            "aten::eq",
        ),
    ),
]


def profile_models(bench: Bench, reps: int, top: int) -> dict[str, Any]:
    """Profile one step of each model, ``reps`` times alternating; keep each model's least
    disturbed repetition (smallest total self CPU time; the machine may be shared)."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(reps):
        for name in ("monai", "ours"):
            prof = profile_step(bench, name, top)
            total = prof["self_cpu_ms_per_step"]
            if name not in best or total < best[name]["self_cpu_ms_per_step"]:
                best[name] = prof
    return best


def profile_step(bench: Bench, name: str, top: int, steps: int = 1) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    fn = bench.variants()[name]
    acts = [ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    bench.prepare()
    bench.step(fn)
    with profile(activities=acts) as prof:
        for _ in range(steps):
            bench.prepare()
            bench.step(fn)
        sync(bench.device)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    cats: dict[str, float] = {c: 0.0 for c, _ in CATEGORIES}
    cats["other"] = 0.0
    for e in events:
        cat = next((c for c, keys in CATEGORIES if any(k in e.key for k in keys)), "other")
        cats[cat] += e.self_cpu_time_total
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [
        {
            "op": e.key,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "share": e.self_cpu_time_total / total,
            "calls_per_step": e.count // steps,
        }
        for e in events[:top]
    ]
    return {
        "self_cpu_ms_per_step": total / 1e3 / steps,
        "categories_ms_per_step": {c: v / 1e3 / steps for c, v in cats.items()},
        "top_ops": rows,
    }


# -- report -----------------------------------------------------------------------------------
def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "cpus_available": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "timm": timm.__version__,
        "platform": platform.platform(),
        "load_avg_start": os.getloadavg(),
    }
    with contextlib.suppress(OSError):
        info["cgroup_cpu_max"] = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


NOTES = [
    "Where the difference comes from (ours vs MONAI, same layers and widths):",
    "- patch embedding: ours projects only the visible patches (the kernel == stride conv as a "
    "gather + matmul with the conv's own weight); MONAI convolves every patch, then drops 75%.",
    "- prediction head, target and loss: ours on the masked tokens only; MONAI predicts all "
    "N + 1 tokens and masks the loss afterwards.",
    "- attention: ours fused scaled_dot_product_attention (flash kernel on CPU), MONAI "
    "einsum/softmax/einsum keeping B x heads x L^2 matrices for backward: far less memory, "
    "about the same time on CPU at these sizes.",
    "- everything else (encoder/decoder linear layers, the bulk of the work) is the same "
    "matmuls at near-peak fp32 rate in both; the throughput ratio is therefore bounded by "
    "the FLOP ratio above plus the memory-bound work MONAI does in addition.",
]


def fmt_mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "domainfm MAE vs MONAI MaskedAutoEncoderViT: fwd+bwd training step (no optimizer)",
        f"command: {report['command']}",
        f"date: {report['date']}",
        f"machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs "
        f"({m['cpus_available']} available), torch threads {m['torch_threads']}, "
        f"device {m['device']}" + (f" ({m['gpu']})" if "gpu" in m else ""),
        f"versions: python {m['python']}, torch {m['torch']}, monai {m['monai']}, timm {m['timm']}",
        f"load average (1/5/15 min) at start {tuple(round(v, 2) for v in m['load_avg_start'])},"
        f" at end {tuple(round(v, 2) for v in m['load_avg_end'])}  (shared machine: the timing"
        " is interleaved so load hits both models alike)",
        "",
        "Method: float32, train mode, same input; one step = fwd + loss + bwd (grads reset "
        "outside the clock). MONAI runs with its defaults (unfused einsum/softmax attention, "
        "its own in-forward mask); its loss (masked MSE vs per-patch-normalized pixels) is "
        "computed from its (pred, mask) output inside the step. 'ours' gets a precomputed "
        "mask (as from the dataloader workers); 'ours, mask drawn in step' draws it inside the "
        "clock. Rounds time every variant once in rotating order; ratio = median over rounds "
        "of t_monai / t_variant. Peak memory = peak RSS growth over one fresh process per model"
        " (glibc mmap threshold 64 KiB so freed buffers leave the RSS), two steps; "
        "'saved' = bytes autograd keeps for backward (deterministic).",
    ]
    for res in report["results"]:
        c = res["config"]
        t = res["timing"]
        lines += [
            "",
            f"== {c['name']}: input ({c['batch']}, {c['in_chans']}, {c['size']}^3), patch "
            f"{c['patch']} -> {res['tokens']} tokens ({res['visible']} visible), mask ratio "
            f"{c['mask_ratio']}",
            f"   encoder hidden {c['hidden']}, depth {c['depth']}, heads {c['heads']}, mlp "
            f"{c['mlp_dim']}; decoder hidden {c['decoder_hidden']}, depth {c['decoder_depth']},"
            f" heads {c['decoder_heads']}, mlp {c['decoder_mlp_dim']}; qkv_bias False; "
            f"{res['warmup']} warm-up steps, {res['rounds']} rounds",
            f"   trainable params: monai {res['params']['monai']['trainable']:,}, ours "
            f"{res['params']['ours']['trainable']:,} (ours/monai "
            f"{res['params']['ours']['trainable'] / res['params']['monai']['trainable']:.4f})",
            f"   loss at init: monai {res['first_loss']['monai']:.4f}, ours "
            f"{res['first_loss']['ours']:.4f}; checks: baseline target vs "
            f"NormalizedPixelTarget {res['checks']['target_vs_NormalizedPixelTarget']:.1e}, "
            f"masked-mean vs our mse {res['checks']['masked_mean_vs_mse_on_masked']:.1e}",
            f"   {'variant':<28}{'median s':>9}{'min s':>8}{'IQR s':>15}{'samples/s':>10}"
            f"{'x monai':>8}{'(medians':>9}{' minima)':>9}{'CPU s':>8}{'x monai':>8}",
        ]
        for name, s in t.items():
            lines.append(
                f"   {name:<28}{s['median_s']:>9.3f}{s['min_s']:>8.3f}"
                f"{s['q1_s']:>8.3f}-{s['q3_s']:<6.3f}{s['throughput_samples_per_s']:>10.2f}"
                f"{s['ratio_vs_monai_paired_median']:>8.2f}{s['ratio_vs_monai_of_medians']:>9.2f}"
                f"{s['ratio_vs_monai_of_minima']:>9.2f}{s['cpu_median_s']:>8.3f}"
                f"{s['cpu_ratio_vs_monai_paired_median']:>8.2f}"
            )
        if res.get("memory"):
            mm, mo = res["memory"]["monai"], res["memory"]["ours"]
            lines += [
                f"   peak step memory: monai {fmt_mib(mm['peak_bytes'])}, ours "
                f"{fmt_mib(mo['peak_bytes'])}  (ours/monai "
                f"{mo['peak_bytes'] / mm['peak_bytes']:.2f}; {mm['method']})",
                f"   saved for backward: monai {fmt_mib(res['saved_bytes']['monai'])}, ours "
                f"{fmt_mib(res['saved_bytes']['ours'])}  (ours/monai "
                f"{res['saved_bytes']['ours'] / res['saved_bytes']['monai']:.2f})",
            ]
        if res.get("flops"):
            fm, fo = res["flops"]["monai"]["total"], res["flops"]["ours"]["total"]
            lines.append(
                f"   FLOPs per step (FlopCounterMode): monai {fm / 1e9:.2f} G, ours "
                f"{fo / 1e9:.2f} G -> monai/ours {fm / fo:.2f}: the ratio both would reach at "
                "equal FLOP rate"
            )
        for name, prof in res.get("profile", {}).items():
            lines.append(
                f"   profile {name}: {prof['self_cpu_ms_per_step']:.0f} ms self CPU per "
                "step (under the profiler); by category:"
            )
            cats = sorted(prof["categories_ms_per_step"].items(), key=lambda kv: -kv[1])
            total = prof["self_cpu_ms_per_step"]
            lines.append(
                "     " + "; ".join(f"{k} {v:.0f} ms ({v / total:.0%})" for k, v in cats if v > 0)
            )
            lines.append(
                "     top ops: "
                + "; ".join(
                    f"{r['op']} {r['self_cpu_ms_per_step']:.0f} ms x{r['calls_per_step']}"
                    for r in prof["top_ops"]
                )
            )
        if len(res.get("profile", {})) == 2:
            cm = res["profile"]["monai"]["categories_ms_per_step"]
            co = res["profile"]["ours"]["categories_ms_per_step"]
            diff = sorted(((k, cm[k] - co[k]) for k in cm), key=lambda kv: -abs(kv[1]))
            lines.append(
                "   profile monai - ours by category: "
                + "; ".join(f"{k} {v:+.0f} ms" for k, v in diff if abs(v) >= 0.5)
            )
    if any("+ torch.compile" in k for r in report["results"] for k in r["timing"]):
        lines += [
            "",
            "'+ torch.compile' rows: torch.compile(model) (default inductor), timed in "
            "their own interleaved rounds after the eager ones; their 'x monai' columns "
            "compare with the eager MONAI rounds (not paired). Not the headline.",
        ]
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config",
        action="append",
        choices=sorted(PRESETS),
        help=f"preset(s) to run (repeatable); default {DEFAULT_CONFIGS}",
    )
    for name in OVERRIDES:
        kind = float if name == "mask_ratio" else int
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"override {name} in every selected config",
        )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (both models)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps per variant")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (one step per variant)")
    p.add_argument(
        "--profile-reps",
        type=int,
        default=3,
        help="profiled steps per model (alternating); the least disturbed is kept",
    )
    p.add_argument("--top-ops", type=int, default=8, help="ops listed per profile")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--no-profile", action="store_true", help="skip torch.profiler")
    p.add_argument(
        "--compile",
        nargs="*",
        default=None,
        metavar="CONFIG",
        help="also time torch.compile'd models (separate rows, not the headline) in "
        "the given configs, or in all when none is named",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds), prints only")
    p.add_argument(
        "--out",
        default=None,
        help="output stem for .txt/.json (default benchmarks/results/mae_step; "
        "nothing is written with --quick unless --out is given)",
    )
    p.add_argument("--_memory-worker", dest="memory_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_config", dest="worker_config", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def selected_configs(args: argparse.Namespace) -> list[Config]:
    if args.quick:
        cfgs = [dataclasses.replace(QUICK)]
    else:
        cfgs = [dataclasses.replace(PRESETS[n]) for n in (args.config or DEFAULT_CONFIGS)]
    for cfg in cfgs:
        for name in OVERRIDES:
            value = getattr(args, name)
            if value is not None:
                setattr(cfg, name, value)
    return cfgs


def run_config(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    warmup, rounds = (1, 3) if args.quick else (args.warmup, args.rounds)
    print(f"[{cfg.name}] building models", file=sys.stderr, flush=True)
    bench = Bench(cfg, device)
    res: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "tokens": cfg.tokens,
        "visible": bench._next_mask[1].shape[1],
        "warmup": warmup,
        "rounds": rounds,
        "params": {"monai": param_counts(bench.monai), "ours": param_counts(bench.ours)},
    }
    res["checks"] = loss_checks(bench)
    print(f"[{cfg.name}] timing", file=sys.stderr, flush=True)
    timed = time_variants(bench, warmup, rounds)
    res["first_loss"] = timed["first_loss"]
    res["timing"] = summarize(timed["times_s"], timed["cpu_s"], cfg.batch)
    res["times_s"], res["cpu_s"] = timed["times_s"], timed["cpu_s"]
    if args.compile is not None and (not args.compile or cfg.name in args.compile):
        print(f"[{cfg.name}] timing torch.compile", file=sys.stderr, flush=True)
        cbench = Bench(cfg, device, compile_models=True)
        ctimed = time_variants(cbench, max(warmup, 2), rounds)
        keep = ("monai", "ours")
        csum = summarize(
            {n: ctimed["times_s"][n] for n in keep},
            {n: ctimed["cpu_s"][n] for n in keep},
            cfg.batch,
        )
        base = statistics.median(timed["times_s"]["monai"])
        base_cpu = statistics.median(timed["cpu_s"]["monai"])
        for name, s in csum.items():  # ratios vs eager MONAI (medians: different rounds)
            s["ratio_vs_monai_paired_median"] = base / s["median_s"]
            s["ratio_vs_monai_of_medians"] = base / s["median_s"]
            s["ratio_vs_monai_of_minima"] = min(timed["times_s"]["monai"]) / s["min_s"]
            s["cpu_ratio_vs_monai_paired_median"] = base_cpu / s["cpu_median_s"]
            res["timing"][f"{name} + torch.compile"] = s
        del cbench
    if not args.no_memory:
        print(f"[{cfg.name}] memory", file=sys.stderr, flush=True)
        res["memory"] = measure_memory(cfg, args)
        res["saved_bytes"] = {n: saved_activation_bytes(bench, n) for n in ("monai", "ours")}
    if device.type == "cpu":
        res["flops"] = {n: step_flops(bench, n) for n in ("monai", "ours")}
    if not args.no_profile:
        print(f"[{cfg.name}] profiling", file=sys.stderr, flush=True)
        res["profile"] = profile_models(bench, 1 if args.quick else args.profile_reps, args.top_ops)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*meshgrid.*")  # inside MONAI's sin-cos table
    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        cfg = Config(**json.loads(args.worker_config))
        print(json.dumps(memory_worker(cfg, args.memory_worker, torch.device(args.device))))
        return {}
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "command": " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(args),
        "results": [run_config(cfg, args) for cfg in selected_configs(args)],
    }
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - t0
    text = render(report)
    print(text)
    out = args.out or (None if args.quick else "benchmarks/results/mae_step")
    if out:
        stem = Path(out)
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".txt").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {stem.with_suffix('.txt')} and .json", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
