"""The monitor callbacks inside a real (tiny, CPU) Lightning fit, and the preview renderer."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from domainfm.tasks.monitors import (
    KNNMonitor,
    RankMeMonitor,
    ReconstructionPreview,
    SupportsEmbed,
    SupportsReconstructPreview,
    render_preview,
)
from domainfm.tasks.monitors.preview import BACKGROUND

PAD = 2  # render_preview's default gap

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval:UserWarning"),
]


class TinyMasked(L.LightningModule):
    """A conv autoencoder over 2D or 3D inputs with ``embed`` and ``reconstruct_preview``."""

    def __init__(self, spatial_dims: int = 3, channels: int = 1, dim: int = 16) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        up = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.encoder = nn.Sequential(conv(channels, dim, 4, stride=4), nn.GELU(), nn.Dropout(0.5))
        self.decoder = up(dim, channels, 4, stride=4)
        self.calls: list[tuple[str, bool, bool]] = []  # (method, training, grad enabled)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self.calls.append(("training_step", self.encoder[2].training, torch.is_grad_enabled()))
        x = batch["input"]
        loss = F.mse_loss(self.decoder(self.encoder(x)), x)
        self.log("train/loss", loss, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        self.calls.append(("embed", self.encoder[2].training, torch.is_grad_enabled()))
        return self.encoder(batch["input"]).flatten(2).mean(-1)  # (B, dim)

    def reconstruct_preview(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        self.calls.append(("preview", self.encoder[2].training, torch.is_grad_enabled()))
        x = batch["input"]
        grid = [s // 4 for s in x.shape[2:]]
        keep = (torch.rand(x.shape[0], 1, *grid) > 0.5).to(x.dtype)  # draws random numbers
        for axis in range(2, x.ndim):
            keep = keep.repeat_interleave(4, dim=axis)
        masked = x * keep
        return {"input": x, "masked": masked, "reconstruction": self.decoder(self.encoder(masked))}


def _loader(
    shape: tuple[int, ...], n: int, *, labels: bool = False, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        item: dict[str, Any] = {"input": torch.randn(shape, generator=g) + (i % 2) * 2.0}
        if labels:
            item["label"] = i % 2
        items.append(item)
    return DataLoader(items, batch_size=2, shuffle=shuffle)  # type: ignore[arg-type]


def _trainer(tmp_path: Path, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    options: dict[str, Any] = {
        "max_steps": 4,
        "logger": CSVLogger(tmp_path),
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
        "devices": 1,
    }
    options.update(kwargs)
    return L.Trainer(callbacks=callbacks, **options)


def _csv_column(path: Path, name: str) -> list[tuple[int, float]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and name in rows[0], f"{name} not in {path} columns {list(rows[0]) if rows else []}"
    return [(int(r["step"]), float(r[name])) for r in rows if r[name] not in ("", None)]


@pytest.mark.filterwarnings("ignore:.*bounded by the number of rows:UserWarning")
def test_fit_3d_logs_rankme_knn_and_writes_previews(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    module = TinyMasked(spatial_dims=3)
    assert isinstance(module, SupportsEmbed) and isinstance(module, SupportsReconstructPreview)
    rankme_cb = RankMeMonitor(every_n_steps=2)
    preview_cb = ReconstructionPreview(every_n_steps=2)
    knn_cb = KNNMonitor(
        _loader((1, 16, 16, 16), 6, labels=True, seed=1),
        _loader((1, 16, 16, 16), 4, labels=True, seed=2),
        num_classes=2,
        k=3,
        linear_probe_steps=5,
        linear_probe_batch_size=4,
    )
    trainer = _trainer(tmp_path, [rankme_cb, preview_cb, knn_cb])
    # 4 samples, batch 2: 2 steps per epoch, so 2 epochs and 2 kNN evaluations
    trainer.fit(module, _loader((1, 16, 16, 16), 4, shuffle=True))
    assert trainer.global_step == 4

    log_dir = Path(trainer.log_dir)  # type: ignore[arg-type]
    previews = log_dir / "previews"
    assert sorted(p.name for p in previews.iterdir()) == ["step_0000002.png", "step_0000004.png"]
    assert preview_cb.last_path == previews / "step_0000004.png"
    with Image.open(preview_cb.last_path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        pixels = np.asarray(img)
    # rows = 2 samples of 16 px; each panel is 3 views of 16 px with 2 gaps of PAD
    panel_h, panel_w = 16, 3 * 16 + 2 * PAD
    assert pixels.shape == (2 * panel_h + 3 * PAD, 3 * panel_w + 4 * PAD, 3)
    for j in range(4):  # vertical gaps left of / between / right of the 3 columns
        left = j * (panel_w + PAD)
        assert (pixels[:, left : left + PAD] == BACKGROUND).all()
    for i in range(3):  # horizontal gaps
        top = i * (panel_h + PAD)
        assert (pixels[top : top + PAD] == BACKGROUND).all()
    first_input = pixels[PAD : PAD + panel_h, PAD : PAD + 16]
    assert first_input.std() > 10  # real image content, not background

    metrics = log_dir / "metrics.csv"
    rankme = _csv_column(metrics, "monitor/rankme")
    knn = _csv_column(metrics, "monitor/knn_top1")
    probe = _csv_column(metrics, "monitor/linear_top1")
    assert [s for s, _ in rankme] == [2, 4]  # not dropped by log_every_n_steps=50
    assert all(1.0 <= v <= 4.0 + 1e-6 for _, v in rankme)  # 4 rows per window -> <= 4
    assert [s for s, _ in knn] == [2, 4] and [s for s, _ in probe] == [2, 4]
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for _, v in knn + probe)
    assert rankme_cb.last_value == pytest.approx(rankme[-1][1])
    assert set(knn_cb.last_values) == {"monitor/knn_top1", "monitor/linear_top1"}
    assert "monitor/rankme" in trainer.callback_metrics

    # monitors ran in eval mode without grad; training ran in train mode with grad
    kinds = {kind for kind, _, _ in module.calls}
    assert kinds == {"training_step", "embed", "preview"}
    assert all(not tr and not grad for kind, tr, grad in module.calls if kind != "training_step")
    assert all(tr and grad for kind, tr, grad in module.calls if kind == "training_step")


@pytest.mark.filterwarnings("ignore:.*bounded by the number of rows:UserWarning")
def test_monitors_do_not_change_the_training_run(tmp_path: Path) -> None:
    def run(callbacks: list[L.Callback], sub: str) -> dict[str, Tensor]:
        L.seed_everything(0, verbose=False)
        module = TinyMasked(spatial_dims=3)
        trainer = _trainer(tmp_path / sub, callbacks, logger=False)
        trainer.fit(module, _loader((1, 16, 16, 16), 4, shuffle=True))
        return module.state_dict()

    plain = run([], "plain")
    monitored = run(
        [
            RankMeMonitor(every_n_steps=1),
            ReconstructionPreview(every_n_steps=1, out_dir=tmp_path / "p"),
            KNNMonitor(
                _loader((1, 16, 16, 16), 4, labels=True, shuffle=True),
                _loader((1, 16, 16, 16), 2, labels=True),
                num_classes=2,
                linear_probe_steps=2,
                linear_probe_batch_size=2,
            ),
        ],
        "monitored",
    )
    assert plain.keys() == monitored.keys()
    for name in plain:
        torch.testing.assert_close(monitored[name], plain[name], rtol=0, atol=0)
    assert len(list((tmp_path / "p" / "previews").glob("*.png"))) == 4


def test_fit_2d_rgb_preview_and_tensorboard(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    module = TinyMasked(spatial_dims=2, channels=3)
    preview_cb = ReconstructionPreview(
        every_n_steps=2, max_images=1, out_dir=tmp_path / "out", zoom=2
    )
    tb = TensorBoardLogger(tmp_path, name="tb")
    trainer = _trainer(tmp_path, [preview_cb], logger=[CSVLogger(tmp_path), tb])
    trainer.fit(module, _loader((3, 16, 12), 4))
    assert preview_cb.last_path == tmp_path / "out" / "previews" / "step_0000004.png"
    assert not list((tmp_path / "out" / "previews").glob(".*"))  # no temp files left
    with Image.open(preview_cb.last_path) as img:
        # 1 row; panels 16x12 enlarged twice -> 32x24
        assert img.size == (3 * 24 + 4 * PAD, 32 + 2 * PAD)
        pixels = np.asarray(img)
    panel = pixels[PAD : PAD + 32, PAD : PAD + 24]
    assert (panel[0::2] == panel[1::2]).all()  # zoom repeats rows
    assert not (panel[..., 0] == panel[..., 1]).all()  # colour, not grey

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "monitor/reconstruction" in events.Tags()["images"]
    assert [e.step for e in events.Images("monitor/reconstruction")] == [2, 4]


def test_missing_module_methods_raise_type_error(tmp_path: Path) -> None:
    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
            return self.layer(batch["input"]).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    for callback, name in (
        (RankMeMonitor(every_n_steps=1), "embed"),
        (ReconstructionPreview(every_n_steps=1), "reconstruct_preview"),
    ):
        trainer = _trainer(tmp_path, [callback], logger=False, max_steps=1)
        with pytest.raises(TypeError, match=name):
            trainer.fit(Plain(), _loader((4,), 2))


def _ramp(shape: tuple[int, ...]) -> Tensor:
    return torch.linspace(-3.0, 5.0, math.prod(shape)).reshape(shape)


def test_render_scales_every_panel_with_the_input_range() -> None:
    x = _ramp((2, 1, 8, 10))
    grid = render_preview(x, x * 0, x * 2.0)
    assert grid.shape == (2 * 8 + 3 * PAD, 3 * 10 + 4 * PAD, 3) and grid.dtype == np.uint8
    inp = grid[PAD : PAD + 8, PAD : PAD + 10, 0].astype(int)
    masked = grid[PAD : PAD + 8, PAD + 10 + PAD : PAD + 20 + PAD, 0].astype(int)
    recon = grid[PAD : PAD + 8, PAD + 2 * (10 + PAD) : PAD + 2 * (10 + PAD) + 10, 0].astype(int)
    lo, hi = float(x[0].min()), float(x[0].max())
    expected = np.round((x[0, 0].numpy() - lo) / (hi - lo) * 255)
    np.testing.assert_array_equal(inp, expected)
    assert inp.min() == 0 and inp.max() == 255
    zero_level = round((0 - lo) / (hi - lo) * 255)  # 0 in input units, not black
    assert (masked == zero_level).all()
    doubled = np.round(np.clip((2 * x[0, 0].numpy() - lo) / (hi - lo), 0, 1) * 255)
    np.testing.assert_array_equal(recon, doubled)  # clipped, not re-scaled to its own range


def test_render_3d_non_cubic_three_views_and_single_view() -> None:
    x = _ramp((1, 2, 6, 8, 10))  # (B, C, D, H, W); channel 0 shown
    grid = render_preview(x, x, x)
    # views (H, W) = (8, 10), (D, W) = (6, 10), (D, H) = (6, 8): height 8, width 28 + 2 gaps
    panel_w = 10 + 10 + 8 + 2 * PAD
    assert grid.shape == (8 + 2 * PAD, 3 * panel_w + 4 * PAD, 3)
    axial = grid[PAD : PAD + 8, PAD : PAD + 10, 0].astype(int)
    lo, hi = float(x[0, 0].min()), float(x[0, 0].max())
    expected = np.round((x[0, 0, 3].numpy() - lo) / (hi - lo) * 255)
    np.testing.assert_array_equal(axial, expected)
    # the (D, W) view is 6 high: its last 2 rows are background padding
    assert (grid[PAD + 6 : PAD + 8, PAD + 10 + PAD : PAD + 20 + PAD] == BACKGROUND).all()
    single = render_preview(x, x, x, three_views=False, max_images=3)
    assert single.shape == (8 + 2 * PAD, 3 * 10 + 4 * PAD, 3)


def test_render_1d_line_plot_and_errors() -> None:
    x = torch.sin(torch.linspace(0, 6.28, 50)).reshape(1, 1, 50).repeat(3, 2, 1)
    grid = render_preview(x, x, x, max_images=2, line_height=20)
    assert grid.shape == (2 * 20 + 3 * PAD, 3 * 50 + 4 * PAD, 3)
    panel = grid[PAD : PAD + 20, PAD : PAD + 50, 0]
    assert set(np.unique(panel)) == {0, 255}
    assert (panel == 255).any(axis=0).all()  # one lit pixel (at least) per sample position
    assert panel[0, 12] == 255 and panel[19, 37] == 255  # sine peak near top, trough at bottom
    long = render_preview(*(torch.randn(1, 1, 5000),) * 3, max_line_width=1000)
    assert long.shape[1] == 3 * 1000 + 4 * PAD
    with pytest.raises(ValueError, match="same shape"):
        render_preview(x, x, x[..., :10])
    with pytest.raises(ValueError, match="spatial dims"):
        render_preview(*(torch.randn(1, 1, 2, 2, 2, 2),) * 3)
