#!/usr/bin/env python3
"""Writes a tone as raw 8 kHz G.711 mu-law (no header), for SIPp's rtp_stream.

Usage: make-pcmu-tone.py [FILE] [SECONDS]   (default: pcmu_tone.ulaw, 2)

SIPp sends a file's bytes as they are, 160 bytes (20 ms) a packet, so the
file has no WAV header and a whole number of packets: 2 s is 100 packets.
tests/sipp_media.rs writes the same file itself; this is for running the
scenarios by hand (see sipp-scenarios/README.md).
"""
import math
import sys


def mulaw(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit linear sample (Sun's g711.c)."""
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + 0x21
    segment = 0
    while segment < 8 and value >= (0x40 << segment):
        segment += 1
    if segment == 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "pcmu_tone.ulaw"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    packets = max(1, round(seconds * 50))
    samples = packets * 160
    data = bytes(
        mulaw(int(8000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(samples)
    )
    with open(path, "wb") as f:
        f.write(data)
    print(f"{path}: {samples} samples, {packets} packets of 20 ms")


if __name__ == "__main__":
    main()
