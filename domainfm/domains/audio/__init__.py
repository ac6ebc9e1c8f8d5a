"""Audio: soundfile decoding with clear errors, torchaudio resampling, long files in windows,
a cached folder index, BYOL-A log-mel and AST Kaldi-fbank front ends that travel with
checkpoints, SpecAugment and BYOL-A views, the AudioNTT2020 encoder and its released
weights, data modules for pretraining on recordings and probing on labeled clips, the HEAR
API (``domainfm.domains.audio.hear``) and sound event detection."""

from domainfm.domains.audio import released  # noqa: F401  (registers the releases)
from domainfm.domains.audio.augment import (
    BYOLAViews,
    FrameAlignedViews,
    MixupBYOLA,
    RandomResizeCrop,
    SpecAugment,
    normalize_batch,
)
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.datamodule import (
    AudioClipDataModule,
    AudioPretrainDataModule,
    SoundEventDataModule,
)
from domainfm.domains.audio.events import (
    Event,
    activity_to_events,
    event_f1,
    read_events_csv,
    write_events_csv,
)
from domainfm.domains.audio.frontends import (
    FRONTENDS,
    Frontend,
    KaldiFbankFrontend,
    LogMelFrontend,
    build_frontend,
    compute_frontend_stats,
)
from domainfm.domains.audio.index import AudioSkippedWarning, index_audio
from domainfm.domains.audio.io import (
    AudioInfo,
    audio_info,
    check_audio_file,
    iter_audio_windows,
    load_audio,
    read_segment,
)
from domainfm.domains.audio.ntt import AudioNTT2020
from domainfm.domains.audio.plugin import AudioPlugin
from domainfm.domains.audio.resampling import resample
from domainfm.domains.audio.sed_data import EventSequenceDataset, write_event_sequences
from domainfm.domains.audio.sed_module import (
    SoundEventModule,
    detect_events,
    load_sound_event_model,
)
from domainfm.domains.audio.segments import AudioClipDataset, AudioSegmentDataset
from domainfm.domains.audio.shards import AudioPreparer, StreamingAudioDataModule

__all__ = [
    "FRONTENDS",
    "AudioClipDataModule",
    "AudioClipDataset",
    "AudioContract",
    "AudioInfo",
    "AudioNTT2020",
    "AudioPlugin",
    "AudioPreparer",
    "AudioPretrainDataModule",
    "AudioSegmentDataset",
    "AudioSkippedWarning",
    "BYOLAViews",
    "Event",
    "EventSequenceDataset",
    "FrameAlignedViews",
    "Frontend",
    "KaldiFbankFrontend",
    "LogMelFrontend",
    "MixupBYOLA",
    "RandomResizeCrop",
    "SoundEventDataModule",
    "SoundEventModule",
    "SpecAugment",
    "StreamingAudioDataModule",
    "activity_to_events",
    "audio_info",
    "build_frontend",
    "check_audio_file",
    "compute_frontend_stats",
    "detect_events",
    "event_f1",
    "index_audio",
    "iter_audio_windows",
    "load_audio",
    "load_sound_event_model",
    "normalize_batch",
    "read_events_csv",
    "read_segment",
    "resample",
    "write_event_sequences",
    "write_events_csv",
]
