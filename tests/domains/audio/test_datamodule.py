"""Audio data modules on the real clips: MAE and BYOL-A batches from the unlabeled
recordings, bad segments skipped and counted, speaker-disjoint clip splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from domainfm.core.masking import MaskingSpec
from domainfm.domains.audio import (
    AudioClipDataModule,
    AudioPretrainDataModule,
    AudioSegmentDataset,
    LogMelFrontend,
    index_audio,
)

CLIPS = "audio/librosa_example_clips"


def test_pretraining_batches_mae_and_byola(data_root: Path, tmp_path: Path) -> None:
    files = [str(p) for p in sorted((data_root / CLIPS).glob("*.ogg"))[:3]]
    for views in ("single", "byola"):
        dm = AudioPretrainDataModule(
            files=files,
            frames=96,
            views=views,
            masking=MaskingSpec(patch_size=16),
            samples_per_epoch=8,
            batch_size=4,
            stats_cache=str(tmp_path / "stats.json"),
        )
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["input"].shape == (4, 1, 64, 96)
        if views == "single":
            assert batch["mask"].shape == (4, 24) and batch["keep_idx"].shape == (4, 6)
        else:
            for key in ("view1", "view2"):
                assert batch[key].shape == (4, 1, 64, 96)
                assert abs(float(batch[key].mean())) < 1e-4  # batch-standardized
        contract = dm.input_contract().to_dict()
        assert contract["frontend"]["kwargs"]["mean"] is not None
        assert contract["sample_rate"] == 16000 and contract["frames"] == 96
    # the same seeds give the same batch (resumable)
    again = AudioPretrainDataModule(
        files=files,
        views="byola",
        samples_per_epoch=8,
        batch_size=4,
        stats_cache=str(tmp_path / "stats.json"),
    )
    again.setup("fit")
    torch.testing.assert_close(next(iter(again.train_dataloader()))["view1"], batch["view1"])


def test_bad_segments_are_skipped_and_counted(data_root: Path, tmp_path: Path) -> None:
    wave, rate = sf.read(data_root / "audio/fsdd_spoken_digits/recordings/5_lucas_3.wav")
    bad = np.tile(wave, 20).astype(np.float32)
    bad[len(bad) // 4 :] = np.nan  # most of the file is NaN
    path = tmp_path / "half_nan.wav"
    sf.write(path, bad, rate, subtype="FLOAT")
    infos, _ = index_audio([path])
    ds = AudioSegmentDataset(
        infos=infos,
        frontend=LogMelFrontend(mean=-5, std=5),
        frames=32,
        samples_per_epoch=16,
        max_tries=50,
    )
    for i in range(16):
        assert torch.isfinite(ds[(i, i)]["input"]).all()
    assert ds.skipped_reads > 0 and "NaN/Inf" in (ds.last_error or "")


def test_clip_split_is_speaker_disjoint(data_root: Path) -> None:
    dm = AudioClipDataModule(
        metadata=str(data_root / "audio/fsdd_spoken_digits/metadata.csv"),
        file_column="file",
        label_column="digit",
        group_column="speaker",
        val_groups=["george"],
        frontend=LogMelFrontend(mean=-6.0, std=5.0),
        frames=64,
        batch_size=8,
    )
    dm.setup("fit")
    assert dm.class_names == [str(d) for d in range(10)] and dm.num_classes == 10
    assert dm.train_set is not None and dm.val_set is not None
    assert len(dm.train_set) == 600 and len(dm.val_set) == 200
    assert all("george" in f for f in dm.val_set.files)
    assert not any("george" in f for f in dm.train_set.files)
    batch = next(iter(dm.val_dataloader()))
    assert batch["input"].shape == (8, 1, 64, 64) and batch["label"].dtype == torch.int64
    assert dm.input_contract().to_dict()["class_names"][3] == "3"


def test_silent_recordings_give_finite_losses(tmp_path: Path) -> None:
    """A recording of pure silence (allowed inside long files) gives finite inputs, views
    and MAE / BYOL losses — never a NaN loss."""
    from domainfm.core.objectives import MAE
    from domainfm.core.objectives.byol import BYOL
    from domainfm.core.vit import VisionTransformerND
    from domainfm.domains.audio.datamodule import BYOLACollate
    from domainfm.tasks.pretrain_module import PretrainModule

    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000 * 3, np.float32), 16000)
    infos, _ = index_audio([path])
    frontend = LogMelFrontend(mean=-6.0, std=5.0)
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=16, embed_dim=32, depth=2, num_heads=2
    )
    mae = MAE(
        embed_dim=32,
        in_chans=1,
        patch_size=(16, 16),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
    )
    module = PretrainModule(
        backbone=vit,
        objectives={"mae": mae, "byol": BYOL()},
        projector_hidden_dim=64,
        projector_dim=32,
    )
    from domainfm.core.masking import MaskingCollate, RandomMasking

    ds = AudioSegmentDataset(
        infos=infos, frontend=frontend, frames=96, views="byola", samples_per_epoch=4
    )
    samples = [ds[(i, i)] for i in range(4)]
    batch = BYOLACollate()(samples)
    batch.update(
        MaskingCollate(masking=RandomMasking(ratio=0.75), patch_size=16)(
            [{"input": s["input"]} for s in samples]
        )
    )
    for key in ("input", "view1", "view2"):
        assert torch.isfinite(batch[key]).all(), key
    loss, terms = module.compute_losses(batch)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
