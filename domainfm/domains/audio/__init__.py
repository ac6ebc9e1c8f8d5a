"""Audio: soundfile decoding with clear errors, torchaudio resampling, long files in windows,
a cached folder index, BYOL-A log-mel and AST Kaldi-fbank front ends that travel with
checkpoints, SpecAugment and BYOL-A views, the AudioNTT2020 encoder and its released
weights, and data modules for pretraining on recordings and probing on labeled clips."""

from domainfm.domains.audio import released  # noqa: F401  (registers the releases)
from domainfm.domains.audio.augment import (
    BYOLAViews,
    MixupBYOLA,
    RandomResizeCrop,
    SpecAugment,
    normalize_batch,
)
from domainfm.domains.audio.datamodule import AudioClipDataModule, AudioPretrainDataModule
from domainfm.domains.audio.frontends import (
    FRONTENDS,
    KaldiFbankFrontend,
    LogMelFrontend,
    build_frontend,
    compute_frontend_stats,
)
from domainfm.domains.audio.index import AudioSkippedWarning, index_audio
from domainfm.domains.audio.io import (
    AudioInfo,
    audio_info,
    iter_audio_windows,
    load_audio,
    read_segment,
    resample,
)
from domainfm.domains.audio.ntt import AudioNTT2020
from domainfm.domains.audio.segments import AudioClipDataset, AudioSegmentDataset

__all__ = [
    "FRONTENDS",
    "AudioClipDataModule",
    "AudioClipDataset",
    "AudioInfo",
    "AudioNTT2020",
    "AudioPretrainDataModule",
    "AudioSegmentDataset",
    "AudioSkippedWarning",
    "BYOLAViews",
    "KaldiFbankFrontend",
    "LogMelFrontend",
    "MixupBYOLA",
    "RandomResizeCrop",
    "SpecAugment",
    "audio_info",
    "build_frontend",
    "compute_frontend_stats",
    "index_audio",
    "iter_audio_windows",
    "load_audio",
    "normalize_batch",
    "read_segment",
    "resample",
]
