"""Container integrity of compressed audio: Ogg pages, MPEG audio frames, FLAC STREAMINFO.

libsndfile decodes what it can and stops quietly. A truncated Ogg file decodes as a shorter
recording: its length is the granule position of the last page present, so the header
agrees with it. A damaged Ogg page is dropped and the audio after it shifts. mpg123
resynchronizes over damaged MP3 data and prints its notes on stderr. :func:`check_container`
walks the file's structure once, before libsndfile opens it, bytes only (no decoding;
memory is one read buffer). It raises one ``ValueError`` naming the file and the problem:

* **Ogg** (Vorbis, Opus, FLAC in Ogg): the CRC-32 of every page (``damaged Ogg page at
  byte N (CRC mismatch)``); the page sequence of each logical stream (a missing page); a
  page cut by the end of the file; the end-of-stream flag on the last page of each stream
  (``truncated``: a file cut at a page boundary).
* **MP3** (MPEG-1/2/2.5, layers I-III): the chain of frames from the first one to the end
  of the file. A missing frame header where the previous frame ends means damaged data; a
  frame cut by the end of the file means truncation. A Xing/Info header's frame count that
  exceeds the frames present also means truncation. Trailing ID3v1/APE/Lyrics3 tags and
  zero padding are accepted. An ``.mp3`` file with no frame in its first 64 KiB is not
  an MP3 stream.
* **FLAC**: the STREAMINFO block. Its total sample count and the MD5 of the decoded samples
  are returned as :class:`StreamFacts`. libFLAC itself detects damaged frames (frame CRCs,
  lost sync), and :mod:`~domainfm.domains.audio.io` compares the count and the MD5 with the
  decoded samples.
* **WAV**: the frame count of the ``data`` chunk (:func:`wav_declared_frames`; libsndfile
  shortens a cut WAV to the bytes present).

Not detectable here: damage inside an MP3 frame's audio data, because MP3 has no mandatory
checksum (the frame chain and the decoded length still are checked). Also not detectable: an
MP3 without a Xing/Info header cut exactly at a frame boundary, because the stream then
declares no length.

Example::

    >>> check_container(Path("cut.ogg"))
    ValueError: cut.ogg: truncated: the Ogg stream stops at 4.13 s without its
    end-of-stream page (the file was cut after byte 24576)
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_BUFFER = 1 << 20  # bytes read at a time


@dataclass(frozen=True)
class StreamFacts:
    """What a container declares beyond libsndfile's header: ``frames`` samples per channel
    (FLAC STREAMINFO; ``None``: not declared) and the MD5 of the decoded samples (``md5``,
    FLAC; ``None``: not stored) at ``bits_per_sample``."""

    frames: int | None = None
    md5: bytes | None = None
    bits_per_sample: int | None = None


class _Reader:
    """Random access to a file's bytes through a sliding buffer (one buffer in memory)."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle, self.size = handle, size
        self.start, self.buffer = 0, b""

    def at(self, pos: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``pos`` (fewer at the end of the file)."""
        end = pos + count
        if pos < self.start or end > self.start + len(self.buffer):
            self.handle.seek(pos)
            self.start, self.buffer = pos, self.handle.read(max(count, _BUFFER))
        return self.buffer[pos - self.start : end - self.start]


def _bad(source: Path, problem: str) -> ValueError:
    return ValueError(f"{source}: {problem}")


def check_container(source: Path) -> StreamFacts:
    """Walk the container of ``source`` and return what it declares. The format is
    recognised from the bytes: Ogg, FLAC (after any ID3v2 tag), and MP3 (an ID3v2 tag, a
    frame header at the start, or an ``.mp3``-like suffix). Other files are not walked.
    The walk runs before libsndfile opens the file, so a damaged MP3 is refused before
    mpg123 prints its resync notes.

    Raises:
        ValueError: naming the file: a damaged or truncated stream, an ``.mp3`` file
            without MPEG audio frames, or a file that cannot be read (see the module
            docstring).
    """
    try:
        size = source.stat().st_size
        with open(source, "rb") as handle:
            reader = _Reader(handle, size)
            walker = _walker(reader, source.suffix.lower())
            return walker(source, reader) if walker is not None else StreamFacts()
    except OSError as err:
        raise _bad(source, f"cannot be read ({err.strerror or err})") from err


_MP3_SUFFIXES = (".mp3", ".mp2", ".mp1", ".mpga")


def _walker(reader: _Reader, suffix: str) -> Any:
    """The walker of the container format ``reader`` holds, ``None`` when none applies."""
    if reader.at(0, 4) == b"OggS":
        return _check_ogg
    start = _id3v2_end(reader)
    if reader.at(start, 4) == b"fLaC":
        return _check_flac
    if suffix in _MP3_SUFFIXES or start > 0 or _mpeg_frame(reader.at(0, 4)) is not None:
        return _check_mp3
    return None


# -- Ogg ------------------------------------------------------------------------------------

_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


@functools.lru_cache(maxsize=256)
def _zeros_crc(count: int) -> int:
    return zlib.crc32(bytes(count))


def ogg_crc(page: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0,
    no final XOR, over the page with its checksum field zeroed. zlib's CRC-32 is the
    reflected form with initial and final XOR ``0xFFFFFFFF``: over bit-reversed bytes, XORed
    with the CRC of as many zero bytes (which cancels the initial and final XOR), it gives
    the bit-reversed Ogg CRC."""
    reflected = zlib.crc32(page.translate(_REVERSED)) ^ _zeros_crc(len(page))
    return int(f"{reflected:032b}"[::-1], 2)


def _granule_rate(body: bytes) -> int | None:
    """Granule positions per second of a stream, from its first packet (Vorbis: the
    sample rate; Opus: always 48 kHz); ``None`` for other codecs."""
    if body.startswith(b"\x01vorbis") and len(body) >= 16:
        return int.from_bytes(body[12:16], "little") or None
    if body.startswith(b"OpusHead"):
        return 48000
    return None


def _check_ogg(source: Path, reader: _Reader) -> StreamFacts:
    pos, size = 0, reader.size
    expected: dict[int, int] = {}  # serial -> next page sequence number
    open_streams: dict[int, tuple[int, int | None]] = {}  # serial -> (granule, rate)
    while pos < size:
        head = reader.at(pos, 27)
        if head[:4] != b"OggS":
            if pos > 0 and not open_streams:
                break  # bytes after the last stream ended: ignored, as decoders do
            raise _bad(source, f"damaged Ogg data at byte {pos} (no page starts there)")
        if len(head) < 27:
            raise _bad(source, f"truncated: the file ends inside the Ogg page header at byte {pos}")
        table = reader.at(pos + 27, head[26])
        length = 27 + head[26] + sum(table)
        if len(table) < head[26] or pos + length > size:
            raise _bad(
                source,
                f"truncated: the file ends inside the Ogg page at byte {pos} "
                f"({size - pos} of its {length} bytes are present)",
            )
        page = reader.at(pos, length)
        if ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) != int.from_bytes(page[22:26], "little"):
            raise _bad(source, f"damaged Ogg page at byte {pos} (CRC mismatch)")
        flags = head[5]
        granule = int.from_bytes(head[6:14], "little", signed=True)
        serial = int.from_bytes(head[14:18], "little")
        sequence = int.from_bytes(head[18:22], "little")
        if flags & 0x02:  # beginning of a stream
            expected[serial] = sequence
            open_streams[serial] = (0, _granule_rate(page[27 + head[26] :]))
        if sequence != expected.get(serial, sequence + 1):
            missing = "its first page" if serial not in expected else f"page {expected[serial]}"
            raise _bad(
                source,
                f"damaged Ogg stream {serial:#x}: {missing} is missing (before byte {pos})",
            )
        expected[serial] = sequence + 1
        if flags & 0x04:  # end of the stream
            open_streams.pop(serial, None)
        elif serial in open_streams and granule >= 0:
            open_streams[serial] = (granule, open_streams[serial][1])
        pos += length
    for granule, rate in open_streams.values():
        where = f"{granule / rate:.2f} s" if rate else f"granule position {granule}"
        raise _bad(
            source,
            f"truncated: the Ogg stream stops at {where} without its end-of-stream page "
            f"(the file was cut after byte {size})",
        )
    return StreamFacts()


# -- MPEG audio -----------------------------------------------------------------------------

_KBPS = {  # (MPEG-1?, layer bits) -> bit rates by index (0: free format)
    (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_TRAILING_TAGS = (b"TAG", b"APETAGEX", b"LYRICSBEGIN", b"ID3", b"3DI")


def _mpeg_frame(head: bytes) -> tuple[int, int, int] | None:
    """``(length in bytes, samples, rate)`` of the MPEG audio frame whose header is
    ``head`` (length 0: free format), ``None`` when it is no valid frame header."""
    if len(head) < 4:
        return None
    bits = int.from_bytes(head[:4], "big")
    version, layer = (bits >> 19) & 3, (bits >> 17) & 3
    index, rate_index, padding = (bits >> 12) & 15, (bits >> 10) & 3, (bits >> 9) & 1
    if bits >> 21 != 0x7FF or version == 1 or layer == 0 or index == 15 or rate_index == 3:
        return None
    mpeg1, rate = version == 3, _RATES[version][rate_index]
    bitrate = _KBPS[(mpeg1, layer)][index] * 1000
    if layer == 3:  # layer I
        return (12 * bitrate // rate + padding) * 4, 384, rate
    if layer == 2 or mpeg1:  # layer II, MPEG-1 layer III
        return 144 * bitrate // rate + padding, 1152, rate
    return 72 * bitrate // rate + padding, 576, rate  # MPEG-2/2.5 layer III


def _id3v2_end(reader: _Reader) -> int:
    """Where the audio starts after leading ID3v2 tags."""
    pos = 0
    while (head := reader.at(pos, 10))[:3] == b"ID3" and len(head) == 10:
        size = 0
        for byte in head[6:10]:
            size = (size << 7) | (byte & 0x7F)  # sync-safe
        pos += 10 + size + (10 if head[5] & 0x10 else 0)
    return pos


def _first_frame(reader: _Reader, pos: int) -> int | None:
    """The first frame at or after ``pos`` (within 64 KiB) whose successor is a frame too,
    or the end of the file (leading junk is skipped, as decoders do)."""
    for start in range(pos, min(pos + (1 << 16), reader.size)):
        frame = _mpeg_frame(reader.at(start, 4))
        if frame is None:
            continue
        after = start + frame[0]
        if start == pos or after == reader.size or _mpeg_frame(reader.at(after, 4)) is not None:
            return start
    return None


def _xing_frames(frame: bytes) -> int | None:
    """The frame count of a Xing/Info header in the first frame, when it has one."""
    for tag in (b"Xing", b"Info"):
        at = frame.find(tag, 4, 48)
        if at >= 0 and len(frame) >= at + 12 and frame[at + 7] & 0x01:
            return int.from_bytes(frame[at + 8 : at + 12], "big")
    return None


def _trailing(reader: _Reader, pos: int) -> bool:
    """Whether the bytes from ``pos`` to the end are tags or zero padding."""
    head = reader.at(pos, 11)
    if head.startswith(_TRAILING_TAGS):
        return True
    return reader.size - pos <= _BUFFER and not reader.at(pos, reader.size - pos).strip(b"\0")


def _check_mp3(source: Path, reader: _Reader) -> StreamFacts:
    start = _id3v2_end(reader)
    first = _first_frame(reader, start)
    if first is None:
        raise _bad(
            source,
            f"not an MP3 stream: no MPEG audio frame in the 64 KiB after byte {start}",
        )
    pos, frames, samples, rate, declared = first, 0, 0, 0, None
    while pos < reader.size:
        frame = _mpeg_frame(reader.at(pos, 4))
        if frame is None:
            if _trailing(reader, pos):
                break
            raise _bad(
                source,
                f"damaged MP3 data at byte {pos} (no frame header where the previous frame ends)",
            )
        length, samples, rate = frame
        if length == 0:
            return StreamFacts()  # free-format bit rate: frame lengths are not in the headers
        if pos + length > reader.size:
            raise _bad(
                source,
                f"truncated: the file ends inside the MP3 frame at byte {pos} "
                f"({reader.size - pos} of its {length} bytes are present)",
            )
        if frames == 0:
            declared = _xing_frames(reader.at(pos, min(length, 64)))
        frames += 1
        pos += length
    present = frames - 1  # the Xing/Info frame holds no audio
    if declared is not None and present + 1 < declared:
        raise _bad(
            source,
            f"truncated: decoded {present * samples / rate:.1f} s of the "
            f"{declared * samples / rate:.1f} s the container declares ({present} of the "
            f"{declared} MP3 frames its Xing/Info header counts)",
        )
    return StreamFacts()


# -- WAV ----------------------------------------------------------------------------------


def wav_declared_frames(source: Path) -> int | None:
    """Frames a RIFF/WAVE file's ``data`` chunk declares (libsndfile silently shortens a
    truncated WAV to the bytes present, so truncation shows only against the header);
    ``None`` for other formats or an unparseable header."""
    with open(source, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = handle.read(size + size % 2)
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack("<H", fmt[12:14])[0]
            elif name == b"data":
                # 0xFFFFFFFF: size unknown (streamed or RF64-style); nothing to compare
                if block_align <= 0 or size == 0xFFFFFFFF:
                    return None
                return int(size // block_align)
            else:
                handle.seek(size + size % 2, 1)


# -- FLAC -----------------------------------------------------------------------------------


def _check_flac(source: Path, reader: _Reader) -> StreamFacts:
    pos = _id3v2_end(reader)
    block = reader.at(pos, 4 + 4 + 34)
    if block[:4] != b"fLaC":
        return StreamFacts()
    if len(block) < 42 or block[4] & 0x7F != 0:
        raise _bad(source, "damaged FLAC header (no STREAMINFO block)")
    info = block[8:42]
    fields = int.from_bytes(info[10:18], "big")
    bits = ((fields >> 36) & 31) + 1
    total = fields & ((1 << 36) - 1)
    md5 = bytes(info[18:34])
    return StreamFacts(frames=total or None, md5=md5 if any(md5) else None, bits_per_sample=bits)


def flac_sample_bytes(block: np.ndarray, bits: int) -> bytes | None:
    """The bytes FLAC's STREAMINFO MD5 is computed over for ``block`` ``(n, C)`` float32 as
    libsndfile decodes it (integers scaled by ``2 ** (bits - 1)``): the integer samples,
    interleaved, little-endian, in whole bytes. ``None`` for a sample size other than 8, 16
    or 24 bits (float32 holds those exactly; others are not verified)."""
    if bits not in (8, 16, 24):
        return None
    # scaling by a power of two and rounding are exact in float32 for up to 24 bits
    ints = np.rint(block * np.float32(1 << (bits - 1))).astype(np.int32)
    if bits == 8:
        return ints.astype("<i1").tobytes()
    if bits == 16:
        return ints.astype("<i2").tobytes()
    return ints.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3].tobytes()
