"""ITU-T Q.24 DTMF receiver limits, as real receivers implement them.

One set of figures for both halves of the gateway: the tone engine keeps its
settings inside them (with a margin, so a key survives the line), and the
receiver accepts exactly what they accept. Twist is stated in the sign
convention of ``[tones] twist_db``: the level of the high-group tone above
the low-group tone, in dB.

Sources: Q.24 as spandsp and the MT8870/MT8880 family implement it (see
``listening.md`` in the project's reference notes). Tests of a sender or a
receiver type their own expectations in; they do not read these names.
"""

from __future__ import annotations

#: A receiver must operate on a frequency within this much of nominal ...
ACCEPT_DEVIATION_PCT = 1.5
#: ... plus this many hertz (Q.24's "1.5 % + 2 Hz").
ACCEPT_DEVIATION_HZ = 2.0
#: ... and must not operate on one this far or further from nominal.
REJECT_DEVIATION_PCT = 3.5

#: The low group may be this much louder than the high group ("normal" twist:
#: the line loses more at high frequencies) ...
MAX_LOW_OVER_HIGH_DB = 8.0
#: ... and the high group at most this much louder than the low group
#: ("reverse" twist).
MAX_HIGH_OVER_LOW_DB = 4.0

#: Tones and pauses this long or longer are recognised.
MIN_TONE_MS = 40
MIN_PAUSE_MS = 40
#: A tone this long or shorter must never register as a key.
MAX_REJECTED_TONE_MS = 20

#: Signal-to-noise ratio at which reception must still work.
MIN_SNR_DB = 15.0
